"""Global autoscaler settings: Knative's `config-autoscaler` keys and defaults, loaded and validated."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from controller.api.autoscaling import CLASSES, KPA, TARGET_MIN, WINDOW_MAX_S, WINDOW_MIN_S, parse_duration

MAX_INT32 = 2**31 - 1
GRACE_MIN_S = WINDOW_MIN_S
"""Knative refuses a scale-to-zero grace period under its 6 s window minimum."""
BELOW_MINIMUMS_WINDOW_MIN_S = 1.0
"""The smallest stable window a test or benchmark profile may ask for (one 1 s bucket)."""
PANIC_THRESHOLD_RANGE = (110.0, 1000.0)
"""Knative's bounds for the panic-threshold-percentage annotation, applied to the global too."""
REPLICAS_PER_CORE = 4
"""Replicas per core in the default machine budget: Flint's apps are mostly I/O-bound."""
REPLICAS_PER_GIB = 4
"""Replicas per GiB of memory in the default machine budget (a 256 MiB budget per replica)."""


def default_max_replicas_per_machine(cpu_count: int | None = None, memory_bytes: int | None = None) -> int:
    """min(4 × cores, 4 × memory in GiB), at least 1; reads the machine when an argument is None."""
    if cpu_count is None:
        try:
            cpu_count = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpu_count = os.cpu_count() or 1
    if memory_bytes is None:
        try:
            memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            memory_bytes = 0
    by_cpu = REPLICAS_PER_CORE * max(1, cpu_count)
    if memory_bytes <= 0:
        return by_cpu
    by_memory = int(memory_bytes / 2**30 * REPLICAS_PER_GIB)
    return max(1, min(by_cpu, by_memory))


@dataclass(frozen=True)
class AutoscalerSettings:
    """Cluster-wide autoscaling defaults; a revision's annotations override most of them.

    Field names follow Knative's `config-autoscaler` keys (`stable-window` → `stable_window_s`);
    durations are in seconds, percentages in percent (70.0 means 70 %).
    """

    pod_autoscaler_class: str = KPA
    """Class used when a revision has no `autoscaling.knative.dev/class` annotation (KPA)."""
    enable_scale_to_zero: bool = True
    """Whether an idle revision may go to 0 replicas; when false its floor is 1 (default true)."""
    container_concurrency_target_percentage: float = 70.0
    """Per-replica target as a percentage of the concurrency capacity, in (0, 100] (default 70 %).
    A legacy fraction in (0, 1] is accepted by the loader, as in Knative."""
    container_concurrency_target_default: float = 100.0
    """Concurrency capacity of a replica whose containerConcurrency is 0 (requests; default 100)."""
    requests_per_second_target_default: float = 200.0
    """Capacity of a replica under the `rps` metric (requests per second; default 200); the
    target-utilization-percentage applies to it too."""
    target_burst_capacity: float = 200.0
    """Accepted for compatibility (requests; default 200, -1 unlimited) and unused: Flint's
    gateway is always in the request path, so there is no activator to switch in and out."""
    stable_window_s: float = 60.0
    """Averaging window of the stable mode and the idle period before scale to zero (seconds;
    default 60, Knative's bounds 6 s to 1 h, whole seconds)."""
    panic_window_percentage: float = 10.0
    """Panic window as a percentage of the stable window, in [1, 100] (default 10 %: 6 s)."""
    panic_threshold_percentage: float = 200.0
    """Panic when the panic-window demand reaches this percentage of the ready replicas, in
    [110, 1000] (default 200 %)."""
    max_scale_up_rate: float = 1000.0
    """At most ceil(rate × max(1, ready)) replicas per decision, > 1 (default 1000)."""
    max_scale_down_rate: float = 2.0
    """At least floor(max(1, ready) / rate) replicas per decision, > 1 (default 2: halve)."""
    scale_to_zero_grace_period_s: float = 30.0
    """Time an idle revision keeps its last replica after a stable window without traffic
    (seconds; default 30, Knative's minimum 6)."""
    scale_to_zero_pod_retention_period_s: float = 0.0
    """Minimum time the last replica stays once the revision went idle; the longer of this and
    the grace period applies (seconds; default 0)."""
    tick_interval_s: float = 2.0
    """Time between two decisions for a revision, besides the immediate one on a poke (seconds;
    default 2). Also the bucket size of the scale-down-delay window."""
    initial_scale: int = 1
    """Replicas a new revision starts with, until it has had them ready once (default 1)."""
    allow_zero_initial_scale: bool = False
    """Whether initial-scale (global or annotation) may be 0 (default false)."""
    min_scale: int = 0
    """Lower bound on replicas while a route references the revision (default 0)."""
    max_scale: int = 0
    """Upper bound on replicas; 0 means unlimited (default 0)."""
    max_scale_limit: int = 0
    """Largest max-scale a revision may ask for, and a cap on every revision; 0 means none
    (default 0)."""
    activation_scale: int = 1
    """Replicas a revision gets at least whenever it has traffic, e.g. when scaled from zero
    (default 1: no effect)."""
    scale_down_delay_s: float = 0.0
    """A scale-down happens only once the lower scale has been wanted for this long: the decider
    applies the largest recommendation of this trailing window (seconds, whole; default 0)."""
    max_replicas_per_machine: int = field(default_factory=default_max_replicas_per_machine)
    """Flint's machine budget: the most replicas one revision may have on this machine. Default
    min(4 × cores, 4 × memory GiB) — I/O-bound apps, about 256 MiB each. Decisions clamped by it
    are reported so the revision can carry a condition."""


