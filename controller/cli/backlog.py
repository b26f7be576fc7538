"""A broker's backend and its triggers' backlog in `flint broker describe` / `flint describe
broker`: fetched from the controller (`/internal/eventing/brokers/{ns}/{name}/backlog`, the
owner's credential), rendered by pure functions."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from controller.cli.client import ApiClient, ApiError, Unreachable
from controller.cli.output import render_table, status

Obj = dict[str, Any]

BACKEND_ANNOTATION = "eventing.flint.dev/backend"
"""The key of a Flint broker's `status.annotations` naming its backend (`sqlite`, `redis`)."""


def backlog_path(namespace: str, name: str) -> str:
    return f"/internal/eventing/brokers/{quote(namespace, safe='')}/{quote(name, safe='')}/backlog"


async def fetch_backlog(api: ApiClient, namespace: str, name: str) -> Obj | str:
    """The controller's answer, or why there is none (a line for the describe text)."""
    try:
        return await api.request("GET", backlog_path(namespace, name))
    except (ApiError, Unreachable) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def backend_of(broker: Obj) -> str:
    """The backend the broker's status names ("" before Flint reconciled it)."""
    annotations = status(broker).get("annotations")
    return str(annotations.get(BACKEND_ANNOTATION) or "") if isinstance(annotations, dict) else ""


def _count(row: Obj, key: str) -> str:
    value = row.get(key)
    return "-" if value is None else str(value)


def backlog_lines(answer: Obj | str | None) -> list[str]:
    """`Backlog:` and one row per trigger (backlog = lag + pending for a Redis broker)."""
    if answer is None:
        return []
    if isinstance(answer, str):
        return [f"Backlog:     unavailable ({answer})"]
    triggers = answer.get("triggers") or []
    if not triggers:
        return ["Backlog:     no triggers"]
    if answer.get("backend") != "redis":
        rows = [[str(t.get("name", "")), _count(t, "backlog")] for t in triggers]
        table = render_table(("TRIGGER", "BACKLOG"), rows)
        return ["Backlog:" + (f"     ({answer['note']})" if answer.get("note") else ""),
                *["  " + line.rstrip() for line in table.splitlines()]]
    rows = []
    for t in triggers:
        if t.get("group") is None:
            rows.append([str(t.get("name", "")), "-", "-", "-", "no consumer group yet"])
            continue
        backlog = _count(t, "backlog")
        note = ""
        if t.get("capped"):
            backlog, note = f">={backlog}", "lag counted with XRANGE, capped"
        elif t.get("counted"):
            note = "lag counted with XRANGE (Redis reported none)"
        rows.append([str(t.get("name", "")), backlog, _count(t, "lag"), _count(t, "pending"), note])
    table = render_table(("TRIGGER", "BACKLOG", "LAG", "PENDING", "NOTE"), rows)
    return ["Backlog:", *["  " + line.rstrip() for line in table.splitlines()]]


def backend_lines(broker: Obj, answer: Obj | str | None) -> list[str]:
    """`Backend:` (with the Redis stream's key) then the backlog; nothing for a broker Flint has
    not reconciled (another class's, or not yet)."""
    backend = backend_of(broker) or (answer.get("backend") if isinstance(answer, dict) else "")
    if not backend:
        return []
    stream = answer.get("stream") if isinstance(answer, dict) else None
    line = f"Backend:     {backend}" + (f" (stream {stream})" if stream else "")
    return [line, *backlog_lines(answer)]
