"""How `flint get` prints objects: kn-like tables per kind, YAML and JSON, and kubectl's ages."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import yaml

from controller.api.ages import age as age  # re-exported: the CLI's commands print ages

Obj = dict[str, Any]
Row = list[str]
SERVICE_LABEL = "serving.knative.dev/service"
CONFIG_GENERATION_LABEL = "serving.knative.dev/configurationGeneration"
FORMATS = ("table", "yaml", "json", "name")


# -- object fields -------------------------------------------------------------------------------


def meta(obj: Obj) -> Obj:
    md = obj.get("metadata")
    return md if isinstance(md, dict) else {}


def status(obj: Obj) -> Obj:
    st = obj.get("status")
    return st if isinstance(st, dict) else {}


def conditions(obj: Obj) -> list[Obj]:
    return [c for c in status(obj).get("conditions") or [] if isinstance(c, dict)]


def condition(obj: Obj, type_: str) -> Obj | None:
    return next((c for c in conditions(obj) if c.get("type") == type_), None)


def ready_columns(obj: Obj) -> Row:
    """READY and REASON: the Ready condition's status and reason."""
    c = condition(obj, "Ready") or condition(obj, "Succeeded")
    if c is None:
        return ["", ""]
    return [str(c.get("status") or "Unknown"), str(c.get("reason") or "")]


def conditions_summary(obj: Obj) -> str:
    """kn's CONDITIONS column: `3 OK / 3`."""
    cs = conditions(obj)
    ok = sum(1 for c in cs if c.get("status") == "True")
    return f"{ok} OK / {len(cs)}"


# -- tables --------------------------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart, like kubectl's tabwriter; no trailing blanks."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


Columns = tuple[tuple[str, ...], Callable[[Obj, datetime], Row]]


def _service_row(o: Obj, now: datetime) -> Row:
    st = status(o)
    return [
        meta(o).get("name", ""),
        str(st.get("url") or ""),
        str(st.get("latestCreatedRevisionName") or ""),
        age(meta(o).get("creationTimestamp"), now),
        conditions_summary(o),
        *ready_columns(o),
    ]


def _route_row(o: Obj, now: datetime) -> Row:
    return [meta(o).get("name", ""), str(status(o).get("url") or ""), ready_columns(o)[0]]


def _configuration_row(o: Obj, now: datetime) -> Row:
    st = status(o)
    return [
        meta(o).get("name", ""),
        str(st.get("latestCreatedRevisionName") or ""),
        str(st.get("latestReadyRevisionName") or ""),
        *ready_columns(o),
    ]


def _generic_row(o: Obj, now: datetime) -> Row:
    return [meta(o).get("name", ""), age(meta(o).get("creationTimestamp"), now), *ready_columns(o)]


COLUMNS: dict[str, Columns] = {
    "Service": (("NAME", "URL", "LATEST", "AGE", "CONDITIONS", "READY", "REASON"), _service_row),
    "Route": (("NAME", "URL", "READY"), _route_row),
    "Configuration": (
        ("NAME", "LATEST CREATED", "LATEST READY", "READY", "REASON"),
        _configuration_row,
    ),
}
GENERIC: Columns = (("NAME", "AGE", "READY", "REASON"), _generic_row)
REVISION_HEADERS = (
    "NAME",
    "SERVICE",
    "TRAFFIC",
    "TAGS",
    "GENERATION",
    "AGE",
    "CONDITIONS",
    "READY",
    "REASON",
)


def revision_traffic(revision: Obj, services: Sequence[Obj]) -> tuple[str, str]:
    """TRAFFIC and TAGS of a revision, from its service's `status.traffic`."""
    name = meta(revision).get("name")
    owner = (meta(revision).get("labels") or {}).get(SERVICE_LABEL)
    ns = meta(revision).get("namespace")
    percent, tags, found = 0, [], False
    for svc in services:
        if meta(svc).get("name") != owner or meta(svc).get("namespace", ns) != ns:
            continue
        for t in status(svc).get("traffic") or []:
            if t.get("revisionName") == name:
                found = True
                percent += int(t.get("percent") or 0)
                if t.get("tag"):
                    tags.append(str(t["tag"]))
    return (f"{percent}%" if found and percent else "", ",".join(tags))


def _revision_row(o: Obj, now: datetime, services: Sequence[Obj]) -> Row:
    labels = meta(o).get("labels") or {}
    traffic, tags = revision_traffic(o, services)
    return [
        meta(o).get("name", ""),
        str(labels.get(SERVICE_LABEL, "")),
        traffic,
        tags,
        str(labels.get(CONFIG_GENERATION_LABEL, "")),
        age(meta(o).get("creationTimestamp"), now),
        conditions_summary(o),
        *ready_columns(o),
    ]


def _revision_sort_key(o: Obj) -> tuple[str, str, int]:
    labels = meta(o).get("labels") or {}
    gen = str(labels.get(CONFIG_GENERATION_LABEL, "0"))
    return (
        str(meta(o).get("namespace", "")),
        str(labels.get(SERVICE_LABEL, "")),
        -int(gen) if gen.isdigit() else 0,
    )


def table(
    kind: str,
    items: Sequence[Obj],
    now: datetime,
    all_namespaces: bool = False,
    services: Sequence[Obj] = (),
) -> str:
    """The table `flint get`/`list` prints; kind-specific columns, generic ones otherwise."""
    if kind == "Revision":
        headers: tuple[str, ...] = REVISION_HEADERS
        items = sorted(items, key=_revision_sort_key)
        rows = [_revision_row(o, now, services) for o in items]
    else:
        headers, make = COLUMNS.get(kind, GENERIC)
        rows = [make(o, now) for o in items]
    if all_namespaces:
        headers = ("NAMESPACE", *headers)
        rows = [[str(meta(o).get("namespace", "")), *r] for o, r in zip(items, rows, strict=True)]
    return render_table(headers, rows)


# -- documents -----------------------------------------------------------------------------------


def as_list(items: Sequence[Obj]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": list(items),
        "metadata": {"resourceVersion": ""},
    }


def to_json(obj: Obj) -> str:
    return json.dumps(obj, indent=4, ensure_ascii=False)


def to_yaml(obj: Obj) -> str:
    return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True))


def render(
    fmt: str,
    kind: str,
    objs: Sequence[Obj],
    single: bool,
    now: datetime,
    qualified: str = "",
    all_namespaces: bool = False,
    services: Sequence[Obj] = (),
) -> str:
    """What `flint get -o FMT` prints (no trailing newline). A single object prints bare,
    a list as a `List`; `name` prints `service.serving.knative.dev/hello` lines."""
    if fmt == "name":
        return "\n".join(f"{qualified}/{meta(o).get('name', '')}" for o in objs)
    if fmt in ("json", "yaml"):
        doc = objs[0] if single and objs else as_list(objs)
        return to_json(doc) if fmt == "json" else to_yaml(doc).rstrip("\n")
    return table(kind, objs, now, all_namespaces, services)
