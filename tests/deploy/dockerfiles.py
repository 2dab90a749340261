"""Static readers for Dockerfiles and the bake file (no container engine needed).

``parse_dockerfile`` splits a Dockerfile into stages of instructions (continuation
lines joined, comments dropped, exec-form JSON decoded), resolving ``${ARG}`` in
``FROM`` from the ARG defaults. ``parse_bake`` reads the subset of HCL that
``runtime-images/docker-bake.hcl`` uses: variables with defaults and targets with
string, list and map attributes.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import attrs

__all__ = ["BakeFile", "Instruction", "Stage", "parse_bake", "parse_dockerfile"]


@attrs.frozen
class Instruction:
    """One instruction: its keyword (upper case), flags (``--from=x``) and arguments."""

    keyword: str
    flags: dict[str, str]
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of ENTRYPOINT/CMD/RUN in exec form, else None (shell form)."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return [str(v) for v in value]

    def words(self) -> list[str]:
        return shlex.split(self.args)


@attrs.frozen
class Stage:
    """A build stage: its base image (ARGs resolved), name, and instructions."""

    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _instruction(line: str) -> Instruction:
    keyword, _, rest = line.partition(" ")
    flags: dict[str, str] = {}
    rest = rest.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return Instruction(keyword.upper(), flags, rest)


def _substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""),
                  text)


def parse_dockerfile(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, in order."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    pending: list[Instruction] = []
    base, name = "", None
    for line in _logical_lines(path.read_text()):
        instruction = _instruction(line)
        if instruction.keyword == "FROM":
            if base:
                stages.append(Stage(base, name, tuple(pending)))
            words = instruction.words()
            base = _substitute(words[0], args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            pending = []
            continue
        if instruction.keyword == "ARG" and not base:
            key, _, default = instruction.args.partition("=")
            args[key.strip()] = default.strip().strip('"')
        pending.append(instruction)
    if base:
        stages.append(Stage(base, name, tuple(pending)))
    return stages


@attrs.frozen
class BakeFile:
    """Variables (name -> default) and targets (name -> attributes) of a bake file."""

    variables: dict[str, str]
    targets: dict[str, dict[str, object]]
    groups: dict[str, list[str]]

    def resolve(self, target: str) -> dict[str, object]:
        """A target's attributes with ``inherits`` applied (later wins)."""
        attributes: dict[str, object] = {}
        own = self.targets[target]
        for parent in own.get("inherits", []):  # type: ignore[attr-defined]
            attributes.update(self.resolve(str(parent)))
        attributes.update({k: v for k, v in own.items() if k != "inherits"})
        return attributes

    def interpolate(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.variables[m.group(1)], text)


def _value(raw: str) -> object:
    raw = raw.strip()
    if raw.startswith("["):
        return re.findall(r'"([^"]*)"', raw)
    if raw.startswith("{"):
        return {k: v.strip().strip('"') for k, v in re.findall(
            r'"?([\w.-]+)"?\s*=\s*("[^"]*"|\w+)', raw)}
    return raw.strip('"')


def parse_bake(path: Path) -> BakeFile:
    text = "\n".join(line for line in path.read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    blocks = re.findall(r'^(variable|target|group) "([^"]+)" \{\n?(.*?)^\}', text, re.M | re.S)
    variables: dict[str, str] = {}
    targets: dict[str, dict[str, object]] = {}
    groups: dict[str, list[str]] = {}
    for kind, name, body in blocks:
        attributes: dict[str, object] = {}
        for key, raw in re.findall(r"^\s*(\w+)\s*=\s*(\[[^\]]*\]|\{[^}]*\}|[^\n]+)$", body, re.M):
            attributes[key] = _value(raw)
        if kind == "variable":
            variables[name] = str(attributes["default"])
        elif kind == "group":
            groups[name] = list(attributes["targets"])  # type: ignore[call-overload]
        else:
            targets[name] = attributes
    return BakeFile(variables, targets, groups)
