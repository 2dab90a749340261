"""The contract between the two planes: the only names the API imports from here.

The API (``app/``) and the executor (``sidecar/``) run as different processes — on
Kubernetes in different images, possibly of different releases — so what both must
agree on is named in this one module, and an import-linter contract
(``pyproject.toml``) keeps ``app`` from reaching past it:

- **languages**: the one language table and its aliases, the version pattern a probe
  reads (``LANGUAGES``, ``Language``, ``resolve_language``, ``VERSION_PATTERN``);
- **file names**: the rules both sides apply to a work-dir path (``validate_name``,
  ``FileError``, ``MAX_DEPTH``);
- **the wire protocol's header** a kept sandbox's executions carry its token in
  (``TOKEN_HEADER``);
- **the wire protocol's limits**: state bytes on ``/execute``, the programmatic
  channel's calls, tools and identifiers (``MAX_STATE_BYTES``, ``MAX_CALL_BYTES``,
  ``MAX_CALLS_PER_ROUND``, ``MAX_TOOLS``, ``MAX_TOOL_NAME``, ``identifier``,
  ``valid_identifier``);
- **the state blob format** the API verifies before it reaches a sandbox
  (``STATE_FORMAT_VERSION``, ``STATE_LZ4_MAGIC``);
- **the calibration's page ranges** (``parse_page_ranges``);
- **how a local sandbox is launched**: where the executor package lives
  (``EXECUTOR_DIR``), its seccomp policy as nsjail's kafel text (``seccomp_kafel``),
  whether the zygote's BPF form of it runs on this machine (``zygote_filter_supported``),
  and the command line that boots the zygote (``ZYGOTE_BOOT``).

Everything else in ``sidecar`` is the executor's own business. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

from .files import MAX_DEPTH, FileError, validate_name
from .languages import LANGUAGES, Language, resolve_language
from .prefault import parse_ranges as parse_page_ranges
from .protocol import MAX_STATE_BYTES, TOKEN_HEADER
from .ptc_wire import (
    MAX_CALL_BYTES,
    MAX_CALLS_PER_ROUND,
    MAX_TOOL_NAME,
    MAX_TOOLS,
    identifier,
    valid_identifier,
)
from .pystate import FORMAT_VERSION as STATE_FORMAT_VERSION
from .pystate import LZ4_MAGIC as STATE_LZ4_MAGIC
from .seccomp_policy import kafel as seccomp_kafel
from .version import VERSION_PATTERN
from .zygote.seccomp import supported as zygote_filter_supported

__all__ = [
    "EXECUTOR_DIR",
    "LANGUAGES",
    "MAX_CALLS_PER_ROUND",
    "MAX_CALL_BYTES",
    "MAX_DEPTH",
    "MAX_STATE_BYTES",
    "MAX_TOOLS",
    "MAX_TOOL_NAME",
    "STATE_FORMAT_VERSION",
    "STATE_LZ4_MAGIC",
    "TOKEN_HEADER",
    "VERSION_PATTERN",
    "ZYGOTE_BOOT",
    "FileError",
    "Language",
    "identifier",
    "parse_page_ranges",
    "resolve_language",
    "seccomp_kafel",
    "valid_identifier",
    "validate_name",
    "zygote_filter_supported",
]

#: The executor package (``sidecar/``): mounted read-only into every local sandbox.
EXECUTOR_DIR = Path(__file__).resolve().parent
#: Run by any Python as root with the repository root as ``{path}``: the zygote's first
#: stage (``sidecar/zygote/server.py``), which then executes the sandbox runtime's Python.
ZYGOTE_BOOT = ("import sys; sys.path.insert(0, {path!r}); from sidecar.zygote import server; "
               "server.stage1()")
