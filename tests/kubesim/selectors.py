"""Label and field selectors, with the apiserver's grammar and matching rules.

Label selectors (``k8s.io/apimachinery/pkg/labels``): comma-separated requirements,
all of which must hold: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k`` (exists), ``!k`` (does not exist), ``k>1``, ``k<1``.
``!=`` and ``notin`` also match objects without the label. ``in``/``notin`` are
keywords only where an operator is expected. Keys and values are validated like
labels (a bad one is a 400).

Field selectors (``k8s.io/apimachinery/pkg/fields``): ``f=v``, ``f==v``, ``f!=v``,
comma-separated, with ``\\``, ``\\,`` and ``\\=`` escapes; each resource supports a
fixed set of fields (``resources.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import bad_request
from .resources import ResourceType

__all__ = ["FieldSelector", "LabelSelector", "label_selector_from_struct",
           "parse_field_selector", "parse_label_selector", "validate_label_key",
           "validate_label_value"]

_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SPECIAL = ("!=", "==", "!", "(", ")", ",", "=", ">", "<")


def validate_label_key(key: str) -> str | None:
    """Why ``key`` is not a valid qualified name, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return (f"prefix part a lowercase RFC 1123 subdomain must consist of lower case "
                f"alphanumeric characters, '-' or '.', and must start and end with an "
                f"alphanumeric character (got {prefix!r})")
    if not name or len(name) > 63 or not _NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                "must start and end with an alphanumeric character, at most 63 characters")
    return None


