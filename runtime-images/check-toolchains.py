#!/usr/bin/env python3
"""Build-time proof that an image can run its languages the way the executor will.

``check-toolchains.py LANG...`` runs each language's version probe from the one
language table (``sidecar/languages.py``, found through ``PYTHONPATH``) with the
environment the executor gives user programs (``sidecar.__main__.DEFAULT_ENV`` plus
the language's own variables), so a toolchain that is installed but not on the
sandbox's ``PATH`` (rustup proxies, ``/usr/local/go/bin``) fails the image build
instead of the first request. ``--import MODULE`` also imports Python modules (the
data stack of the Python image). Standard library only; exits 1 on any failure,
2 on an unknown language.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys


def probe(code: str) -> tuple[bool, str]:
    """(ok, version or error) for one language, run as the executor would run it."""
    from sidecar.__main__ import DEFAULT_ENV
    from sidecar.languages import LANGUAGES

    language = LANGUAGES[code]
    env = {**DEFAULT_ENV, **language.env}
    try:
        done = subprocess.run(list(language.version_probe), env=env, capture_output=True,
                              text=True, timeout=120, check=False, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{language.version_probe[0]}: {exc}"
    output = (done.stdout.strip() or done.stderr.strip()).splitlines()
    if done.returncode != 0:
        return False, f"exit {done.returncode}: {' '.join(output[-3:])}"
    return True, output[0] if output else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("languages", nargs="+")
    parser.add_argument("--import", dest="modules", action="append", default=[],
                        metavar="MODULE", help="a Python module that must import")
    args = parser.parse_args(argv)
    from sidecar.languages import LANGUAGES

    unknown = [code for code in args.languages if code not in LANGUAGES]
    if unknown:
        print(f"check-toolchains: unknown languages {unknown}", file=sys.stderr)
        return 2
    failed = False
    for code in args.languages:
        ok, detail = probe(code)
        failed |= not ok
        print(f"check-toolchains: {code:5} {'ok  ' if ok else 'FAIL'} {detail}")
    for module in args.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            failed = True
            print(f"check-toolchains: import {module} FAIL {exc}")
        else:
            print(f"check-toolchains: import {module} ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
