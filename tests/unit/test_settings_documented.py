"""The README's configuration tables against the settings object, both ways.

Every default is stated once, on its field in ``app/settings/``; the README states
it again for readers, so this test holds the two together: setting a variable to the
value the README gives as its default must change nothing, and every variable the
settings read must be documented.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
_NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")
_VALUE = re.compile(r"`([^`]*)`")
#: Variables read as a family (one per language), documented as ``PREFIX_<LANG>``.
_FAMILIES = ("POD_POOL_", "K8S_IMAGE_")


def _rows() -> Iterator[tuple[list[str], list[str], str]]:
    """(names, literal defaults, the whole row) of each configuration row
    (``| NAMES | DEFAULTS | what |``)."""
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.split(" | ")]
        if len(cells) < 3 or not cells[0].startswith("| `") or "/" in cells[0].split("`")[1]:
            continue
        names = _NAME.findall(cells[0])
        if names and all(name.isupper() for name in names):
            yield names, _VALUE.findall(cells[1]), line


def _documented_defaults() -> list[tuple[str, str]]:
    pairs = []
    for names, defaults, _ in _rows():
        plain = [n for n in names if not n.endswith("_")]
        if len(plain) == len(defaults):
            pairs += [(name, value) for name, value in zip(plain, defaults, strict=True)
                      if not re.search(r"[A-Z_]{4,}/|=", value)]  # not "DATA_DIR/runtime"
    return pairs


class _Recording(dict[str, str]):
    """An environment that remembers which variables were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)


@pytest.mark.parametrize(("name", "value"), _documented_defaults())
def test_the_readme_default_is_the_settings_default(name: str, value: str) -> None:
    assert Settings.from_env({name: value}) == Settings.from_env({}), (
        f"README gives {name} the default {value!r}, but the settings' default differs")


def test_the_readme_states_the_defaults_of_many_variables() -> None:
    """The other side: the check above really covers the table (not a vacuous pass)."""
    names = {name for name, _ in _documented_defaults()}
    assert len(names) >= 60
    assert {"MAX_MEMORY_MB", "ZYGOTE_GENERATION_SANDBOXES", "K8S_REQUEST_TIMEOUT"} <= names
    with pytest.raises(AssertionError):
        test_the_readme_default_is_the_settings_default("MAX_MEMORY_MB", "513")


def test_every_variable_the_settings_read_is_documented() -> None:
    env = _Recording()
    Settings.from_env(env)
    # named in a configuration row (a related variable may be named in another's text)
    documented = {name for _, _, row in _rows() for name in _NAME.findall(row)}
    text = README.read_text()
    families = [family for family in _FAMILIES if f"`{family}<LANG>`" in text]
    missing = sorted(name for name in env.asked if name not in documented
                     and not any(name.startswith(family) for family in families))
    assert not missing, f"read by app/settings but not in README's tables: {missing}"
