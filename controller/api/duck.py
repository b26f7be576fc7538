"""Eventing's shared duck types on dicts: KReference, Destination, DeliverySpec, ISO-8601 durations.

Field names, rules and messages follow knative.dev/pkg/apis/duck/v1 (KReference, Destination) and
knative.dev/eventing/pkg/apis/duck/v1 (DeliverySpec). Flint honours `timeout` and `retryAfterMax`
without Knative's feature flags (`delivery-timeout`, `delivery-retryafter`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urljoin, urlsplit

from controller.api.meta import (
    as_int,
    err_disallowed,
    err_generic,
    err_invalid_value,
    err_missing_field,
    join,
)
from controller.api.types import FieldError

# ---------------------------------------------------------------------------------------------
# ISO-8601 durations (what github.com/rickb777/date/period parses for Knative)
# ---------------------------------------------------------------------------------------------

_NUM = r"(\d+(?:[.,]\d+)?)"
_DURATION_RE = re.compile(
    rf"^([-+]?)P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?"
    rf"(?:(T)(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?$"
)
_DAY = 86400.0
# Years and months as rickb777/date/period approximates them: 365.2425 days, a twelfth of that.
_UNIT_SECONDS = (365.2425 * _DAY, 365.2425 * _DAY / 12, 7 * _DAY, _DAY, 3600.0, 60.0, 1.0)


def parse_iso8601_duration(text: Any) -> float | None:
    """Seconds in an ISO-8601 duration (`PT0.2S` → 0.2, `PT1H30M` → 5400, `P1D` → 86400), or
    None when `text` is not one. A leading `-` gives a negative duration; a fraction (`.` or `,`)
    is allowed on the smallest unit given only; years and months are approximate."""
    if not isinstance(text, str):
        return None
    m = _DURATION_RE.match(text.strip())
    if not m:
        return None
    sign, y, mo, w, d, t, h, mi, s = m.groups()
    parts = (y, mo, w, d, h, mi, s)
    given = [i for i, p in enumerate(parts) if p is not None]
    if not given or (t and not any(p is not None for p in (h, mi, s))):
        return None
    if any(("." in p or "," in p) for p in (parts[i] for i in given[:-1]) if p is not None):
        return None
    total = sum(float(p.replace(",", ".")) * _UNIT_SECONDS[i] for i, p in enumerate(parts) if p)
    return -total if sign == "-" else total


# ---------------------------------------------------------------------------------------------
# KReference and Destination (knative.dev/pkg/apis/duck/v1)
# ---------------------------------------------------------------------------------------------

KREFERENCE_FIELDS = frozenset({"kind", "namespace", "name", "apiVersion", "group", "address"})
DESTINATION_FIELDS = frozenset({"ref", "uri", "CACerts", "audience"})


def _unknown(obj: Mapping[str, Any], allowed: frozenset[str], path: str) -> list[FieldError]:
    return [err_disallowed(join(path, k)) for k in sorted(obj) if k not in allowed]


def _object(value: Any, path: str) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """`value` when it is a JSON object; an error when it is something else (None is absent)."""
    if value is None:
        return None, []
    if not isinstance(value, dict):
        return None, [err_invalid_value(value, path, "expected an object")]
    return value, []


def kreference_errors(
    ref: Any,
    path: str,
    *,
    parent_namespace: str = "",
    allow_different_namespace: bool = False,
) -> list[FieldError]:
    """KReference.Validate: `name`, `apiVersion` and `kind` required; a `namespace` other than the
    parent's is refused (`mismatched namespaces`) unless the field allows a different one."""
    obj, errs = _object(ref, path)
    if errs:
        return errs
    obj = obj or {}
    errs = _unknown(obj, KREFERENCE_FIELDS, path)
    for key in sorted(KREFERENCE_FIELDS - {"address"}):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            errs.append(err_invalid_value(value, join(path, key), "expected a string"))
    missing = [join(path, k) for k in ("name", "apiVersion", "kind") if not obj.get(k)]
    if missing:
        errs.append(err_missing_field(*missing))
    namespace = obj.get("namespace")
    if (
        isinstance(namespace, str)
        and namespace
        and not allow_different_namespace
        and parent_namespace
        and namespace != parent_namespace
    ):
        errs.append(
            FieldError(
                join(path, "namespace"),
                f'mismatched namespaces; parent namespace: "{parent_namespace}" does not match'
                f' ref: "{namespace}"',
            )
        )
    return errs


def _absolute(parts: Any) -> bool:
    return bool(parts.scheme)


