"""Install the pinned LibreChat client package and run Node scripts against our server.

``LibreChatClient.run(script, **payload)`` runs ``scripts/<script>.mjs`` with the
payload (plus ``baseUrl``/``apiKey``) as JSON on stdin and returns the JSON object the
script prints. A script that fails raises ``ClientScriptError`` with its stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import REPO

__all__ = ["ClientScriptError", "LibreChatClient", "install_client"]

HERE = Path(__file__).resolve().parent


class ClientScriptError(Exception):
    """A Node script exited non-zero or printed no JSON."""


def install_client(target: Path | None = None) -> Path:
    """``npm ci`` the pinned package into ``target`` unless the lock file is unchanged."""
    target = target or Path(os.environ.get("K8SI_TEST_LIBRECHAT_DIR",
                                           REPO / ".k8si-test" / "librechat"))
    lock = (HERE / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (HERE / "package.json").read_bytes()).hexdigest()
    stamp = target / ".installed"
    if not (stamp.exists() and stamp.read_text() == digest):
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(HERE / name, target / name)
        npm = shutil.which("npm")
        if npm is None:
            raise ClientScriptError("npm is needed to install @librechat/agents")
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                              cwd=target, capture_output=True, text=True, check=False,
                              timeout=900)
        if done.returncode != 0:
            raise ClientScriptError(f"npm ci failed:\n{done.stderr[-3000:]}")
        stamp.write_text(digest)
    # the scripts sit beside node_modules so that their imports resolve there
    shutil.copytree(HERE / "scripts", target / "scripts", dirs_exist_ok=True)
    return target


class LibreChatClient:
    """Runs the scripts of ``tests/librechat/scripts`` with the installed package."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        node = shutil.which("node")
        if node is None:
            raise ClientScriptError("node is needed to drive @librechat/agents")
        self.node = node

    def run(self, script: str, *, base_url: str, api_key: str | None,
            timeout: float = 180, **payload: Any) -> Any:
        body = json.dumps({"baseUrl": base_url, "apiKey": api_key, **payload})
        done = subprocess.run([self.node, str(self.directory / "scripts" / f"{script}.mjs")],
                              input=body, capture_output=True, text=True, check=False,
                              timeout=timeout, cwd=self.directory)
        if done.returncode != 0:
            raise ClientScriptError(f"{script}.mjs exited {done.returncode}:\n"
                                    f"{done.stderr[-4000:]}\n{done.stdout[-2000:]}")
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        if not lines:
            raise ClientScriptError(f"{script}.mjs printed nothing:\n{done.stderr[-4000:]}")
        return json.loads(lines[-1])
