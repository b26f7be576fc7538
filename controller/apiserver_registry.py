"""What the API server needs from the resource-type registry, and a static registry for tests."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Protocol, cast

from controller.api.types import Invalid, ResourceType
from controller.store.base import Obj
from controller.store.logic import copy_obj


class Registry(Protocol):
    """The subset of `controller.api.registry` the API server calls (that module satisfies it)."""

    @property
    def TYPES(self) -> tuple[ResourceType, ...]: ...

    def for_group_version_plural(self, group: str, version: str, plural: str) -> ResourceType:
        """Raises a KeyError subclass whose `args[0]` is a readable message."""
        ...

    def for_api_version_kind(self, api_version: str, kind: str) -> ResourceType:
        """Raises a KeyError subclass whose `args[0]` is a readable message."""
        ...

    def admit(self, rt: ResourceType, new: Obj, old: Obj | None) -> tuple[Obj, list[str]]:
        """Defaults then validates `new`; returns (object, warnings) or raises `Invalid`."""
        ...


def default_registry() -> Registry:
    """The project's registry module, imported on first use."""
    return cast(Registry, importlib.import_module("controller.api.registry"))


class UnknownResource(KeyError):
    """No such resource type; `args[0]` says what was asked for and what exists."""


class StaticRegistry:
    """A Registry over a fixed tuple of types, admitting with each type's own hooks."""

    def __init__(self, types: Iterable[ResourceType]) -> None:
        self._types = tuple(types)

    @property
    def TYPES(self) -> tuple[ResourceType, ...]:
        return self._types

    def lookup(self, name: str) -> ResourceType:
        lowered = name.lower()
        for rt in self._types:
            names = {rt.plural, rt.singular, rt.kind.lower(), *rt.short_names}
            if lowered in names or lowered in {f"{n}.{rt.group}" for n in names}:
                return rt
        raise UnknownResource(f'the server doesn\'t have a resource type "{name}"')

    def for_group_version_plural(self, group: str, version: str, plural: str) -> ResourceType:
        for rt in self._types:
            if (rt.group, rt.version, rt.plural) == (group, version, plural):
                return rt
        raise UnknownResource(
            f"the server could not find the requested resource: {plural} in {group}/{version}"
        )

    def for_api_version_kind(self, api_version: str, kind: str) -> ResourceType:
        for rt in self._types:
            if (rt.api_version, rt.kind) == (api_version, kind):
                return rt
        known = sorted({rt.api_version for rt in self._types})
        if api_version not in known:
            raise UnknownResource(
                f'no kind "{kind}" is registered for version "{api_version}": unknown apiVersion'
                f" (known: {', '.join(known)})"
            )
        kinds = sorted(rt.kind for rt in self._types if rt.api_version == api_version)
        raise UnknownResource(
            f'no kind "{kind}" is registered for version "{api_version}"'
            f" (known kinds: {', '.join(kinds)})"
        )

    def admit(self, rt: ResourceType, new: Obj, old: Obj | None) -> tuple[Obj, list[str]]:
        obj = copy_obj(new)
        rt.default(obj)
        errors = rt.validate(obj, old)
        if errors:
            name = str(obj.get("metadata", {}).get("name", ""))
            raise Invalid(rt.kind, name, errors)
        return obj, rt.warnings(obj)
