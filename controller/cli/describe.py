"""`flint describe`: human summaries of services, revisions, routes and any other kind."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from controller.cli.output import (
    CONFIG_GENERATION_LABEL,
    SERVICE_LABEL,
    age,
    conditions,
    meta,
    render_table,
    status,
)

Obj = dict[str, Any]
SYMBOLS = {"True": "++", "False": "!!", "Unknown": "??"}
HIDDEN_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def _field(label: str, value: Any, width: int = 12) -> str:
    """`Name:       hello`: the label padded to `width`, at least one space before the value."""
    return f"{label.ljust(width - 1)} {value}"


def _map_lines(label: str, values: Any) -> list[str]:
    shown = {k: v for k, v in (values or {}).items() if k not in HIDDEN_ANNOTATIONS}
    if not shown:
        return []
    lines = [f"{label}:"]
    lines += [f"  {k}={v}" for k, v in sorted(shown.items())]
    return lines


def header(obj: Obj, now: datetime) -> list[str]:
    md = meta(obj)
    lines = [
        _field("Name:", md.get("name", "")),
        _field("Namespace:", md.get("namespace", "")),
    ]
    lines += _map_lines("Labels", md.get("labels"))
    lines += _map_lines("Annotations", md.get("annotations"))
    lines.append(_field("Age:", age(md.get("creationTimestamp"), now)))
    return lines


def condition_lines(obj: Obj, now: datetime) -> list[str]:
    """kn's condition table (`++` True, `!!` False, `??` Unknown), then non-True messages."""
    cs = conditions(obj)
    if not cs:
        return []
    rows = [
        [
            "I "
            if c.get("severity") == "Info" and c.get("status") != "True"
            else "W "
            if c.get("severity") == "Warning" and c.get("status") != "True"
            else SYMBOLS.get(str(c.get("status")), "??"),
            str(c.get("type", "")),
            age(c.get("lastTransitionTime"), now),
            str(c.get("reason") or ""),
        ]
        for c in cs
    ]
    lines = ["Conditions:"]
    lines += [
        "  " + line for line in render_table(("OK", "TYPE", "AGE", "REASON"), rows).splitlines()
    ]
    for c in cs:
        if c.get("status") != "True" and c.get("message"):
            lines.append(f"  {c.get('type')}: {c.get('message')}")
    return lines


def _image(revision_or_template_spec: Obj) -> str:
    containers = revision_or_template_spec.get("containers") or [{}]
    return str(containers[0].get("image", ""))


def _digest(revision: Obj) -> str:
    for cs in status(revision).get("containerStatuses") or []:
        if cs.get("imageDigest"):
            return str(cs["imageDigest"])
    return ""


def _short(digest: str) -> str:
    """`sha256:0123456789abcdef…` → `0123456789ab`."""
    return digest.rpartition(":")[2][:12]


def traffic_lines(
    traffic: Sequence[Obj], revisions: Sequence[Obj], now: datetime, latest_ready: str = ""
) -> list[str]:
    """One entry per traffic target: percent, `@latest (rev)` or the revision, tag, image."""
    by_name = {meta(r).get("name"): r for r in revisions}
    lines: list[str] = []
    for t in traffic:
        rev_name = str(t.get("revisionName") or latest_ready)
        ref = f"@latest ({rev_name})" if t.get("latestRevision") else rev_name
        rev = by_name.get(rev_name)
        extra = []
        if t.get("tag"):
            extra.append(f"#{t['tag']}")
        if rev is not None:
            gen = (meta(rev).get("labels") or {}).get(CONFIG_GENERATION_LABEL)
            if gen:
                extra.append(f"[{gen}]")
            extra.append(f"({age(meta(rev).get('creationTimestamp'), now)})")
        lines.append(f"  {int(t.get('percent') or 0):>3}%  {' '.join([ref, *extra])}")
        if rev is not None:
            image = _image(rev.get("spec") or {})
            digest = _digest(rev)
            lines.append(
                f"        Image:  {image}" + (f" (pinned to {_short(digest)})" if digest else "")
            )
        if t.get("url"):
            lines.append(f"        URL:    {t['url']}")
    return lines


def describe_service(svc: Obj, revisions: Sequence[Obj], now: datetime) -> str:
    st = status(svc)
    lines = header(svc, now)
    lines.append(_field("URL:", st.get("url", "")))
    lines.append("")
    lines.append("Revisions:")
    ready = str(st.get("latestReadyRevisionName") or "")
    traffic = st.get("traffic") or (svc.get("spec") or {}).get("traffic") or []
    lines += traffic_lines(traffic, revisions, now, ready)
    created = st.get("latestCreatedRevisionName")
    if created and created != ready:
        lines.append(
            f"  (latest created revision {created} is not ready: latest ready is {ready or 'none'})"
        )
    lines.append("")
    lines += condition_lines(svc, now)
    return "\n".join(lines)


