"""`meta.k8s.io` Tables, what `kubectl get` asks for: Accept negotiation and rows (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from controller.api.printer_columns import PrinterColumn
from controller.apiserver_codec import JSON, YAML_TYPES, ApiError, bad_request
from controller.store.base import Obj

META_GROUP = "meta.k8s.io"
TABLE_VERSIONS = ("v1", "v1beta1")
Include = Literal["None", "Metadata", "Object"]
INCLUDE_OBJECT: tuple[Include, ...] = ("None", "Metadata", "Object")
NAME_COLUMN: Obj = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace. Is required when creating resources, "
    "although some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated.",
    "priority": 0,
}
"""The column the API server puts first in every Table of a custom resource."""
SERVED = f"{JSON}, application/yaml or {JSON};as=Table;v=v1;g={META_GROUP}"


@dataclass(frozen=True, slots=True)
class TableOptions:
    """A client asked for a Table (of `version`), with rows' objects as `include` says."""

    version: str
    include: Include

    @property
    def api_version(self) -> str:
        return f"{META_GROUP}/{self.version}"


def negotiate(accept: str, include_object: str | None) -> TableOptions | None:
    """The Table the `Accept` header asks for first, or None for plain objects.

    Media ranges count in the order given; one with `as=` that is not a Table this server makes
    is skipped. When every range was such a one, 406 says what is served. `includeObject` (None,
    Metadata — the default — or Object) is checked only for a Table; a bad one is a 400.
    """
    skipped: list[str] = []
    for part in accept.split(","):
        media, params = _media_range(part)
        if not media or params.get("q") in ("0", "0.0", "0.00", "0.000"):
            continue
        wanted = params.get("as")
        if wanted is None:
            if media in (JSON, "*/*", "application/*") or media in YAML_TYPES:
                return None
            continue
        if (
            wanted == "Table"
            and media in (JSON, "*/*", "application/*")
            and params.get("g") == META_GROUP
            and params.get("v") in TABLE_VERSIONS
        ):
            return TableOptions(params["v"], _include(include_object))
        skipped.append(part.strip())
    if skipped:
        raise ApiError(
            406,
            f"none of the media types in Accept ({', '.join(skipped)}) can be served; "
            f"this server answers {SERVED}",
        )
    return None


def _media_range(part: str) -> tuple[str, dict[str, str]]:
    pieces = part.split(";")
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        key, _, value = piece.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return pieces[0].strip().lower(), params


def _include(value: str | None) -> Include:
    if value is None or value == "":
        return "Metadata"
    for choice in INCLUDE_OBJECT:
        if value == choice:
            return choice
    raise bad_request(
        f'includeObject "{value}" is not one of {", ".join(INCLUDE_OBJECT)} '
        "(what each row's object holds: nothing, its metadata, or the whole object)"
    )


def column_definitions(columns: Sequence[PrinterColumn]) -> list[Obj]:
    """NAME, then the kind's printer columns."""
    return [dict(NAME_COLUMN), *(c.definition() for c in columns)]


def partial_object_metadata(obj: Obj, version: str = "v1") -> Obj:
    """The object's metadata alone, as a `PartialObjectMetadata`."""
    md = obj.get("metadata")
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"{META_GROUP}/{version}",
        "metadata": dict(md) if isinstance(md, dict) else {},
    }


def row(columns: Sequence[PrinterColumn], obj: Obj, options: TableOptions, now: datetime) -> Obj:
    """One Table row: the name and each column's cell, and the object as `include` asks."""
    md = obj.get("metadata")
    name = md.get("name", "") if isinstance(md, dict) else ""
    out: Obj = {"cells": [name, *(c.cell(obj, now) for c in columns)]}
    if options.include == "Metadata":
        out["object"] = partial_object_metadata(obj, options.version)
    elif options.include == "Object":
        out["object"] = obj
    return out


def table(
    columns: Sequence[PrinterColumn],
    objects: Iterable[Obj],
    options: TableOptions,
    now: datetime,
    resource_version: str = "",
    *,
    definitions: bool = True,
) -> Obj:
    """A `Table` of `objects`; a watch sends `definitions` only in its first event."""
    metadata: Obj = {"resourceVersion": resource_version} if resource_version else {}
    return {
        "kind": "Table",
        "apiVersion": options.api_version,
        "metadata": metadata,
        "columnDefinitions": column_definitions(columns) if definitions else [],
        "rows": [row(columns, o, options, now) for o in objects],
    }
