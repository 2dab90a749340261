"""A language's version probe in a throwaway nsjail sandbox (the local backend's start).

Each language's ``version_probe`` runs once at start-up in a minimal sandbox of its
own: its answer says whether the toolchain is installed and which version it is.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from sidecar.contract import LANGUAGES, VERSION_PATTERN

from ..base import LanguageStatus
from .nsjail import PYTHON_MOUNT, SandboxSpec, nsjail_argv, write_etc
from .sandbox import SandboxConfig

__all__ = ["probe_language"]


async def probe_language(config: SandboxConfig, root: Path, uid: int,
                         code: str) -> LanguageStatus:
    """Run ``code``'s version probe as ``uid`` (its files under ``root``, removed after)."""
    language = LANGUAGES[code]
    etc_dir = root / f"probe-{code}" / "etc"
    try:
        await asyncio.to_thread(write_etc, etc_dir, uid)
        spec = SandboxSpec(
            uid=uid, etc_dir=etc_dir,
            readonly_paths=(config.runtime.base_prefix,),
            sidecar_dir=config.sidecar_dir, workdir_bytes=1 << 20,
            tmp_bytes=64 << 20, extra_readonly=((config.runtime.venv, PYTHON_MOUNT),))
        path = f"PATH={PYTHON_MOUNT}/bin:/usr/local/bin:/usr/bin:/bin"
        argv = nsjail_argv(config.nsjail, spec,
                           ["/usr/bin/env", "-i", path, "HOME=/tmp",
                            *(f"{k}={v}" for k, v in language.env.items()),
                            *language.version_probe])
        process = await asyncio.create_subprocess_exec(
            *argv, env={}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        except TimeoutError:
            process.kill()
            await process.wait()
            return LanguageStatus(code, False, reason="version probe timed out")
    finally:
        shutil.rmtree(etc_dir.parent, ignore_errors=True)
    text = (out + err).decode(errors="replace")
    if process.returncode == 0 and (match := VERSION_PATTERN.search(text)):
        return LanguageStatus(code, True, version=match.group(0))
    if process.returncode == 127 or "No such file" in text:
        return LanguageStatus(code, False, reason=f"toolchain '{language.toolchain}' is not "
                              "installed (scripts/install-toolchains installs it)")
    return LanguageStatus(code, False, reason=f"version probe failed: {text.strip()[-300:]}")