def autoscaler_lines(view: Obj) -> list[str]:
    """The autoscaler's view of a revision (from the controller's /internal/autoscaler)."""

    def num(x: object) -> str:
        return "no data" if x is None else f"{float(x):.2f}"  # type: ignore[arg-type]

    lines = ["Autoscaler:"]
    lines.append(_field("  Class:", f"{view.get('class')} (metric {view.get('metric')})"))
    lines.append(_field("  Mode:", str(view.get("mode"))))
    lines.append(_field("  Target:", f"{num(view.get('target'))} per replica"))
    lines.append(_field(
        "  Observed:",
        f"stable {num(view.get('observedStable'))} over {view.get('stableWindowSeconds')}s, "
        f"panic {num(view.get('observedPanic'))} over {view.get('panicWindowSeconds')}s",
    ))
    scale = f"{view.get('desiredScale')} (ready {view.get('readyReplicas')})"
    if view.get("clampedBy"):
        scale += f", wanted {view.get('unclampedScale')} but {view.get('clampedBy')} bounds it"
    lines.append(_field("  Desired scale:", scale))
    lines.append(_field("  Why:", str(view.get("reason"))))
    lines.append(_field("  Learned limit:", learned_limit_text(view.get("learnedLimits"))))
    for w in view.get("warnings") or []:
        lines.append(_field("  Warning:", str(w)))
    return lines


def learned_limit_text(learned: Obj | None) -> str:
    """The gateways' learned per-replica in-flight limits (`containerConcurrency` 0 or above
    it: lowered by refused or stalled connections, raised by successes), in a few words."""
    if not learned:
        return "none (no replica has refused or stalled a connection)"
    values = sorted(int(n) for n in (learned.get("replicas") or {}).values())
    changes = f"lowered {learned.get('lowered', 0)}×, raised {learned.get('raised', 0)}×"
    if not values:
        return f"none now ({changes} before)"
    shown = str(values[0]) if values[0] == values[-1] else f"{values[0]}–{values[-1]}"
    count = f"{len(values)} replica" + ("s" if len(values) != 1 else "")
    return f"{shown} in flight per replica on {count} ({changes})"


def describe_revision(rev: Obj, now: datetime, autoscaler: Obj | None = None) -> str:
    spec = rev.get("spec") or {}
    labels = meta(rev).get("labels") or {}
    container = (spec.get("containers") or [{}])[0]
    lines = header(rev, now)
    digest = _digest(rev)
    lines.append(_field("Image:", container.get("image", "") + (f" ({digest})" if digest else "")))
    if container.get("command"):
        lines.append(_field("Command:", " ".join(map(str, container["command"]))))
    if container.get("args"):
        lines.append(_field("Args:", " ".join(map(str, container["args"]))))
    env = container.get("env") or []
    if env:
        lines.append("Env:")
        lines += [f"  {e.get('name')}={e.get('value', '')}" for e in env]
    if spec.get("containerConcurrency") is not None:
        lines.append(_field("Concurrency:", f"Limit: {spec['containerConcurrency']}"))
    lines.append(_field("Service:", labels.get(SERVICE_LABEL, "")))
    if labels.get(CONFIG_GENERATION_LABEL):
        lines.append(_field("Generation:", labels[CONFIG_GENERATION_LABEL]))
    st = status(rev)
    if "actualReplicas" in st or "desiredReplicas" in st:
        ready, desired = st.get("actualReplicas", 0), st.get("desiredReplicas", 0)
        lines.append(_field("Replicas:", f"{ready} ready, {desired} desired"))
    if autoscaler:
        lines.append("")
        lines += autoscaler_lines(autoscaler)
    lines.append("")
    lines += condition_lines(rev, now)
    return "\n".join(lines)


def describe_route(route: Obj, revisions: Sequence[Obj], now: datetime) -> str:
    st = status(route)
    lines = header(route, now)
    lines.append(_field("URL:", st.get("url", "")))
    owner = (meta(route).get("labels") or {}).get(SERVICE_LABEL)
    if owner:
        lines.append(_field("Service:", owner))
    lines.append("")
    lines.append("Traffic Targets:")
    lines += traffic_lines(
        st.get("traffic") or (route.get("spec") or {}).get("traffic") or [], revisions, now
    )
    lines.append("")
    lines += condition_lines(route, now)
    return "\n".join(lines)


def describe_generic(obj: Obj, now: datetime, extra: Sequence[str] = ()) -> str:
    """The header, the status' URLs and names, `extra` lines (a broker's backend), conditions."""
    st = status(obj)
    lines = header(obj, now)
    for key in ("url", "latestCreatedRevisionName", "latestReadyRevisionName", "address"):
        if st.get(key):
            value = st[key].get("url") if isinstance(st[key], dict) else st[key]
            lines.append(_field(f"{key[0].upper()}{key[1:]}:", value, 28))
    if extra:
        lines.append("")
        lines += extra
    lines.append("")
    lines += condition_lines(obj, now)
    return "\n".join(lines)


def describe(
    kind: str, obj: Obj, revisions: Sequence[Obj], now: datetime, extra: Sequence[str] = ()
) -> str:
    if kind == "Service":
        return describe_service(obj, revisions, now)
    if kind == "Revision":
        return describe_revision(obj, now)
    if kind == "Route":
        return describe_route(obj, revisions, now)
    return describe_generic(obj, now, extra)
