"""A revision's effective scaling: its `autoscaling.knative.dev/*` annotations over the global settings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from controller.api import autoscaling as ak
from controller.autoscaling.settings import AutoscalerSettings

BUCKET_S = 1.0
"""The metrics bucket size; Knative's panic window is never shorter than one bucket."""
HPA_TARGET_DEFAULT = 80.0
"""Target of the HPA class when no `target` annotation is set (percent of one core for cpu)."""


@dataclass(frozen=True)
class RevisionScaling:
    """Everything the deciders need for one revision, after Knative's precedence
    (annotation > global setting). Durations in seconds."""

    cls: str
    """Autoscaler class: `kpa.autoscaling.knative.dev` or `hpa.autoscaling.knative.dev`."""
    metric: str
    """`concurrency` or `rps` (KPA), `cpu` or `memory` (HPA)."""
    container_concurrency: int
    """The revision's hard per-replica limit; 0 means unlimited."""
    total_target: float
    """Capacity of one replica in the metric's unit, before the utilisation percentage
    (Knative's `TotalValue`)."""
    target_utilization_percentage: float
    """Share of `total_target` to aim for, in percent (KPA only; 100 for HPA)."""
    target: float
    """Per-replica target T = total_target × utilisation / 100, at least 0.01."""
    min_scale: int
    """Floor while routed."""
    max_scale: int
    """Ceiling from max-scale; 0 means unlimited."""
    max_scale_limit: int
    """The global cap on every revision; 0 means none."""
    max_replicas_per_machine: int
    """Flint's machine budget for one revision."""
    initial_scale: int
    """Replicas until the revision has had them ready once."""
    activation_scale: int
    """Floor whenever the revision has traffic (1: no effect)."""
    scale_down_delay_s: float
    """Scale-downs wait until the lower scale was wanted for this long."""
    stable_window_s: float
    """Averaging window of the stable mode."""
    panic_window_percentage: float
    """Panic window as a percentage of the stable window."""
    panic_window_s: float
    """max(1 s, stable window × panic-window-percentage / 100)."""
    panic_threshold_percentage: float
    """Panic threshold in percent of the ready replicas (200)."""
    max_scale_up_rate: float
    """Global max-scale-up-rate."""
    max_scale_down_rate: float
    """Global max-scale-down-rate."""
    scale_to_zero_grace_period_s: float
    """Global grace period before an idle revision goes to 0."""
    scale_to_zero_pod_retention_period_s: float
    """Annotation or global minimum time the last replica stays once idle."""
    enable_scale_to_zero: bool
    """Global switch; false makes 1 the floor of an idle revision."""
    tick_interval_s: float
    """Time between two decisions."""
    warnings: tuple[str, ...] = ()
    """Annotations that could not be used (invalid values fall back to the global setting)."""

    @property
    def panic_threshold(self) -> float:
        """The threshold as a ratio of wanted to ready replicas (2.0 for 200 %)."""
        return self.panic_threshold_percentage / 100.0

    @property
    def scale_cap(self) -> int:
        """The tightest of max-scale, max-scale-limit and the machine budget (0: none)."""
        caps = [c for c in (self.max_scale, self.max_scale_limit, self.max_replicas_per_machine) if c > 0]
        return min(caps) if caps else 0


def _int(a: Mapping[str, str], keys: tuple[str, ...], default: int, warn: list[str]) -> int:
    found = ak.get(a, keys)
    if found is None:
        return default
    k, v = found
    if re.fullmatch(r"[+-]?\d+", v.strip()) and 0 <= int(v) <= ak.MAX_INT32:
        return int(v)
    warn.append(f"{k}={v!r} is not a non-negative integer; using {default}")
    return default


def _float(
    a: Mapping[str, str], keys: tuple[str, ...], default: float, lo: float, hi: float, warn: list[str]
) -> float:
    found = ak.get(a, keys)
    if found is None:
        return default
    k, v = found
    try:
        f = float(v)
    except ValueError:
        f = float("nan")
    if lo <= f <= hi:
        return f
    warn.append(f"{k}={v!r} is not a number in [{lo:g}, {hi:g}]; using {default:g}")
    return default


def _duration(
    a: Mapping[str, str], keys: tuple[str, ...], default: float, lo: float, hi: float, warn: list[str]
) -> float:
    found = ak.get(a, keys)
    if found is None:
        return default
    k, v = found
    d = ak.parse_duration(v.strip())
    if d is not None and lo <= d <= hi:
        return d
    warn.append(f"{k}={v!r} is not a duration in [{lo:g}s, {hi:g}s]; using {default:g}s")
    return default


