"""Resource kinds as the CLI names them: discovery parsed into a lookup, built-in fallback."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.cli.errors import CliError


@dataclass(frozen=True)
class ResourceInfo:
    """One served resource: where it lives and every name a user may call it by."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    short_names: tuple[str, ...] = field(default=())
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`service.serving.knative.dev`, the prefix kubectl prints before a name."""
        return f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()

    def names(self) -> set[str]:
        return {n.lower() for n in (self.plural, self.singular, self.kind, *self.short_names) if n}


class UnknownKind(CliError):
    """A kind name that no served resource answers to."""

    def __init__(self, name: str, known: Iterable[ResourceInfo]) -> None:
        names = sorted({r.plural for r in known})
        hint = f"; known kinds: {', '.join(names)}" if names else ""
        super().__init__(f'the server doesn\'t have a resource type "{name}"{hint}')
        self.name = name


SERVING = "serving.knative.dev"

BUILTIN: tuple[ResourceInfo, ...] = (
    ResourceInfo(SERVING, "v1", "services", "service", "Service", ("ksvc", "kservice")),
    ResourceInfo(
        SERVING, "v1", "configurations", "configuration", "Configuration", ("config", "cfg")
    ),
    ResourceInfo(SERVING, "v1", "revisions", "revision", "Revision", ("rev",)),
    ResourceInfo(SERVING, "v1", "routes", "route", "Route", ("rt",)),
)
"""The four serving kinds, used when discovery is unavailable."""


def parse_resource_list(group_version: str, doc: Mapping[str, Any]) -> list[ResourceInfo]:
    """An APIResourceList's top-level resources (subresources like `services/status` skipped)."""
    group, _, version = group_version.rpartition("/")
    out: list[ResourceInfo] = []
    for r in doc.get("resources") or []:
        name = str(r.get("name") or "")
        if not name or "/" in name:
            continue
        kind = str(r.get("kind") or "")
        out.append(
            ResourceInfo(
                group=group,
                version=version,
                plural=name,
                singular=str(r.get("singularName") or kind.lower()),
                kind=kind,
                short_names=tuple(str(s) for s in r.get("shortNames") or ()),
                namespaced=bool(r.get("namespaced", True)),
            )
        )
    return out


def preferred_versions(group_list: Mapping[str, Any]) -> list[str]:
    """`group/version` of each group in an APIGroupList, the preferred version first."""
    out: list[str] = []
    for g in group_list.get("groups") or []:
        pref = (g.get("preferredVersion") or {}).get("groupVersion")
        versions = [v.get("groupVersion") for v in g.get("versions") or [] if v.get("groupVersion")]
        if pref:
            out.append(str(pref))
        out.extend(str(v) for v in versions if v != pref)
    return out


def resolve(name: str, resources: Iterable[ResourceInfo]) -> ResourceInfo:
    """The resource a user's word means: plural, singular, kind or short name, case-insensitive.

    `name` may be qualified by group (`services.serving.knative.dev`); among several versions of
    one group the first listed (the preferred) wins.
    """
    wanted = name.lower()
    resources = list(resources)
    short, _, group = wanted.partition(".")
    for r in resources:
        if wanted in r.names():
            return r
    if group:
        for r in resources:
            if short in r.names() and r.group.lower() == group:
                return r
    raise UnknownKind(name, resources)


def by_kind(api_version: str, kind: str, resources: Iterable[ResourceInfo]) -> ResourceInfo | None:
    """The resource serving a manifest's apiVersion and kind, if any."""
    for r in resources:
        if r.api_version == api_version and r.kind == kind:
            return r
    return None
