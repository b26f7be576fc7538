"""The `autoscaling.knative.dev/*` annotation keys and Knative's validation of them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controller.api.meta import (
    err_generic,
    err_invalid_key_name,
    err_invalid_value,
    err_out_of_bounds,
    join,
)
from controller.api.types import FieldError

GROUP = "autoscaling.knative.dev"
PREFIX = GROUP + "/"

CLASS = PREFIX + "class"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
CLASSES = (KPA, HPA)

METRIC = PREFIX + "metric"
CONCURRENCY = "concurrency"
RPS = "rps"
CPU = "cpu"
MEMORY = "memory"
METRICS_BY_CLASS: dict[str, tuple[str, ...]] = {KPA: (CONCURRENCY, RPS), HPA: (CPU, MEMORY)}

# Keys in priority order: the current spelling first, then the legacy camelCase one.
MIN_SCALE = (PREFIX + "min-scale", PREFIX + "minScale")
MAX_SCALE = (PREFIX + "max-scale", PREFIX + "maxScale")
INITIAL_SCALE = (PREFIX + "initial-scale", PREFIX + "initialScale")
ACTIVATION_SCALE = (PREFIX + "activation-scale",)
TARGET = (PREFIX + "target",)
TARGET_UTILIZATION_PERCENTAGE = (PREFIX + "target-utilization-percentage",)
TARGET_BURST_CAPACITY = (PREFIX + "target-burst-capacity",)
WINDOW = (PREFIX + "window",)
PANIC_WINDOW_PERCENTAGE = (PREFIX + "panic-window-percentage",)
PANIC_THRESHOLD_PERCENTAGE = (PREFIX + "panic-threshold-percentage",)
SCALE_DOWN_DELAY = (PREFIX + "scale-down-delay",)
SCALE_TO_ZERO_POD_RETENTION_PERIOD = (PREFIX + "scale-to-zero-pod-retention-period",)

MAX_INT32 = 2**31 - 1
_AUTOSCALING_PLACEMENT = (
    'autoscaling annotations must be put under "spec.template.metadata.annotations" to work'
)
TARGET_MIN = 0.01
WINDOW_MIN_S = 6.0
WINDOW_MAX_S = 3600.0
PANIC_WINDOW_PERCENTAGE_RANGE = (1.0, 100.0)
PANIC_THRESHOLD_PERCENTAGE_RANGE = (110.0, 1000.0)

_DURATION_RE = re.compile(r"^[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$|^0$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def get(annotations: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, str] | None:
    """(key, value) of the first of `keys` present (kmap.KeyPriority.Get)."""
    for k in keys:
        if k in annotations:
            v = annotations[k]
            return k, v if isinstance(v, str) else str(v)
    return None


def parse_duration(text: str) -> float | None:
    """Seconds of a Go duration (`"60s"`, `"1m30s"`, `"1.5h"`), None if it is not one."""
    if not _DURATION_RE.match(text):
        return None
    if text == "0":
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    total = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(text))
    return sign * total


def _go_int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else None


def _go_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _int_ge0(
    annotations: Mapping[str, Any], keys: tuple[str, ...], path: str
) -> tuple[int, list[FieldError]]:
    found = get(annotations, keys)
    if found is None:
        return 0, []
    k, v = found
    i = _go_int(v)
    if i is None:
        return 0, [err_invalid_value(v, join(path, k))]
    if i < 0 or i > MAX_INT32:
        return 0, [err_out_of_bounds(v, 0, MAX_INT32, join(path, k))]
    return i, []


def _fmt_seconds(s: float) -> str:
    """Go's Duration.String() for whole numbers of seconds used in bounds (6s, 1h0m0s)."""
    s_int = int(s)
    h, rem = divmod(s_int, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


def class_of(annotations: Mapping[str, Any]) -> str:
    """The autoscaler class named by the annotations, KPA when unset (Knative's default)."""
    found = get(annotations, (CLASS,))
    return found[1] if found else KPA


def validate_annotations(annotations: Any, path: str = "metadata.annotations") -> list[FieldError]:
    """Knative's `autoscaling.ValidateAnnotations`, same messages; paths are `<path>.<key>`."""
    if not isinstance(annotations, dict):
        return []
    a: dict[str, Any] = annotations
    errs: list[FieldError] = []

    # class
    if (found := get(a, (CLASS,))) is not None:
        k, v = found
        if v not in CLASSES:
            errs.append(
                err_invalid_value(
                    v, join(path, k), f"the class must be one of {', '.join(CLASSES)}"
                )
            )
    cls = class_of(a)

    # min/max/initial/activation scale
    lo, e = _int_ge0(a, MIN_SCALE, path)
    errs += e
    hi, e = _int_ge0(a, MAX_SCALE, path)
    errs += e
    if hi != 0 and hi < lo:
        errs.append(
            err_generic(
                f"max-scale={hi} is less than min-scale={lo}",
                join(path, MAX_SCALE[0]),
                join(path, MIN_SCALE[0]),
            )
        )
    if (found := get(a, ACTIVATION_SCALE)) is not None:
        k, v = found
        nz = _go_int(v)
        if nz is None:
            errs.append(err_invalid_value(v, join(path, k)))
        elif lo > nz:
            errs.append(
                FieldError(join(path, k), f"min-scale={lo} is greater than min-activate-scale={nz}")
            )
        elif hi != 0 and hi < nz:
            errs.append(
                FieldError(join(path, k), f"max-scale={hi} is less than min-activate-scale={nz}")
            )
        elif nz < 2:
            errs.append(
                FieldError(join(path, k), f"min-activate-scale={nz} must be greater than 1")
            )
    if (found := get(a, INITIAL_SCALE)) is not None:
        k, v = found
        init = _go_int(v)
        if init is None:
            errs.append(err_invalid_value(v, join(path, k)))
        elif init < 0:
            errs.append(err_invalid_value(v, join(path, f"{k} must be greater than 0")))

    errs += _validate_floats(a, path)
    errs += _validate_durations(a, path)

    # metric, consistent with the class
    if (found := get(a, (METRIC,))) is not None:
        k, metric = found
        allowed = METRICS_BY_CLASS.get(cls)
        if allowed is not None and metric not in allowed:
            errs.append(
                err_invalid_value(
                    metric,
                    join(path, k),
                    f"the {cls} class supports the metrics {', '.join(allowed)}",
                )
            )
    return errs


def _validate_floats(a: Mapping[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for keys, (lo, hi) in (
        (PANIC_WINDOW_PERCENTAGE, PANIC_WINDOW_PERCENTAGE_RANGE),
        (PANIC_THRESHOLD_PERCENTAGE, PANIC_THRESHOLD_PERCENTAGE_RANGE),
        (TARGET_UTILIZATION_PERCENTAGE, (1.0, 100.0)),
    ):
        if (found := get(a, keys)) is not None:
            k, v = found
            f = _go_float(v)
            if f is None:
                errs.append(err_invalid_value(v, join(path, k)))
            elif f < lo or f > hi:
                errs.append(err_out_of_bounds(v, lo, hi, join(path, k)))
    if (found := get(a, TARGET)) is not None:
        k, v = found
        f = _go_float(v)
        if f is None:
            errs.append(err_invalid_value(v, join(path, k)))
        elif f < TARGET_MIN:
            errs.append(FieldError(join(path, k), f"target {v} should be at least {TARGET_MIN:g}"))
    if (found := get(a, TARGET_BURST_CAPACITY)) is not None:
        k, v = found
        f = _go_float(v)
        if f is None or (f < 0 and f != -1):
            errs.append(err_invalid_value(v, join(path, k)))
    return errs


def _validate_durations(a: Mapping[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if (found := get(a, WINDOW)) is not None:
        k, v = found
        d = parse_duration(v)
        if d is None:
            errs.append(err_invalid_value(v, join(path, k)))
        elif d < WINDOW_MIN_S or d > WINDOW_MAX_S:
            errs.append(
                err_out_of_bounds(
                    v, _fmt_seconds(WINDOW_MIN_S), _fmt_seconds(WINDOW_MAX_S), join(path, k)
                )
            )
        elif d != int(d):
            errs.append(
                FieldError(join(path, k), "must be specified with at most second precision")
            )
    for keys in (SCALE_DOWN_DELAY, SCALE_TO_ZERO_POD_RETENTION_PERIOD):
        if (found := get(a, keys)) is not None:
            k, v = found
            d = parse_duration(v)
            if d is None:
                errs.append(err_invalid_value(v, join(path, k)))
            elif d < 0 or d > WINDOW_MAX_S:
                errs.append(err_out_of_bounds(v, "0s", _fmt_seconds(WINDOW_MAX_S), join(path, k)))
            elif keys is SCALE_DOWN_DELAY and d != round(d):
                errs.append(
                    FieldError(join(path, k), "must be specified with at most second precision")
                )
    return errs


def has_no_autoscaling_annotations(
    annotations: Any, path: str = "metadata.annotations"
) -> list[FieldError]:
    """Services and Configurations may not carry autoscaling annotations on their own metadata."""
    if not isinstance(annotations, dict):
        return []
    return [
        err_invalid_key_name(
            k,
            path,
            _AUTOSCALING_PLACEMENT,
        )
        for k in sorted(annotations)
        if isinstance(k, str) and k.startswith(GROUP)
    ]


__all__ = [
    "ACTIVATION_SCALE",
    "CLASS",
    "CLASSES",
    "HPA",
    "INITIAL_SCALE",
    "KPA",
    "MAX_SCALE",
    "METRIC",
    "MIN_SCALE",
    "TARGET",
    "TARGET_BURST_CAPACITY",
    "WINDOW",
    "class_of",
    "get",
    "has_no_autoscaling_annotations",
    "parse_duration",
    "validate_annotations",
]
