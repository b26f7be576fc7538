"""Traffic targets (`spec.traffic`) of a Route or Service: Knative's defaults and validation."""

from __future__ import annotations

from typing import Any

from controller.api.meta import (
    as_int,
    err_disallowed,
    err_generic,
    err_invalid_key_name,
    err_invalid_value,
    err_missing_one_of,
    err_multiple_one_of,
    err_out_of_bounds,
    go_list,
    index,
    is_dns1035_label,
    is_qualified_name,
    join,
)
from controller.api.types import FieldError

TRAFFIC_TARGET_FIELDS = frozenset(
    {"tag", "revisionName", "configurationName", "latestRevision", "percent", "url"}
)


def default_traffic() -> list[dict[str, Any]]:
    """All traffic to the latest ready revision: a Service's traffic when it names none."""
    return [{"percent": 100, "latestRevision": True}]


def set_traffic_defaults(spec: dict[str, Any], *, default_configuration: bool) -> None:
    """RouteSpec.SetDefaults: a Service (it has a default configuration) gets `default_traffic()`;
    every target's `latestRevision` defaults to `revisionName == ""`."""
    traffic = spec.get("traffic")
    if not traffic and default_configuration:
        spec["traffic"] = traffic = default_traffic()
    if not isinstance(traffic, list):
        return
    for tt in traffic:
        if isinstance(tt, dict) and tt.get("latestRevision") is None:
            tt["latestRevision"] = not tt.get("revisionName")


def traffic_errors(traffic: Any, path: str, *, default_configuration: bool) -> list[FieldError]:
    """validateTrafficList: per-target rules, tags (DNS-1035, unique) and a sum of 100."""
    if traffic is not None and not isinstance(traffic, list):
        return [err_invalid_value(traffic, path, "expected a list")]
    errs: list[FieldError] = []
    seen_tags: dict[str, int] = {}
    total = 0
    for i, tt in enumerate(traffic or []):
        tpath = index(path, i)
        if not isinstance(tt, dict):
            errs.append(err_invalid_value(tt, tpath, "expected an object"))
            continue
        errs += target_errors(tt, tpath, default_configuration=default_configuration)
        percent = as_int(tt.get("percent"))
        if percent is not None:
            total += percent
        tag = tt.get("tag")
        if not tag:
            continue
        if not isinstance(tag, str):
            errs.append(err_invalid_value(tag, join(tpath, "tag")))
            continue
        if msgs := is_dns1035_label(tag):
            errs.append(
                err_invalid_value(f"not a DNS 1035 label: {go_list(msgs)}", join(tpath, "tag"))
            )
        if tag in seen_tags:
            errs.append(
                err_generic(
                    f'Multiple definitions for "{tag}"',
                    join(tpath, "tag"),
                    join(index(path, seen_tags[tag]), "tag"),
                )
            )
        else:
            seen_tags[tag] = i
    if total != 100:
        errs.append(FieldError(path, f"Traffic targets sum to {total}, want 100"))
    return errs


def target_errors(
    tt: dict[str, Any], path: str, *, default_configuration: bool
) -> list[FieldError]:
    """TrafficTarget.Validate within a spec."""
    errs = [err_disallowed(join(path, k)) for k in sorted(tt) if k not in TRAFFIC_TARGET_FIELDS]
    revision = tt.get("revisionName") or ""
    configuration = tt.get("configurationName") or ""

    latest = tt.get("latestRevision")
    if latest is not None:
        if not isinstance(latest, bool):
            errs.append(err_invalid_value(latest, join(path, "latestRevision")))
        elif bool(revision) == latest:
            # The senses of pinning a revision and following the latest one must match.
            sense = "true" if latest else "false"
            errs.append(
                FieldError(
                    join(path, "latestRevision"),
                    f'may not set revisionName "{revision}" when latestRevision is {sense}',
                )
            )

    if default_configuration and configuration:
        errs.append(err_disallowed(join(path, "configurationName")))
    elif revision and configuration:
        errs.append(
            err_multiple_one_of(join(path, "revisionName"), join(path, "configurationName"))
        )
    elif revision or configuration:
        field = "revisionName" if revision else "configurationName"
        value = revision or configuration
        msgs = is_qualified_name(value) if isinstance(value, str) else ["expected a string"]
        if msgs:
            errs.append(err_invalid_key_name(str(value), join(path, field), *msgs))
    elif not default_configuration:
        errs.append(err_missing_one_of(join(path, "revisionName"), join(path, "configurationName")))

    raw = tt.get("percent")
    percent = as_int(raw)
    if raw is not None and percent is None:
        errs.append(err_invalid_value(raw, join(path, "percent")))
    elif percent is not None and (percent < 0 or percent > 100):
        errs.append(err_out_of_bounds(percent, 0, 100, join(path, "percent")))

    if tt.get("url"):
        errs.append(err_disallowed(join(path, "url")))
    return errs