@dataclass(frozen=True)
class _Key:
    name: str
    attr: str
    kind: str  # "bool" | "float" | "int" | "duration" | "str"


_KEYS: tuple[_Key, ...] = (
    _Key("pod-autoscaler-class", "pod_autoscaler_class", "str"),
    _Key("enable-scale-to-zero", "enable_scale_to_zero", "bool"),
    _Key("allow-zero-initial-scale", "allow_zero_initial_scale", "bool"),
    _Key("max-scale-up-rate", "max_scale_up_rate", "float"),
    _Key("max-scale-down-rate", "max_scale_down_rate", "float"),
    _Key("container-concurrency-target-percentage", "container_concurrency_target_percentage", "float"),
    _Key("container-concurrency-target-default", "container_concurrency_target_default", "float"),
    _Key("requests-per-second-target-default", "requests_per_second_target_default", "float"),
    _Key("target-burst-capacity", "target_burst_capacity", "float"),
    _Key("panic-window-percentage", "panic_window_percentage", "float"),
    _Key("panic-threshold-percentage", "panic_threshold_percentage", "float"),
    _Key("initial-scale", "initial_scale", "int"),
    _Key("min-scale", "min_scale", "int"),
    _Key("max-scale", "max_scale", "int"),
    _Key("max-scale-limit", "max_scale_limit", "int"),
    _Key("activation-scale", "activation_scale", "int"),
    _Key("max-replicas-per-machine", "max_replicas_per_machine", "int"),
    _Key("stable-window", "stable_window_s", "duration"),
    _Key("scale-down-delay", "scale_down_delay_s", "duration"),
    _Key("scale-to-zero-grace-period", "scale_to_zero_grace_period_s", "duration"),
    _Key("scale-to-zero-pod-retention-period", "scale_to_zero_pod_retention_period_s", "duration"),
    _Key("tick-interval", "tick_interval_s", "duration"),
)
KNOWN_KEYS = frozenset(k.name for k in _KEYS)
IGNORED_KEYS = frozenset({"activator-capacity"})
"""Knative keys accepted and ignored: Flint has no separate activator to size."""

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class SettingsError(ValueError):
    """The autoscaler configuration was refused; `errors` holds one sentence per problem, each
    naming its key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid autoscaler settings: " + "; ".join(errors))
        self.errors = tuple(errors)


def _parse(key: _Key, raw: str) -> tuple[Any, str | None]:
    text = raw.strip()
    if key.kind == "str":
        return text, None
    if key.kind == "bool":
        if text in _TRUE:
            return True, None
        if text in _FALSE:
            return False, None
        return None, f"{key.name}: {raw!r} is not a boolean (want true or false)"
    if key.kind == "int":
        try:
            i = int(text)
        except ValueError:
            return None, f"{key.name}: {raw!r} is not an integer"
        if not -(2**31) <= i <= MAX_INT32:
            return None, f"{key.name}: {raw!r} does not fit in 32 bits"
        return i, None
    if key.kind == "float":
        try:
            f = float(text)
        except ValueError:
            return None, f"{key.name}: {raw!r} is not a number"
        if not math.isfinite(f):
            return None, f"{key.name}: {raw!r} is not a finite number"
        return f, None
    d = parse_duration(text)
    if d is None:
        return None, f"{key.name}: {raw!r} is not a duration (e.g. 60s, 1m30s, 500ms)"
    return d, None


def _fmt_s(seconds: float) -> str:
    return f"{seconds:g}s"


def load_settings(
    data: Mapping[str, str],
    *,
    allow_below_minimums: bool = False,
    base: AutoscalerSettings | None = None,
) -> AutoscalerSettings:
    """Settings from a flat map of Knative `config-autoscaler` keys (`"stable-window": "60s"`).

    Keys absent from `data` keep the value of `base` (the defaults when None). Unknown keys are
    refused (a typo would otherwise be silently ignored), except keys starting with `_` (such as
    Knative's `_example`) and `activator-capacity`. `allow_below_minimums` (test and benchmark
    profiles) lets the stable window go down to 1 s and the grace period to 0.
    Raises SettingsError listing every problem.
    """
    errors: list[str] = []
    values: dict[str, Any] = {}
    by_name = {k.name: k for k in _KEYS}
    for name in sorted(data):
        if name.startswith("_") or name in IGNORED_KEYS:
            continue
        key = by_name.get(name)
        if key is None:
            errors.append(f"{name}: unknown autoscaler setting (known: {', '.join(sorted(KNOWN_KEYS))})")
            continue
        raw = data[name]
        value, err = _parse(key, raw if isinstance(raw, str) else str(raw))
        if err is not None:
            errors.append(err)
        else:
            values[key.attr] = value
    if errors:
        raise SettingsError(errors)
    pct = values.get("container_concurrency_target_percentage")
    if pct is not None and 0 < pct <= 1.0:
        # Knative's legacy spelling: a fraction in (0, 1] (0.7 means 70 %).
        values["container_concurrency_target_percentage"] = pct * 100.0
    settings = replace(base if base is not None else AutoscalerSettings(), **values)
    errors = validate_settings(settings, allow_below_minimums=allow_below_minimums)
    if errors:
        raise SettingsError(errors)
    return settings


def validate_settings(s: AutoscalerSettings, *, allow_below_minimums: bool = False) -> list[str]:
    """Knative's `config-autoscaler` validation, one sentence per problem naming its key."""
    errs: list[str] = []
    grace_min = 0.0 if allow_below_minimums else GRACE_MIN_S
    window_min = BELOW_MINIMUMS_WINDOW_MIN_S if allow_below_minimums else WINDOW_MIN_S
    if s.pod_autoscaler_class not in CLASSES:
        errs.append(f"pod-autoscaler-class = {s.pod_autoscaler_class!r}, must be one of {', '.join(CLASSES)}")
    if s.scale_to_zero_grace_period_s < grace_min:
        errs.append(
            f"scale-to-zero-grace-period must be at least {_fmt_s(grace_min)}, "
            f"got {_fmt_s(s.scale_to_zero_grace_period_s)}"
        )
    if s.scale_down_delay_s < 0:
        errs.append(f"scale-down-delay cannot be negative, was: {_fmt_s(s.scale_down_delay_s)}")
    elif s.scale_down_delay_s != round(s.scale_down_delay_s):
        errs.append(
            f"scale-down-delay = {_fmt_s(s.scale_down_delay_s)}, must be specified with at most "
            "second precision"
        )
    if s.scale_to_zero_pod_retention_period_s < 0:
        errs.append(
            "scale-to-zero-pod-retention-period cannot be negative, was: "
            f"{_fmt_s(s.scale_to_zero_pod_retention_period_s)}"
        )
    if s.target_burst_capacity < 0 and s.target_burst_capacity != -1:
        errs.append(
            "target-burst-capacity must be either non-negative or -1 (for unlimited), was: "
            f"{s.target_burst_capacity:g}"
        )
    pct = s.container_concurrency_target_percentage
    if pct <= 0 or pct > 100:
        errs.append(
            f"container-concurrency-target-percentage = {pct:g} is outside of valid range of (0, 100]"
        )
    elif (x := s.container_concurrency_target_default * pct / 100.0) < TARGET_MIN:
        errs.append(
            "container-concurrency-target-percentage and container-concurrency-target-default yield "
            f"target concurrency of {x:g}, can't be less than {TARGET_MIN:g}"
        )
    if s.requests_per_second_target_default < TARGET_MIN:
        errs.append(
            f"requests-per-second-target-default must be at least {TARGET_MIN:g}, was: "
            f"{s.requests_per_second_target_default:g}"
        )
    if s.max_scale_up_rate <= 1.0:
        errs.append(f"max-scale-up-rate = {s.max_scale_up_rate:g}, must be greater than 1.0")
    if s.max_scale_down_rate <= 1.0:
        errs.append(f"max-scale-down-rate = {s.max_scale_down_rate:g}, must be greater than 1.0")
    if s.stable_window_s < window_min or s.stable_window_s > WINDOW_MAX_S:
        errs.append(
            f"stable-window = {_fmt_s(s.stable_window_s)}, must be in [{_fmt_s(window_min)}; "
            f"{_fmt_s(WINDOW_MAX_S)}] range"
        )
    elif s.stable_window_s != round(s.stable_window_s):
        errs.append(
            f"stable-window = {_fmt_s(s.stable_window_s)}, must be specified with at most second precision"
        )
    if not 1.0 <= s.panic_window_percentage <= 100.0:
        errs.append(f"panic-window-percentage = {s.panic_window_percentage:g}, must be in [1, 100] interval")
    lo, hi = PANIC_THRESHOLD_RANGE
    if not lo <= s.panic_threshold_percentage <= hi:
        errs.append(
            f"panic-threshold-percentage = {s.panic_threshold_percentage:g}, must be in "
            f"[{lo:g}, {hi:g}] interval"
        )
    if s.tick_interval_s <= 0:
        errs.append(f"tick-interval = {_fmt_s(s.tick_interval_s)}, must be positive")
    if s.initial_scale < 0 or (s.initial_scale == 0 and not s.allow_zero_initial_scale):
        errs.append(
            f"initial-scale = {s.initial_scale}, must be at least 0 (or at least 1 when "
            "allow-zero-initial-scale is false)"
        )
    if s.max_scale_limit < 0:
        errs.append(f"max-scale-limit = {s.max_scale_limit}, must be at least 0")
    else:
        min_max = 1 if s.max_scale_limit > 0 else 0
        if s.max_scale < min_max or (s.max_scale_limit > 0 and s.max_scale > s.max_scale_limit):
            errs.append(
                f"max-scale = {s.max_scale}, must be in "
                f"[{min_max}, max-scale-limit({s.max_scale_limit})] range"
            )
    if s.min_scale < 0:
        errs.append(f"min-scale = {s.min_scale}, must be at least 0")
    elif s.max_scale > 0 and s.min_scale > s.max_scale:
        errs.append(f"min-scale = {s.min_scale} is greater than max-scale = {s.max_scale}")
    if s.activation_scale < 1:
        errs.append(f"activation-scale = {s.activation_scale}, must be at least 1")
    if s.max_replicas_per_machine < 1:
        errs.append(f"max-replicas-per-machine = {s.max_replicas_per_machine}, must be at least 1")
    return errs


def settings_keys() -> dict[str, str]:
    """Config key → dataclass field name, for flags and documentation."""
    names = {f.name for f in fields(AutoscalerSettings)}
    return {k.name: k.attr for k in _KEYS if k.attr in names}


__all__ = [
    "AutoscalerSettings",
    "SettingsError",
    "default_max_replicas_per_machine",
    "load_settings",
    "settings_keys",
    "validate_settings",
]