def destination_errors(dest: Any, path: str, *, parent_namespace: str = "") -> list[FieldError]:
    """Destination.Validate: `ref` and/or `uri`, at least one. With a `ref`, `uri` must be relative
    (it is resolved against the ref's URL); without one it must be absolute with a host."""
    obj, errs = _object(dest, path)
    if errs:
        return errs
    obj = obj or {}
    errs = _unknown(obj, DESTINATION_FIELDS, path)
    ref, uri = obj.get("ref"), obj.get("uri")
    for key in ("CACerts", "audience"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            errs.append(err_invalid_value(obj[key], join(path, key), "expected a string"))
    if not ref and not uri:
        return [*errs, err_generic("expected at least one, got none", join(path, "ref"), join(path, "uri"))]
    parts = None
    if uri:
        if not isinstance(uri, str):
            return [*errs, err_invalid_value(uri, join(path, "uri"), "expected a string")]
        try:
            parts = urlsplit(uri)
            _ = parts.port  # a malformed port raises here
        except ValueError as e:
            return [*errs, err_invalid_value(uri, join(path, "uri"), str(e))]
    if ref:
        errs += kreference_errors(ref, join(path, "ref"), parent_namespace=parent_namespace)
        if parts is not None and _absolute(parts):
            errs.append(
                err_generic(
                    "Absolute URI is not allowed when Ref or [apiVersion, kind, name] exists",
                    join(path, "ref"),
                    join(path, "uri"),
                )
            )
    elif parts is not None and (not _absolute(parts) or not parts.hostname):
        errs.append(
            err_invalid_value(
                uri,
                join(path, "uri"),
                "Relative URI is not allowed when Ref and [apiVersion, kind, name] is absent",
            )
        )
    return errs


def set_destination_defaults(dest: Any, namespace: str) -> None:
    """Destination.SetDefaults: a `ref` without a namespace is in its parent's namespace."""
    if isinstance(dest, dict):
        ref = dest.get("ref")
        if isinstance(ref, dict) and not ref.get("namespace") and namespace:
            ref["namespace"] = namespace


def resolve_uri(ref_url: str, uri: str | None) -> str:
    """The URL a Destination names once its `ref` resolved to `ref_url`: `uri`, when given, is
    resolved against it as RFC 3986 says (Knative's `url.ResolveReference`)."""
    return urljoin(ref_url, uri) if uri else ref_url


# ---------------------------------------------------------------------------------------------
# DeliverySpec (knative.dev/eventing/pkg/apis/duck/v1/delivery_types.go)
# ---------------------------------------------------------------------------------------------

DELIVERY_FIELDS = frozenset(
    {"deadLetterSink", "retry", "timeout", "backoffPolicy", "backoffDelay", "retryAfterMax", "format"}
)
BACKOFF_LINEAR = "linear"
BACKOFF_EXPONENTIAL = "exponential"
BACKOFF_POLICIES = (BACKOFF_LINEAR, BACKOFF_EXPONENTIAL)
FORMAT_JSON = "json"
FORMAT_BINARY = "binary"
DELIVERY_FORMATS = (FORMAT_JSON, FORMAT_BINARY)

DEFAULT_BROKER_DELIVERY: Mapping[str, Any] = MappingProxyType(
    {"retry": 10, "backoffPolicy": BACKOFF_EXPONENTIAL, "backoffDelay": "PT0.2S"}
)
"""Knative's broker default (config-br-defaults): what the dispatcher applies when neither the
trigger nor its broker has a `delivery`. Defaulting leaves `spec.delivery` unset."""


def delivery_errors(delivery: Any, path: str, *, parent_namespace: str = "") -> list[FieldError]:
    """DeliverySpec.Validate: `retry` ≥ 0, a known `backoffPolicy` and `format`, ISO-8601
    `backoffDelay`, `timeout` (> 0) and `retryAfterMax` (≥ 0), `deadLetterSink` a Destination."""
    obj, errs = _object(delivery, path)
    if errs or obj is None:
        return errs
    errs = _unknown(obj, DELIVERY_FIELDS, path)
    if obj.get("deadLetterSink") is not None:
        errs += destination_errors(
            obj["deadLetterSink"], join(path, "deadLetterSink"), parent_namespace=parent_namespace
        )
    if (raw := obj.get("retry")) is not None:
        retry = as_int(raw)
        if retry is None or retry < 0:
            errs.append(err_invalid_value(raw, join(path, "retry")))
    if (raw := obj.get("timeout")) is not None:
        seconds = parse_iso8601_duration(raw)
        if seconds is None or seconds <= 0:
            errs.append(err_invalid_value(raw, join(path, "timeout")))
    if (raw := obj.get("backoffPolicy")) is not None and raw not in BACKOFF_POLICIES:
        errs.append(err_invalid_value(raw, join(path, "backoffPolicy")))
    if (raw := obj.get("backoffDelay")) is not None and parse_iso8601_duration(raw) is None:
        errs.append(err_invalid_value(raw, join(path, "backoffDelay")))
    if (raw := obj.get("format")) is not None and raw not in DELIVERY_FORMATS:
        errs.append(err_invalid_value(raw, join(path, "format")))
    if (raw := obj.get("retryAfterMax")) is not None:
        seconds = parse_iso8601_duration(raw)
        if seconds is None or seconds < 0:
            errs.append(err_invalid_value(raw, join(path, "retryAfterMax")))
    return errs


def set_delivery_defaults(delivery: Any, namespace: str) -> None:
    """DeliverySpec.SetDefaults: the dead-letter sink's ref defaults to the parent's namespace."""
    if isinstance(delivery, dict):
        set_destination_defaults(delivery.get("deadLetterSink"), namespace)


def resolve_delivery(*candidates: Any) -> dict[str, Any]:
    """The delivery that applies: the first non-empty candidate, most specific first (a trigger's,
    then its broker's), else `DEFAULT_BROKER_DELIVERY`. A copy, safe to change."""
    for c in candidates:
        if isinstance(c, dict) and c:
            return copy.deepcopy(c)
    return dict(DEFAULT_BROKER_DELIVERY)


__all__ = [
    "BACKOFF_EXPONENTIAL",
    "BACKOFF_LINEAR",
    "BACKOFF_POLICIES",
    "DEFAULT_BROKER_DELIVERY",
    "DELIVERY_FIELDS",
    "DELIVERY_FORMATS",
    "DESTINATION_FIELDS",
    "FORMAT_BINARY",
    "FORMAT_JSON",
    "KREFERENCE_FIELDS",
    "delivery_errors",
    "destination_errors",
    "kreference_errors",
    "parse_iso8601_duration",
    "resolve_delivery",
    "resolve_uri",
    "set_delivery_defaults",
    "set_destination_defaults",
]
