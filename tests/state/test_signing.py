"""The HMAC key (generated once, kept private) and what a signature binds a blob to."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from app.domain.state.blob import StateKeyError, StateSigner, check_format, load_key
from app.errors import InvalidState, StateTooLarge


def test_generated_key_is_private_and_survives_restarts(tmp_path: Path) -> None:
    key = load_key(None, tmp_path)
    path = tmp_path / "state-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 64
    assert load_key(None, tmp_path) == key  # the next start reads the same key
    assert load_key("configured-key", tmp_path) == b"configured-key"


def test_an_unusable_key_file_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "state-key").write_bytes(b"short")
    with pytest.raises(StateKeyError):
        load_key(None, tmp_path)


def test_a_signature_binds_tenant_session_and_content() -> None:
    signer = StateSigner(b"k" * 32)
    blob = b"\x01\x04\x22\x4d\x18payload"
    sha256, signature = signer.sign("t1", "S" * 21, blob)
    assert signer.verify("t1", "S" * 21, blob, sha256, signature)
    assert not signer.verify("t2", "S" * 21, blob, sha256, signature)  # another tenant
    assert not signer.verify("t1", "T" * 21, blob, sha256, signature)  # another session
    assert not signer.verify("t1", "S" * 21, blob + b"x", sha256, signature)  # changed
    assert not signer.verify("t1", "S" * 21, b"\x02" + blob[1:], sha256, signature)  # version
    assert not StateSigner(b"o" * 32).verify("t1", "S" * 21, blob, sha256, signature)


def test_format_checks_read_only_the_frame_header() -> None:
    declared = (b"\x01\x04\x22\x4d\x18\x68\x40" + (5 * 1024 ** 3).to_bytes(8, "little")
                + b"\x00")
    with pytest.raises(StateTooLarge):
        check_format(declared, 1024, 4096)
    with pytest.raises(StateTooLarge):
        check_format(b"\x01" * 2048, 1024, 4096)
    with pytest.raises(InvalidState):
        check_format(b"\x01\x04\x22\x4d\x18\x68", 1024, 4096)
    check_format(b"\x01\x04\x22\x4d\x18\x60\x40\x82", 1024, 4096)  # no declared size: fine