def validate_label_value(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    if value == "" or (len(value) <= 63 and _NAME.match(value)):
        return None
    return ("a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character "
            "(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?'), at most 63 characters")


@attrs.frozen
class Requirement:
    key: str
    operator: str  # in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "in":
            return present and labels[self.key] in self.values
        if self.operator == "notin":
            return not present or labels[self.key] not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if not present:
            return False
        try:
            have, want = int(labels[self.key]), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.operator == "gt" else have < want


@attrs.frozen
class LabelSelector:
    """A parsed label selector; ``nothing`` is the null selector that matches no object."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def _lex(text: str) -> list[tuple[str, str]]:
    """Tokens as (kind, literal); kind is the symbol itself, ``id`` or ``end``."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        symbol = next((s for s in _SPECIAL if text.startswith(s, i)), None)
        if symbol is not None:
            tokens.append((symbol, symbol))
            i += len(symbol)
            continue
        start = i
        while i < len(text) and not text[i].isspace() and \
                not any(text.startswith(s, i) for s in _SPECIAL):
            i += 1
        word = text[start:i]
        tokens.append((word if word in ("in", "notin") else "id", word))
    tokens.append(("end", ""))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0

    def peek(self, values: bool = False) -> tuple[str, str]:
        kind, literal = self.tokens[self.pos]
        return ("id", literal) if values and kind in ("in", "notin") else (kind, literal)

    def take(self, values: bool = False) -> tuple[str, str]:
        token = self.peek(values)
        self.pos += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            kind, literal = self.peek(values=True)
            if kind == "end":
                return requirements
            if kind not in ("id", "!"):
                raise ValueError(f"found '{literal}', expected: !, identifier, or "
                                 "'end of string'")
            requirements.append(self.requirement())
            kind, literal = self.take(values=True)
            if kind == "end":
                return requirements
            if kind != ",":
                raise ValueError(f"found '{literal}', expected: ',' or 'end of string'")
            if self.peek(values=True)[0] not in ("id", "!"):
                raise ValueError(f"found '{self.peek()[1]}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        kind, key = self.take(values=True)
        negated = kind == "!"
        if negated:
            kind, key = self.take(values=True)
        if kind != "id":
            raise ValueError(f"found '{key}', expected: identifier")
        if (why := validate_label_key(key)) is not None:
            raise ValueError(f"key: Invalid value: {key!r}: {why}")
        if self.peek()[0] in ("end", ","):
            return Requirement(key, "!" if negated else "exists")
        if negated:
            raise ValueError(f"found '{self.peek()[1]}', expected: ',' or 'end of string'")
        op, literal = self.take()
        if op in ("in", "notin"):
            values = self.value_set()
            if not values:
                raise ValueError("for 'in', 'notin' operators, values set can't be empty")
        elif op in ("=", "==", "!=", ">", "<"):
            values = (self.exact_value(),)
        else:
            raise ValueError(f"found '{literal}', expected: in, notin, =, ==, !=, gt, lt")
        operator = {"=": "in", "==": "in", "!=": "notin", ">": "gt", "<": "lt"}.get(op, op)
        for value in values:
            if operator in ("gt", "lt"):
                if not re.fullmatch(r"-?\d+", value):
                    raise ValueError(f"for 'Gt', 'Lt' operators, the value must be an "
                                     f"integer: {value!r}")
            elif (why := validate_label_value(value)) is not None:
                raise ValueError(f"values[0][{key}]: Invalid value: {value!r}: {why}")
        return Requirement(key, operator, tuple(values))

    def value_set(self) -> tuple[str, ...]:
        kind, literal = self.take()
        if kind != "(":
            raise ValueError(f"found '{literal}', expected: '('")
        values: list[str] = []
        expect_value = True
        while True:
            kind, literal = self.take(values=True)
            if kind == ")":
                if expect_value and values:
                    values.append("")
                return tuple(values)
            if kind == "id" and expect_value:
                values.append(literal)
                expect_value = False
            elif kind == ",":
                if expect_value:
                    values.append("")
                expect_value = True
            else:
                raise ValueError(f"found '{literal}', expected: ',', ')' or identifier")

    def exact_value(self) -> str:
        if self.peek()[0] in ("end", ","):
            return ""
        kind, literal = self.take(values=True)
        if kind != "id":
            raise ValueError(f"found '{literal}', expected: identifier")
        return literal


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a ``labelSelector`` query parameter; a syntax error is a 400."""
    if not text or not text.strip():
        return LabelSelector()
    try:
        return LabelSelector(tuple(_Parser(text).parse()))
    except ValueError as exc:
        raise bad_request(f"unable to parse requirement: {exc}") from exc


def label_selector_from_struct(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A ``metav1.LabelSelector`` (matchLabels/matchExpressions); None selects nothing."""
    if selector is None:
        return LabelSelector(nothing=True)
    requirements = [Requirement(k, "in", (str(v),))
                    for k, v in sorted((selector.get("matchLabels") or {}).items())]
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expression in selector.get("matchExpressions") or []:
        operator = operators.get(str(expression.get("operator")))
        if operator is None:
            raise ValueError(f"{expression.get('operator')!r} is not a valid label selector "
                             "operator")
        requirements.append(Requirement(str(expression.get("key")), operator,
                                        tuple(str(v) for v in expression.get("values") or ())))
    return LabelSelector(tuple(requirements))


@attrs.frozen
class FieldSelector:
    terms: tuple[tuple[str, str, str], ...] = ()  # (field, "=" or "!=", value)

    def matches(self, resource: ResourceType, obj: Mapping[str, Any]) -> bool:
        for field, op, value in self.terms:
            have = resource.fields[field](obj)
            if (have == value) != (op == "="):
                return False
        return True

    def value_of(self, field: str) -> str | None:
        """The value an ``=`` term requires of ``field`` (for the single-object watch)."""
        return next((v for f, op, v in self.terms if f == field and op == "="), None)


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if text.startswith(separator, i):
            parts.append("".join(current))
            current = []
            i += len(separator)
            continue
        current.append(text[i])
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None, resource: ResourceType) -> FieldSelector:
    """Parse a ``fieldSelector``; unknown fields and bad syntax are a 400."""
    if not text or not text.strip():
        return FieldSelector()
    terms: list[tuple[str, str, str]] = []
    for term in _split_unescaped(text, ","):
        for op in ("!=", "==", "="):
            pieces = _split_unescaped(term, op)
            if len(pieces) >= 2:
                field, value = pieces[0].strip(), op.join(pieces[1:])
                terms.append((field, "!=" if op == "!=" else "=", _unescape(value)))
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
    for field, _, _ in terms:
        if field not in resource.fields:
            raise bad_request(
                f'Unable to find "{resource.api_version}, Resource={resource.plural}" that '
                f'match label selector "", field selector "{text}": field label not '
                f"supported: {field}")
    return FieldSelector(tuple(terms))
