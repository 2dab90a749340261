"""JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386), as the apiserver applies them.

``apply_json_patch`` follows ``evanphx/json-patch`` v4 (the apiserver's library):
every operation must apply or nothing does; a ``test`` that fails, a path that does
not exist for ``remove``/``replace``/``test``, or a missing parent for ``add`` raise
``PatchError`` (answered as the generic 422). A body that is not a JSON array of
operations is a ``PatchSyntaxError`` (a 400). Pointers escape ``~`` as ``~0`` and
``/`` as ``~1``.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PatchError", "PatchSyntaxError", "apply_json_patch", "apply_merge_patch",
           "parse_pointer"]

_MISSING = object()


class PatchError(Exception):
    """The patch is well formed but cannot be applied to this document."""


class PatchSyntaxError(Exception):
    """The patch is not a list of operations."""


def parse_pointer(pointer: str) -> list[str]:
    """RFC 6901 reference tokens of ``pointer`` (``""`` is the whole document)."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer must start with '/': {pointer!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of bounds")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"doc is missing path: {token!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise PatchError(f"cannot traverse a scalar at {token!r}")
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    try:
        parent = _parent(doc, tokens)
    except PatchError:
        return _MISSING
    last = tokens[-1]
    if isinstance(parent, dict):
        return parent.get(last, _MISSING)
    if isinstance(parent, list):
        try:
            return parent[_index(parent, last, allow_end=False)]
        except PatchError:
            return _MISSING
    return _MISSING


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError("add operation does not apply: parent is not a container")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"remove operation does not apply: doc is missing key: {last}")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, allow_end=False)]
    else:
        raise PatchError("remove operation does not apply: parent is not a container")
    return doc


def _replace(doc: Any, tokens: list[str], value: Any) -> Any:
    if _get(doc, tokens) is _MISSING:
        raise PatchError("replace operation does not apply: doc is missing key")
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        parent[_index(parent, tokens[-1], allow_end=False)] = value
    return doc


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def apply_json_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    """A patched copy of ``document``; the original is never modified."""
    if not isinstance(operations, list) or \
            not all(isinstance(op, dict) for op in operations):
        raise PatchSyntaxError("json: cannot unmarshal object into Go value of type "
                               "jsonpatch.Patch")
    doc: Any = copy.deepcopy(document)
    for operation in operations:
        kind = operation.get("op")
        path = operation.get("path")
        if not isinstance(path, str):
            raise PatchError(f"operation {kind!r} is missing a path")
        tokens = parse_pointer(path)
        value = copy.deepcopy(operation.get("value"))
        if kind == "add":
            doc = _add(doc, tokens, value)
        elif kind == "remove":
            doc = _remove(doc, tokens)
        elif kind == "replace":
            doc = _replace(doc, tokens, value)
        elif kind in ("move", "copy"):
            source = parse_pointer(str(operation.get("from", "")))
            moved = _get(doc, source)
            if moved is _MISSING:
                raise PatchError(f"{kind} operation does not apply: 'from' path is missing")
            if kind == "move":
                doc = _remove(doc, source)
            doc = _add(doc, tokens, copy.deepcopy(moved))
        elif kind == "test":
            if tokens:
                _parent(doc, tokens)  # a missing parent fails; a missing key tests as null
            current = _get(doc, tokens)
            if current is _MISSING:
                current = None
            if not _equal(current, operation.get("value")):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    if not isinstance(doc, dict):
        raise PatchError("the patched document is not an object")
    return doc


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def apply_merge_patch(document: dict[str, Any], patch: Any) -> dict[str, Any]:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        raise PatchSyntaxError("a merge patch must be a JSON object")
    merged = _merge(copy.deepcopy(document), patch)
    assert isinstance(merged, dict)
    return merged
