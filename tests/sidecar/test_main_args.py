"""The executor's command line (``sidecar/__main__.py``): parsed once per distinct argv
(a zygote parses it before forking its sandboxes), refused loudly when wrong."""

from __future__ import annotations

import pytest

from sidecar.__main__ import parse_args

_ARGV = ("--lang", "py", "--listen-fd", "3", "--workdir", "/mnt/data",
         "--env", "PATH=/usr/bin", "--preload", "json")


def test_the_same_command_line_is_parsed_once() -> None:
    first = parse_args(_ARGV)
    assert (first.lang, first.listen_fd, first.env) == ("py", 3, ["PATH=/usr/bin"])
    assert parse_args(tuple(list(_ARGV))) is first  # an equal argv: the same parse
    assert parse_args((*_ARGV, "--calibrate")) is not first


@pytest.mark.parametrize("argv", [("--lang", "cobol", "--listen-fd", "3"), ("--lang", "py")])
def test_a_wrong_command_line_is_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
