"""The executor's command line (``sidecar/__main__.py``): parsed once per distinct argv
(a zygote parses it before forking its sandboxes), refused loudly when wrong; the TCP
address it binds, of either family or both."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sidecar.__main__ import parse_args, tcp_listener
from tests.conftest import REPO, free_port

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


@pytest.mark.parametrize(("address", "family"), [
    ("127.0.0.1:0", socket.AF_INET), ("[::1]:0", socket.AF_INET6), (":0", socket.AF_INET6)])
def test_tcp_addresses_bind_their_family(address: str, family: socket.AddressFamily) -> None:
    with tcp_listener(address) as listener:
        assert listener.family == family


def test_any_address_serves_ipv4_and_ipv6(tmp_path: Path) -> None:
    """``--tcp :PORT`` (the pods' default): reachable over both families, as an IPv4-only,
    dual-stack or IPv6-only cluster gives the pod its address."""
    (tmp_path / "work").mkdir()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "--lang", "bash", "--tcp", f":{port}", "--serve-unbound",
         "--workdir", str(tmp_path / "work"), "--build-dir", str(tmp_path / "build")],
        cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        for host in ("127.0.0.1", "::1"):
            for _ in range(3000):
                connection = http.client.HTTPConnection(host, port, timeout=10)
                try:
                    connection.request("GET", "/health")
                    response = connection.getresponse()
                    answer = response.status, json.loads(response.read())["status"]
                    break
                except ConnectionRefusedError:
                    time.sleep(0.01)
                finally:
                    connection.close()
            assert answer == (200, "ready"), host
    finally:
        process.kill()
        process.wait()
