"""The warm worker's "done" report as the executor reads it (``capture.read_done``).

The report arrives on a pipe the user's program can also write to: only a valid last
line ends the run; something else keeps the pipe watched for the worker's own report;
the pipe's end (or an error) means the exit is awaited instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from sidecar.capture import Done, read_done


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(fd)


def test_a_valid_report_is_read(pipe: tuple[int, int]) -> None:
    os.write(pipe[1], b'{"done": 3, "cpu": 0.25, "max_rss": 2048}\n')
    assert read_done(pipe[0]) == (Done(3, 0.25, 2048), True)


def test_the_last_line_counts(pipe: tuple[int, int]) -> None:
    """Garbage the program wrote first does not hide the worker's own report."""
    os.write(pipe[1], b'junk\n{"done": 0, "cpu": 1, "max_rss": 5}\n')
    assert read_done(pipe[0]) == (Done(0, 1.0, 5), True)


@pytest.mark.parametrize("data", [
    b"not json\n", b'{"done": "x"}\n', b'{"done": true, "cpu": 0, "max_rss": 0}\n',
    b'{"done": 256, "cpu": 0, "max_rss": 0}\n', b'{"done": 0, "cpu": -1, "max_rss": 0}\n',
    b'{"done": 0, "cpu": 0}\n', b'{"done": 0, "cpu": 0, "max_rss": 0}\njunk\n',
])
def test_anything_else_keeps_the_pipe_watched(pipe: tuple[int, int], data: bytes) -> None:
    os.write(pipe[1], data)
    assert read_done(pipe[0]) == (None, True)


def test_the_end_of_the_pipe_means_the_exit_is_awaited(pipe: tuple[int, int]) -> None:
    os.close(pipe[1])
    assert read_done(pipe[0]) == (None, False)
