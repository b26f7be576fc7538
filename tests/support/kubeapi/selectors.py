"""Label and field selectors, parsed and matched as the Kubernetes API server does."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ApiError, bad_request

Matcher = Callable[[Mapping[str, str]], bool]

_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9._/-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9._/-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)\s*$")


def _split(selector: str) -> list[str]:
    """Split at the commas outside `( )`."""
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def _requirement(text: str) -> Matcher:
    eq = _EQ.match(text)
    if eq:
        key, op, value = eq.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    m = _SET.match(text)
    if not m:
        raise bad_request(f"unable to parse requirement: found '{text.strip()}', expected: label selector")
    negate, key, op, values_text = m.groups()
    if op is None:
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    if negate:
        raise bad_request(f"unable to parse requirement: '!' with '{op}' in '{text.strip()}'")
    values = {v.strip() for v in values_text.split(",") if v.strip()}
    if op == "in":
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


def label_matcher(selector: str | None) -> Matcher:
    """A predicate over an object's labels; an empty selector matches everything."""
    if not selector:
        return lambda labels: True
    requirements = [_requirement(part) for part in _split(selector)]
    return lambda labels: all(r(labels) for r in requirements)


FIELDS = ("metadata.name", "metadata.namespace")


def field_matcher(selector: str | None, kind_plural: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate over an object for `metadata.name` / `metadata.namespace` (`=`, `==`, `!=`)."""
    if not selector:
        return lambda obj: True
    checks: list[tuple[str, bool, str]] = []
    for part in _split(selector):
        m = re.match(r"^\s*([A-Za-z0-9._-]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
        key, op, value = m.groups()
        if key not in FIELDS:
            raise ApiError(400, "BadRequest", f"field label not supported: {key} (on {kind_plural})")
        checks.append((key, op != "!=", value))

    def match(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        for key, equal, value in checks:
            actual = meta.get(key.split(".", 1)[1], "")
            if (actual == value) != equal:
                return False
        return True

    return match
