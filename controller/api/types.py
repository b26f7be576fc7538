"""Resource types the API serves: names, short names, and their defaulting and validation hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.store.base import Kind

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One validation failure: the JSON field path (`spec.traffic[1].percent`) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.message}: {self.path}"


class Invalid(Exception):
    """A manifest was refused; the API server answers 422 with one cause per error."""

    def __init__(self, kind: str, name: str, errors: list[FieldError]) -> None:
        self.kind = kind
        self.name = name
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


Defaulter = Callable[[Obj], None]
"""Fills defaults in place (Knative's SetDefaults)."""
Validator = Callable[[Obj, Obj | None], list[FieldError]]
"""(new, old or None on create) → errors (Knative's Validate, including immutability)."""
Warner = Callable[[Obj], list[str]]
"""Accepted-but-not-honoured fields → warnings returned to the client (the `Warning` header)."""


def _no_errors(new: Obj, old: Obj | None) -> list[FieldError]:
    return []


def _no_warnings(obj: Obj) -> list[str]:
    return []


def _no_defaults(obj: Obj) -> None:
    return None


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...] = ()
    namespaced: bool = True
    default: Defaulter = _no_defaults
    validate: Validator = _no_errors
    warnings: Warner = _no_warnings
    status_fields: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def store_kind(self) -> Kind:
        return Kind(self.group, self.plural)
