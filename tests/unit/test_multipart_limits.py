"""The multipart reader bounds what it holds in memory: the number of plain form fields
and their bytes together (each field has its own cap too), on both sides of each limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.domain.files.multipart import MultipartForm, read_multipart
from app.errors import PayloadTooLarge

_BOUNDARY = "b0undary"


def _body(fields: list[tuple[str, bytes]], *, file_first: bool) -> bytes:
    parts = [f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
             + value + b"\r\n" for name, value in fields]
    file_part = (f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n'.encode())
    parts.insert(0 if file_first else len(parts), file_part)
    return b"".join(parts) + f"--{_BOUNDARY}--\r\n".encode()


def _read(tmp_path: Path, fields: list[tuple[str, bytes]], *,
          file_first: bool = False) -> MultipartForm:
    body = _body(fields, file_first=file_first)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    return asyncio.run(read_multipart(f"multipart/form-data; boundary={_BOUNDARY}", chunks(),
                                      tmp_path, max_file_bytes=1 << 20, max_files=10))


def test_sixty_four_fields_are_read_sixty_five_are_refused(tmp_path: Path) -> None:
    form = _read(tmp_path, [(f"f{i}", b"v") for i in range(64)])
    assert len(form.fields) == 64 and form.files[0].size == 5
    form.close()
    with pytest.raises(PayloadTooLarge, match="64 form fields"):
        _read(tmp_path, [(f"f{i}", b"v") for i in range(65)], file_first=True)
    assert list(tmp_path.iterdir()) == [], "the refused form's file (spooled) is removed"


def test_repeating_one_field_name_counts_every_time(tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLarge, match="64 form fields"):
        _read(tmp_path, [("same", b"v")] * 65)


def test_the_fields_bytes_together_on_both_sides_of_their_limit(tmp_path: Path) -> None:
    full = [(f"f{i}", b"x" * 65536) for i in range(4)]  # 256 KiB: each at its own cap
    form = _read(tmp_path, full)
    assert sum(len(v) for v in form.fields.values()) == 256 * 1024
    form.close()
    with pytest.raises(PayloadTooLarge, match="together"):
        _read(tmp_path, [*full, ("one_more", b"x")])
