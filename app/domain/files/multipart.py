"""Streaming multipart/form-data reader: file parts go to temporary files, never memory.

Litestar's own form parsing reads the whole body; uploads can be large, so the body
is fed chunk by chunk to ``python-multipart``'s push parser. Each file part is
written to a temporary file with its size counted and its SHA-256 computed as it
arrives; a part over the limit stops the request with 413 and the temporary files
are removed. Plain fields are small (capped) and kept in memory.

The reading is bounded at both ends: before the first part at most ``MAX_PREAMBLE``
bytes (blank lines) are accepted, and reading stops at the closing boundary (an
epilogue, which RFC 2046 says to ignore, is never read). A body that ends anywhere
before its closing boundary (inside a file, a field or a part's headers) is a 400. A
part's ``Content-Type`` is kept only as a valid ``type/subtype`` (``media_type``).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import attrs
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ...errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["MAX_PREAMBLE", "FilePart", "MultipartForm", "media_type", "read_multipart"]

_MAX_FIELD_BYTES = 64 * 1024
#: Plain (non-file) fields per request, and their bytes together: the fields are held
#: in memory, so their number is bounded too (the contract's forms have a handful).
_MAX_FIELDS = 64
_MAX_FIELDS_TOTAL = 256 * 1024
#: Bytes accepted before the first boundary line (the parser skips blank lines there).
MAX_PREAMBLE = 1024
#: A ``type/subtype`` of RFC 7230 tokens (``tchar``), nothing else.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(f"{_TCHARS}/{_TCHARS}")


def media_type(value: str | None) -> str | None:
    """The ``type/subtype`` of a Content-Type value, lower-cased, its parameters dropped;
    None when it is not two RFC 7230 tokens (a line break, a control character, a space,
    a missing subtype): such a value must never reach a response header."""
    if not value:
        return None
    essence = value.split(";", 1)[0].strip(" \t")
    return essence.lower() if _MEDIA_TYPE.fullmatch(essence) else None


@attrs.define
class FilePart:
    """One uploaded file, spooled to ``path``."""

    field: str
    filename: str
    #: The part's declared media type when it is valid (``media_type``), else None.
    content_type: str | None
    path: Path
    size: int = 0
    sha256: str = ""


@attrs.define
class MultipartForm:
    """The fields and files of one request; ``close()`` removes the temporary files."""

    fields: dict[str, str] = attrs.field(factory=dict)
    files: list[FilePart] = attrs.field(factory=list)

    def close(self) -> None:
        for part in self.files:
            part.path.unlink(missing_ok=True)


@attrs.define
class _State:
    """What the parser callbacks have seen of the current part."""

    form: MultipartForm
    tmp_dir: Path
    max_file_bytes: int
    max_files: int
    header_field: bytearray = attrs.field(factory=bytearray)
    header_value: bytearray = attrs.field(factory=bytearray)
    headers: dict[str, str] = attrs.field(factory=dict)
    part: FilePart | None = None
    handle: IO[bytes] | None = None
    digest: Any = None
    field_name: str | None = None
    field_value: bytearray = attrs.field(factory=bytearray)
    fields_seen: int = 0
    fields_bytes: int = 0
    error: Exception | None = None
    #: A boundary line was seen: the preamble is over.
    started: bool = False
    #: The closing boundary was seen: the body is complete.
    ended: bool = False

    def on_part_begin(self) -> None:
        self.started = True
        self.headers, self.part, self.field_name = {}, None, None
        self.field_value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        # latin-1 keeps the raw bytes; names are decoded as UTF-8 once they are parsed
        self.headers[self.header_field.decode("latin-1").lower()] = \
            self.header_value.decode("latin-1")
        self.header_field, self.header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            self.field_name = name
            self.fields_seen += 1
            if self.fields_seen > _MAX_FIELDS:
                self.error = PayloadTooLarge(f"at most {_MAX_FIELDS} form fields per request")
            return
        if len(self.form.files) >= self.max_files:
            self.error = PayloadTooLarge(
                f"at most {self.max_files} files per request (MAX_UPLOAD_FILES)")
            return
        fd, path = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        self.handle = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()
        self.part = FilePart(field=name, filename=filename.decode("utf-8", "replace"),
                             content_type=media_type(self.headers.get("content-type")),
                             path=Path(path))
        if "\ufffd" in self.part.filename:
            self.error = BadRequest("file names must be valid UTF-8")
        self.form.files.append(self.part)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        chunk = data[start:end]
        if self.part is not None and self.handle is not None:
            self.part.size += len(chunk)
            if self.part.size > self.max_file_bytes:
                self.error = PayloadTooLarge(
                    f"{self.part.filename!r} is larger than MAX_UPLOAD_SIZE "
                    f"({self.max_file_bytes} bytes)")
                return
            self.handle.write(chunk)
            self.digest.update(chunk)
        elif self.field_name is not None:
            self.field_value += chunk
            self.fields_bytes += len(chunk)
            if len(self.field_value) > _MAX_FIELD_BYTES:
                self.error = PayloadTooLarge(f"form field {self.field_name!r} is larger "
                                             f"than {_MAX_FIELD_BYTES} bytes")
            elif self.fields_bytes > _MAX_FIELDS_TOTAL:
                self.error = PayloadTooLarge(f"the form fields are larger than "
                                             f"{_MAX_FIELDS_TOTAL} bytes together")

    def on_part_end(self) -> None:
        if self.handle is not None and self.part is not None:
            self.handle.close()
            self.part.sha256 = self.digest.hexdigest()
            self.handle = None
        elif self.field_name is not None and self.error is None:
            self.form.fields[self.field_name] = self.field_value.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.started = self.ended = True

    def abort(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


async def read_multipart(content_type: str | None, body: AsyncIterator[bytes], tmp_dir: Path,
                         max_file_bytes: int, max_files: int) -> MultipartForm:
    """Parse a multipart body as it streams in; the caller must ``close()`` the form."""
    form_type, options = parse_options_header(content_type or "")
    if form_type != b"multipart/form-data":
        raise UnsupportedMediaType("expected multipart/form-data")
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data without a boundary")
    state = _State(form=MultipartForm(), tmp_dir=tmp_dir, max_file_bytes=max_file_bytes,
                   max_files=max_files)
    callbacks = {name: getattr(state, name) for name in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end",
        "on_headers_finished", "on_part_data", "on_part_end", "on_end")}
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    except FormParserError as exc:  # a boundary the parser refuses (too long)
        raise BadRequest(f"invalid multipart boundary: {exc}") from exc
    # The preamble and the first boundary line must fit in this many bytes.
    head_room = MAX_PREAMBLE + len(b"--" + boundary + b"\r\n")
    head_fed = 0
    try:
        async for chunk in body:
            rest = chunk
            if not state.started:  # only the bounded head is fed until a part begins
                head, rest = chunk[:head_room - head_fed], chunk[head_room - head_fed:]
                parser.write(head)
                head_fed += len(head)
                if not state.started and head_fed >= head_room:
                    raise BadRequest(f"malformed multipart body: no boundary line within "
                                     f"its first {MAX_PREAMBLE} bytes")
            if rest and not state.ended and state.error is None:
                parser.write(rest)
            if state.error is not None:
                raise state.error
            if state.ended:
                break  # the closing boundary: what follows (an epilogue) is not read
        if not state.ended:
            raise BadRequest("malformed multipart body: it ended before its closing boundary")
    except MultipartParseError as exc:
        state.abort()
        state.form.close()
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    except BaseException:
        state.abort()
        state.form.close()
        raise
    return state.form
