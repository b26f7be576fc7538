"""The simple JSONPaths of CRD printer columns (`.status.conditions[?(@.type=='Ready')].status`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

SUPPORTED = (
    "fields `.a.b` (a `\\.` is a dot in a name), keys `['a.b']`, indexes `[0]`, `[*]` and filters "
    "`[?(@.field=='value')]` or `!=`"
)


class JsonPathError(ValueError):
    """A path outside the supported subset; the message says where and what is supported."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str


@dataclass(frozen=True, slots=True)
class Index:
    index: int | None
    """None is `[*]`: every element."""


@dataclass(frozen=True, slots=True)
class Filter:
    """`[?(@.a.b == literal)]` over a list's elements."""

    path: tuple[str, ...]
    equal: bool
    value: Any


Step = Field | Index | Filter


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A parsed path; `find` gives every value it reaches (none when a key is missing)."""

    text: str
    steps: tuple[Step, ...]

    def find(self, obj: Any) -> list[Any]:
        values = [obj]
        for step in self.steps:
            values = [v for value in values for v in _apply(step, value)]
        return values


def parse(text: str) -> JsonPath:
    """`text` (Kubernetes' JSONPath, with or without `{}` around it) as steps; JsonPathError
    names the offending position for anything outside the subset printer columns use."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1].strip()
    if not body.startswith((".", "[")):
        raise JsonPathError(f'JSONPath "{text}" must start with "." or "["')
    return JsonPath(text, tuple(_steps(text, body)))


def _steps(text: str, body: str) -> Iterator[Step]:
    i = 0
    while i < len(body):
        if body[i] == ".":
            name, i = _name(body, i + 1)
            if not name:
                raise _error(text, i, "a field name must follow a dot")
            yield Field(name)
        elif body[i] == "[":
            end = _closing(text, body, i)
            yield _bracket(text, body[i + 1 : end].strip(), i)
            i = end + 1
        else:
            raise _error(text, i, f'unexpected "{body[i]}"')


def _name(body: str, i: int) -> tuple[str, int]:
    """A dotted name up to the next unescaped `.` or `[`; `\\x` stands for `x`."""
    out: list[str] = []
    while i < len(body) and body[i] not in ".[":
        if body[i] == "\\" and i + 1 < len(body):
            i += 1
        out.append(body[i])
        i += 1
    return "".join(out), i


def _closing(text: str, body: str, start: int) -> int:
    """The index of the `]` closing the bracket at `start`, skipping quoted strings."""
    quote = ""
    i = start + 1
    while i < len(body):
        c = body[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "]":
            return i
        i += 1
    raise _error(text, start, "unclosed [")


def _bracket(text: str, inner: str, at: int) -> Step:
    if inner == "*":
        return Index(None)
    if inner.lstrip("-").isdigit():
        return Index(int(inner))
    if len(inner) >= 2 and inner[0] in "'\"" and inner[-1] == inner[0]:
        return Field(_unescape(inner[1:-1]))
    if inner.startswith("?(") and inner.endswith(")"):
        return _filter(text, inner[2:-1].strip(), at)
    raise _error(text, at, f'"[{inner}]" is not supported; use {SUPPORTED}')


def _filter(text: str, expr: str, at: int) -> Filter:
    # The first operator is the filter's: a quoted literal on the right may hold either.
    found = [(i, op) for op in ("==", "!=") if (i := expr.find(op)) >= 0]
    if not found:
        raise _error(text, at, f'filter "{expr}" needs == or !=')
    i, op = min(found)
    left, right = expr[:i], expr[i + len(op) :]
    left, right = left.strip(), right.strip()
    if not left.startswith("@.") or len(left) < 3:
        raise _error(text, at, f'a filter compares "@.field", not "{left}"')
    path = tuple(_unescape(p) for p in _split_dots(left[2:]))
    return Filter(path, op == "==", _literal(text, right, at))


def _split_dots(path: str) -> list[str]:
    parts, name, i = [], [], 0
    while i < len(path):
        if path[i] == "\\" and i + 1 < len(path):
            name.append(path[i : i + 2])
            i += 2
            continue
        if path[i] == ".":
            parts.append("".join(name))
            name = []
        else:
            name.append(path[i])
        i += 1
    return [*parts, "".join(name)]


def _literal(text: str, token: str, at: int) -> Any:
    if len(token) >= 2 and token[0] in "'\"" and token[-1] == token[0]:
        return _unescape(token[1:-1])
    try:
        return json.loads(token)  # numbers, true, false, null
    except ValueError:
        raise _error(text, at, f"{token} is not a quoted string, number or boolean") from None


def _unescape(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            i += 1
        out.append(s[i])
        i += 1
    return "".join(out)


def _error(text: str, at: int, what: str) -> JsonPathError:
    return JsonPathError(f'JSONPath "{text}" at {at}: {what}')


def _apply(step: Step, value: Any) -> Iterator[Any]:
    if isinstance(step, Field):
        if isinstance(value, dict) and step.name in value:
            yield value[step.name]
    elif isinstance(step, Index):
        if not isinstance(value, list):
            return
        if step.index is None:
            yield from value
        elif -len(value) <= step.index < len(value):
            yield value[step.index]
    elif isinstance(value, list):
        for item in value:
            found = _lookup(item, step.path)
            hit = found is not _MISSING and found == step.value
            if hit == step.equal and found is not _MISSING:
                yield item


_MISSING = object()


def _lookup(value: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return _MISSING
        value = value[name]
    return value
