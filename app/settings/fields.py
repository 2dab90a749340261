"""A settings field that names its variable: its default, its environment variable and
how the variable is read, stated once, on the field.

``hot_ttl: int = integer("STATE_TTL", 3600, minimum=60)`` declares an attrs field with
the default ``3600`` that ``read_env`` reads from ``STATE_TTL`` (``env_int``, at least
60). ``read_env(cls, env, **computed)`` builds a settings class from its declared
fields (a subclass of ``Declared`` has it as ``from_env``); what is read another way
(from several variables, or checked against another field) is passed in ``computed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar, cast

import attrs
from attrs import AttrsInstance

from .environment import env_bool, env_choice, env_int

__all__ = [
    "Declared",
    "Section",
    "boolean",
    "choice",
    "directory",
    "integer",
    "names",
    "optional_path",
    "optional_text",
    "read_env",
    "seconds",
    "section",
    "text",
]

T = TypeVar("T")
S = TypeVar("S")


class Section(Protocol):
    """A settings section: reads itself from the environment."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self: ...


P = TypeVar("P", bound=Section)

#: The metadata key of a field's reader: ``(env, default) -> value``.
_READ = "k8si.read"
Reader = Callable[[Mapping[str, str], Any], Any]


def _declared(default: T, read: Callable[[Mapping[str, str], T], T]) -> T:
    field: T = attrs.field(default=default, metadata={_READ: read})
    return field


def integer(name: str, default: int, *, minimum: int = 0) -> int:
    """An integer of at least ``minimum``."""
    return _declared(default, lambda env, d: env_int(env, name, d, minimum))


def seconds(name: str, default: float, *, minimum: int = 0) -> float:
    """A duration, given in whole seconds."""
    return _declared(default, lambda env, d: float(env_int(env, name, int(d), minimum)))


def boolean(name: str, default: bool) -> bool:
    return _declared(default, lambda env, d: env_bool(env, name, d))


def text(name: str, default: str, *, upper: bool = False) -> str:
    """A string (``upper``: in capitals); set but empty is empty."""
    return _declared(default, lambda env, d: env.get(name, d).upper() if upper
                     else env.get(name, d))


def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (case-insensitive)."""
    return _declared(default, lambda env, d: env_choice(env, name, d, choices))


def optional_text(name: str) -> str | None:
    """A string, ``None`` when unset or empty."""
    return _declared(None, lambda env, _: env.get(name) or None)


def optional_path(name: str, *, absolute: bool = False) -> Path | None:
    """A path (``absolute``: made absolute), ``None`` when unset or empty."""
    def read(env: Mapping[str, str], _: Path | None) -> Path | None:
        path = Path(env[name]) if env.get(name) else None
        return path.absolute() if path is not None and absolute else path
    return _declared(None, read)


def directory(name: str, default: Path) -> Path:
    """A path made absolute; unset or empty: ``default``."""
    return _declared(default, lambda env, d: Path(env.get(name) or d).absolute())


def section(cls: type[P]) -> P:
    """A section of its own (``cls.from_env`` reads it); its default, ``cls()``."""
    field: P = attrs.field(factory=cls, metadata={
        _READ: lambda env, _: cls.from_env(env)})
    return field


def names(name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A comma-separated list (blank entries dropped); unset: ``default``."""
    return _declared(default, lambda env, d: tuple(
        item.strip() for item in env.get(name, ",".join(d)).split(",") if item.strip()))


def read_env(cls: type[S], env: Mapping[str, str], **computed: Any) -> S:
    """``cls`` (an attrs class) with each declared field read from ``env`` (a field in
    ``computed`` is taken from there; an undeclared one keeps its default)."""
    values = dict(computed)
    for field in attrs.fields(cast("type[AttrsInstance]", cls)):
        read: Reader | None = field.metadata.get(_READ)
        if read is not None and field.name not in values:
            values[field.name] = read(env, field.default)
    return cls(**values)


class Declared:
    """A base of settings sections whose every field is declared: ``from_env`` reads
    them all."""

    __slots__ = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return read_env(cls, env)
