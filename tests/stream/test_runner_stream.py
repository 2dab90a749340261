"""The runner's live output outside a sandbox: order, caps, split characters, hang-up."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.protocol import ExecuteRequest, ExecuteResult
from sidecar.stream import LineStream
from tests.sidecar.test_runner import runner


class Recorder:
    """An ``OutputListener`` that keeps what it was handed; hangs up on demand."""

    def __init__(self, pair: tuple[socket.socket, socket.socket] | None = None,
                 hang_up_after: str | None = None) -> None:
        self.pieces: list[tuple[str, str, float]] = []
        #: Our end of the connection, and the receiver's (closed to hang up).
        self.own: socket.socket | None = pair[0] if pair is not None else None
        self.peer: socket.socket | None = pair[1] if pair is not None else None
        self.hang_up_after = hang_up_after
        self.started = time.monotonic()

    def output(self, stream: str, text: str) -> None:
        self.pieces.append((stream, text, time.monotonic() - self.started))
        if self.hang_up_after and self.hang_up_after in text and self.peer is not None:
            self.peer.close()  # the receiver goes away

    def hangup_fd(self) -> int | None:
        return self.own.fileno() if self.own is not None else None

    def hung_up(self) -> bool:
        assert self.own is not None
        try:
            return self.own.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False

    def text(self, stream: str) -> str:
        return "".join(text for name, text, _ in self.pieces if name == stream)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    own, peer = socket.socketpair()
    yield own, peer
    own.close()
    peer.close()


def dechunk(body: bytes) -> list[bytes]:
    """The chunks of an HTTP/1.1 chunked body, which must end with the last chunk."""
    chunks: list[bytes] = []
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n"
            return chunks
        chunks.append(body[:size])
        assert body[size:size + 2] == b"\r\n"
        body = body[size + 2:]


def run(tmp_path: Path, code: str, listener: Recorder, timeout: float = 10,
        **config: object) -> ExecuteResult:
    return runner(tmp_path, **config).execute(  # type: ignore[arg-type]
        ExecuteRequest(lang="bash", code=code, timeout=timeout), listener)


def test_pieces_in_order_equal_the_result(tmp_path: Path) -> None:
    recorder = Recorder()
    result = run(tmp_path, "echo a; echo b >&2; sleep 0.2; echo c; echo d >&2", recorder)
    assert result.status == "ok"
    assert recorder.text("stdout") == result.stdout == "a\nc\n"
    assert recorder.text("stderr") == result.stderr == "b\nd\n"
    assert [name for name, _, _ in recorder.pieces] == ["stdout", "stderr", "stdout", "stderr"]


def test_output_is_handed_over_before_the_end(tmp_path: Path) -> None:
    recorder = Recorder()
    result = run(tmp_path, "echo early; sleep 1; echo late", recorder)
    first, last = recorder.pieces[0], recorder.pieces[-1]
    assert first[1] == "early\n" and last[1] == "late\n"
    assert last[2] - first[2] > 0.8
    assert result.wall_time > 0.9


def test_split_characters_are_joined_and_an_unfinished_one_replaced(tmp_path: Path) -> None:
    recorder = Recorder()
    result = run(tmp_path, r"printf 'caf\xc3'; sleep 0.3; printf '\xa9\n'; printf '\xe2\x82'",
                 recorder)
    assert [text for _, text, _ in recorder.pieces] == ["caf", "é\n", "\ufffd"]
    assert recorder.text("stdout") == result.stdout == "café\n\ufffd"


def test_streamed_output_counts_toward_the_cap(tmp_path: Path) -> None:
    recorder = Recorder()
    result = run(tmp_path, "yes", recorder, max_output_bytes=4096)
    assert result.status == "output_limit"
    assert recorder.text("stdout") == result.stdout and len(result.stdout) == 4096


def test_a_hang_up_stops_the_program(tmp_path: Path,
                                     pair: tuple[socket.socket, socket.socket]) -> None:
    recorder = Recorder(pair, hang_up_after="ready")
    started = time.monotonic()
    result = run(tmp_path, "echo ready; sleep 30; echo never", recorder, timeout=60)
    assert time.monotonic() - started < 5
    assert result.status == "error" and "went away" in (result.message or "")
    assert "never" not in result.stdout


def test_line_stream_writes_chunked_ndjson(pair: tuple[socket.socket, socket.socket]) -> None:
    own, peer = pair
    lines = LineStream(own, own.makefile("wb", buffering=0))  # type: ignore[arg-type]
    lines.output("stdout", "a\n")
    lines.send({"result": {"status": "ok"}})
    lines.close()
    own.shutdown(socket.SHUT_WR)
    body = b""
    while chunk := peer.recv(65536):
        body += chunk
    assert b"".join(dechunk(body)).splitlines() == [b'{"stream": "stdout", "data": "a\\n"}',
                                                  b'{"result": {"status": "ok"}}']
    assert not lines.hung_up()
    peer.close()
    assert lines.hung_up()