def effective(
    settings: AutoscalerSettings, annotations: Mapping[str, str], container_concurrency: int
) -> RevisionScaling:
    """Resolve a revision's scaling knobs (Knative's `ResolveMetricTarget`, `MakeDecider`,
    `ScaleBounds`). Annotations are assumed validated at admission (`validate_annotations`);
    a value that still cannot be used falls back to the global one and is listed in `warnings`."""
    warn: list[str] = []
    a = {k: (v if isinstance(v, str) else str(v)) for k, v in annotations.items()}
    cls = ak.class_of(a) if ak.get(a, (ak.CLASS,)) is not None else settings.pod_autoscaler_class
    if cls not in ak.CLASSES:
        warn.append(f"{ak.CLASS}={cls!r} is not a known class; using {settings.pod_autoscaler_class}")
        cls = settings.pod_autoscaler_class
    allowed = ak.METRICS_BY_CLASS[cls]
    metric = allowed[0]
    if (found := ak.get(a, (ak.METRIC,))) is not None:
        if found[1] in allowed:
            metric = found[1]
        else:
            warn.append(f"{found[0]}={found[1]!r} is not a metric of {cls}; using {metric}")

    cc = max(0, container_concurrency)
    annotated_target = 0.0
    if (found := ak.get(a, ak.TARGET)) is not None:
        try:
            annotated_target = float(found[1])
        except ValueError:
            annotated_target = float("nan")
        if not annotated_target >= ak.TARGET_MIN:
            warn.append(f"{found[0]}={found[1]!r} is not a target of at least {ak.TARGET_MIN:g}; ignored")
            annotated_target = 0.0
    if cls == ak.HPA:
        total = annotated_target or HPA_TARGET_DEFAULT
        utilization = 100.0
        target = total
    else:
        if metric == ak.RPS:
            total = settings.requests_per_second_target_default
        else:
            total = float(cc) if cc > 0 else settings.container_concurrency_target_default
        if annotated_target:
            total = annotated_target
            if metric == ak.CONCURRENCY and cc > 0:
                # Knative: never aim above what the app can take (containerConcurrency).
                total = min(annotated_target, float(cc))
        utilization = _float(
            a,
            ak.TARGET_UTILIZATION_PERCENTAGE,
            settings.container_concurrency_target_percentage,
            1.0,
            100.0,
            warn,
        )
        target = max(ak.TARGET_MIN, total * utilization / 100.0)

    min_scale = _int(a, ak.MIN_SCALE, settings.min_scale, warn)
    max_scale = _int(a, ak.MAX_SCALE, settings.max_scale, warn)
    if max_scale and min_scale > max_scale:
        warn.append(f"min-scale {min_scale} is greater than max-scale {max_scale}; using {max_scale}")
        min_scale = max_scale
    initial_scale = _int(a, ak.INITIAL_SCALE, settings.initial_scale, warn)
    if initial_scale == 0 and not settings.allow_zero_initial_scale:
        warn.append("initial-scale 0 needs allow-zero-initial-scale; using 1")
        initial_scale = 1
    activation_scale = max(1, _int(a, ak.ACTIVATION_SCALE, settings.activation_scale, warn))

    stable = _duration(a, ak.WINDOW, settings.stable_window_s, ak.WINDOW_MIN_S, ak.WINDOW_MAX_S, warn)
    panic_pct = _float(
        a,
        ak.PANIC_WINDOW_PERCENTAGE,
        settings.panic_window_percentage,
        *ak.PANIC_WINDOW_PERCENTAGE_RANGE,
        warn,
    )
    panic_threshold = _float(
        a,
        ak.PANIC_THRESHOLD_PERCENTAGE,
        settings.panic_threshold_percentage,
        *ak.PANIC_THRESHOLD_PERCENTAGE_RANGE,
        warn,
    )
    delay = _duration(a, ak.SCALE_DOWN_DELAY, settings.scale_down_delay_s, 0.0, ak.WINDOW_MAX_S, warn)
    retention = _duration(
        a,
        ak.SCALE_TO_ZERO_POD_RETENTION_PERIOD,
        settings.scale_to_zero_pod_retention_period_s,
        0.0,
        ak.WINDOW_MAX_S,
        warn,
    )
    return RevisionScaling(
        cls=cls,
        metric=metric,
        container_concurrency=cc,
        total_target=total,
        target_utilization_percentage=utilization,
        target=target,
        min_scale=min_scale,
        max_scale=max_scale,
        max_scale_limit=settings.max_scale_limit,
        max_replicas_per_machine=settings.max_replicas_per_machine,
        initial_scale=initial_scale,
        activation_scale=activation_scale,
        scale_down_delay_s=delay,
        stable_window_s=stable,
        panic_window_percentage=panic_pct,
        panic_window_s=max(BUCKET_S, stable * panic_pct / 100.0),
        panic_threshold_percentage=panic_threshold,
        max_scale_up_rate=settings.max_scale_up_rate,
        max_scale_down_rate=settings.max_scale_down_rate,
        scale_to_zero_grace_period_s=settings.scale_to_zero_grace_period_s,
        scale_to_zero_pod_retention_period_s=retention,
        enable_scale_to_zero=settings.enable_scale_to_zero,
        tick_interval_s=settings.tick_interval_s,
        warnings=tuple(warn),
    )


__all__ = ["RevisionScaling", "effective"]
