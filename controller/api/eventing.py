"""Knative eventing.knative.dev/v1 Broker and Trigger on dicts: defaults, validation, warnings.

Rules and messages follow knative.dev/eventing/pkg/apis/eventing/v1 (broker_*.go, trigger_*.go);
field paths are the manifest's JSON paths. Status is the reconcilers' to write; its shape is named
here (`status.address.url`, the condition types) so every component agrees.
"""

from __future__ import annotations

import json
import re
from typing import Any

from controller.api.duck import (
    delivery_errors,
    destination_errors,
    kreference_errors,
    set_delivery_defaults,
    set_destination_defaults,
)
from controller.api.meta import (
    DEFAULT_NAMESPACE,
    as_dict,
    err_disallowed,
    err_generic,
    err_invalid_key_name,
    err_invalid_value,
    err_missing_field,
    index,
    join,
    metadata,
    set_default_namespace,
    validate_object_metadata,
)
from controller.api.types import FieldError, Obj

GROUP = "eventing.knative.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"

BROKER_CLASS_ANNOTATION = "eventing.knative.dev/broker.class"
FLINT_BROKER_CLASS = "Flint"
"""The default of `eventing.knative.dev/broker.class`: a broker on the engine's default backend
(`default_backend`)."""
FLINT_SQLITE_BROKER_CLASS = "FlintSQLite"
"""A broker whose log is a SQLite file in the state dir (one machine), whatever the engine."""
FLINT_REDIS_BROKER_CLASS = "FlintRedis"
"""A broker whose log is a Redis stream (shared by every gateway and dispatcher); Ready=False
(`RedisNotConfigured`) on a Flint without Redis."""
FLINT_BROKER_CLASSES = (FLINT_BROKER_CLASS, FLINT_SQLITE_BROKER_CLASS, FLINT_REDIS_BROKER_CLASS)
"""The broker classes Flint reconciles. A broker's class is immutable, so configuring Redis later
moves no existing broker."""
BACKEND_SQLITE = "sqlite"
BACKEND_REDIS = "redis"
ENGINE_EMBEDDED = "embedded"
ENGINE_KUBERNETES = "kubernetes"
_DEFAULT_BACKENDS = {ENGINE_EMBEDDED: BACKEND_SQLITE, ENGINE_KUBERNETES: BACKEND_REDIS}
BACKEND_ANNOTATION = "eventing.flint.dev/backend"
"""`status.annotations` key saying which backend holds a broker's log (`sqlite` or `redis`)."""
STREAM_ANNOTATION = "eventing.flint.dev/stream"
"""`status.annotations` key of a Redis-backed broker or RedisChannel: its stream, once the
controller created it (`controller.redis_logs`); the gateways get the broker only then."""
CONSUMER_GROUP_ANNOTATION = "eventing.flint.dev/consumer-group"
"""`status.annotations` key of a Trigger or Subscription of a Redis-backed log: the stream on which
the controller created its consumer group (named by its uid); it enters the dispatch plan only
then."""
BROKER_LABEL = "eventing.knative.dev/broker"
"""Label a Trigger carries with its broker's name (trigger_defaults.go setLabels)."""
DEPENDENCY_ANNOTATION = "knative.dev/dependency"
INJECTION_ANNOTATION = "eventing.knative.dev/injection"
DELIVERY_ORDER_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"
DELIVERY_ORDERED = "ordered"
DELIVERY_UNORDERED = "unordered"

# Condition types (broker_lifecycle.go, trigger_lifecycle.go); each set also has `Ready`.
CONDITION_READY = "Ready"
BROKER_CONDITION_INGRESS = "IngressReady"
BROKER_CONDITION_TRIGGER_CHANNEL = "TriggerChannelReady"
BROKER_CONDITION_FILTER = "FilterReady"
BROKER_CONDITION_ADDRESSABLE = "Addressable"
BROKER_CONDITION_DEAD_LETTER_SINK_RESOLVED = "DeadLetterSinkResolved"
BROKER_CONDITIONS = (
    BROKER_CONDITION_INGRESS,
    BROKER_CONDITION_TRIGGER_CHANNEL,
    BROKER_CONDITION_FILTER,
    BROKER_CONDITION_ADDRESSABLE,
    BROKER_CONDITION_DEAD_LETTER_SINK_RESOLVED,
)
"""Dependent conditions of a Broker's `Ready`."""
BROKER_CONDITION_DURABLE = "Durable"
"""A Redis broker's: does its Redis keep what it acknowledged over a restart (append-only file)?
Informative (severity Info), not a dependent of `Ready`."""
TRIGGER_CONDITION_BROKER = "BrokerReady"
TRIGGER_CONDITION_SUBSCRIBED = "SubscriptionReady"
TRIGGER_CONDITION_DEPENDENCY = "DependencyReady"
TRIGGER_CONDITION_SUBSCRIBER_RESOLVED = "SubscriberResolved"
TRIGGER_CONDITION_DEAD_LETTER_SINK_RESOLVED = "DeadLetterSinkResolved"
TRIGGER_CONDITIONS = (
    TRIGGER_CONDITION_BROKER,
    TRIGGER_CONDITION_SUBSCRIBED,
    TRIGGER_CONDITION_DEPENDENCY,
    TRIGGER_CONDITION_SUBSCRIBER_RESOLVED,
    TRIGGER_CONDITION_DEAD_LETTER_SINK_RESOLVED,
)
"""Dependent conditions of a Trigger's `Ready`; its status also has `subscriberUri` and
`deadLetterSinkUri`, a Broker's `address.url` and `deadLetterSinkUri`."""

BROKER_SPEC_FIELDS = ("config", "delivery")
TRIGGER_SPEC_FIELDS = ("broker", "filter", "filters", "subscriber", "delivery")
FILTER_DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "cesql")

ATTRIBUTE_NAME_RE = re.compile(r"^[a-z][a-z0-9]*$")
"""Knative's rule for filter attribute names: lowercase alphanumeric, starting with a letter."""
_ATTRIBUTE_NAME_MSG = "Attribute name must start with a letter and can only contain lowercase alphanumeric"


def broker_address_url(namespace: str, name: str, domain: str = "localhost", port: int | None = None) -> str:
    """`status.address.url` of a broker: `http://broker-ingress.{domain}[:port]/{namespace}/{name}`."""
    host = f"broker-ingress.{domain}" + (f":{port}" if port else "")
    return f"http://{host}/{namespace}/{name}"


def broker_class(obj: Obj) -> str:
    """The broker's class annotation (after defaulting, `Flint` unless the user chose another)."""
    return str(as_dict(metadata(obj).get("annotations")).get(BROKER_CLASS_ANNOTATION) or "")


def is_flint_broker(obj: Obj) -> bool:
    """Is the broker of a class Flint reconciles (`FLINT_BROKER_CLASSES`)?"""
    return broker_class(obj) in FLINT_BROKER_CLASSES


def default_backend(engine: str = ENGINE_EMBEDDED) -> str:
    """The backend of a broker of class `Flint` on `engine`: SQLite on the embedded engine, Redis
    on Kubernetes (whose gateways and dispatchers run on several machines)."""
    try:
        return _DEFAULT_BACKENDS[engine]
    except KeyError:
        raise ValueError(f"unknown engine {engine!r} (known: {', '.join(_DEFAULT_BACKENDS)})") from None


def status_annotation(obj: Obj, key: str) -> str:
    """`status.annotations[key]` of `obj` ("" when it has none)."""
    status = as_dict(obj.get("status"))
    return str(as_dict(status.get("annotations")).get(key) or "")


def broker_backend(obj: Obj, engine: str = ENGINE_EMBEDDED) -> str | None:
    """`sqlite` or `redis` for a broker of Flint's classes on `engine`; None for another class."""
    cls = broker_class(obj)
    if cls == FLINT_SQLITE_BROKER_CLASS:
        return BACKEND_SQLITE
    if cls == FLINT_REDIS_BROKER_CLASS:
        return BACKEND_REDIS
    if cls == FLINT_BROKER_CLASS:
        return default_backend(engine)
    return None


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _namespace(obj: Obj) -> str:
    return str(metadata(obj).get("namespace") or DEFAULT_NAMESPACE)


def _spec(obj: Obj, allowed: tuple[str, ...]) -> tuple[dict[str, Any], list[FieldError]]:
    raw = obj.get("spec")
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [err_invalid_value(raw, "spec", "expected an object")]
    return raw, [err_disallowed(join("spec", k)) for k in sorted(raw) if k not in allowed]


def _immutable(path: str, old: Any, new: Any) -> FieldError:
    return FieldError(
        path, f"Immutable fields changed (-old +new); -: {json.dumps(old)}, +: {json.dumps(new)}"
    )


def _annotations(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    ann = meta.get("annotations")
    if ann is None:
        ann = meta["annotations"] = {}
    return ann if isinstance(ann, dict) else {}


# ---------------------------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------------------------


def default_broker(obj: Obj) -> None:
    """Broker.SetDefaults: namespace, class annotation `Flint` when unset, the namespace of the
    dead-letter sink's ref. `spec.delivery` stays unset: the dispatcher applies
    `DEFAULT_BROKER_DELIVERY`."""
    set_default_namespace(obj)
    annotations = _annotations(obj)
    if not annotations.get(BROKER_CLASS_ANNOTATION):
        annotations[BROKER_CLASS_ANNOTATION] = FLINT_BROKER_CLASS
    spec = obj.get("spec")
    if spec is None:
        spec = obj["spec"] = {}
    if isinstance(spec, dict):
        config = spec.get("config")
        if isinstance(config, dict) and not config.get("namespace"):
            config["namespace"] = _namespace(obj)
        set_delivery_defaults(spec.get("delivery"), _namespace(obj))


def validate_broker(new: Obj, old: Obj | None) -> list[FieldError]:
    """Broker.Validate: `spec.config` a KReference (any namespace), `spec.delivery`; on update the
    class annotation and `spec.config` (set, changed or removed) may not change."""
    ns = _namespace(new)
    errs = validate_object_metadata(new, name_rule="dns1123-subdomain")
    spec, spec_errs = _spec(new, BROKER_SPEC_FIELDS)
    errs += spec_errs
    if spec.get("config") is not None:
        errs += kreference_errors(
            spec["config"], "spec.config", parent_namespace=ns, allow_different_namespace=True
        )
    errs += delivery_errors(spec.get("delivery"), "spec.delivery", parent_namespace=ns)
    if old is not None:
        before = as_dict(metadata(old).get("annotations")).get(BROKER_CLASS_ANNOTATION)
        after = as_dict(metadata(new).get("annotations")).get(BROKER_CLASS_ANNOTATION)
        if before != after:
            errs.append(_immutable(join("metadata.annotations", BROKER_CLASS_ANNOTATION), before, after))
        config_before = as_dict(old.get("spec")).get("config")
        if config_before != spec.get("config"):
            errs.append(_immutable("spec.config", config_before, spec.get("config")))
    return errs


def broker_warnings(obj: Obj) -> list[str]:
    """A broker of another class is stored but not reconciled by Flint."""
    cls = broker_class(obj)
    if cls and cls not in FLINT_BROKER_CLASSES:
        return [
            f'metadata.annotations.{BROKER_CLASS_ANNOTATION}: broker class "{cls}" is not'
            f' reconciled by Flint (its classes are {", ".join(map(json.dumps, FLINT_BROKER_CLASSES))})'
        ]
    return []


# ---------------------------------------------------------------------------------------------
# Trigger filters
# ---------------------------------------------------------------------------------------------


def _key_path(path: str, key: str) -> str:
    """Knative's `ViaKey`: `spec.filter.attributes[type]`."""
    return f"{path}[{key}]"


def _string_map(value: Any, path: str) -> tuple[dict[str, Any], list[FieldError]]:
    if value is None:
        return {}, []
    if not isinstance(value, dict):
        return {}, [err_invalid_value(value, path, "expected a map of strings")]
    return value, [
        err_invalid_value(v, _key_path(path, str(k)), "expected a string")
        for k, v in value.items()
        if not isinstance(v, str)
    ]


def attribute_name_errors(attrs: dict[str, Any], path: str) -> list[FieldError]:
    """ValidateAttributesNames: each key a lowercase alphanumeric name starting with a letter."""
    return [
        err_invalid_key_name(k, _key_path(path, k), _ATTRIBUTE_NAME_MSG)
        for k in sorted(attrs)
        if not ATTRIBUTE_NAME_RE.match(k)
    ]


def attribute_filter_errors(value: Any, path: str) -> list[FieldError]:
    """`spec.filter`: only `attributes`, a map of attribute name → value (`""` = any value)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [err_invalid_value(value, path, "expected an object")]
    errs = [err_disallowed(join(path, k)) for k in sorted(value) if k != "attributes"]
    attrs, map_errs = _string_map(value.get("attributes"), join(path, "attributes"))
    return errs + map_errs + attribute_name_errors(attrs, join(path, "attributes"))


def _single_attribute_map_errors(value: Any, path: str) -> list[FieldError]:
    """ValidateSingleAttributeMap: `exact`, `prefix`, `suffix` hold exactly one attribute."""
    attrs, errs = _string_map(value, path)
    if errs or not attrs:
        return errs
    if len(attrs) != 1:
        return [err_generic("Multiple items found, can have only one key-value", path)]
    return attribute_name_errors(attrs, path)


def _filter_list_errors(value: Any, path: str) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [err_invalid_value(value, path, "expected a list")]
    errs: list[FieldError] = []
    for i, f in enumerate(value):
        errs += subscriptions_api_filter_errors(f, index(path, i))
    return errs


def subscriptions_api_filter_errors(value: Any, path: str) -> list[FieldError]:
    """ValidateSubscriptionAPIFilter: one dialect per filter (`exact`, `prefix`, `suffix`, `all`,
    `any`, `not`, `cesql`), each valid; `{}` matches every event."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [err_invalid_value(value, path, "expected an object")]
    errs = [err_disallowed(join(path, k)) for k in sorted(value) if k not in FILTER_DIALECTS]
    set_dialects = [
        d for d in FILTER_DIALECTS if (value.get(d) is not None if d == "not" else bool(value.get(d)))
    ]
    if len(set_dialects) > 1:
        errs.append(err_generic("multiple dialects found, filters can have only one dialect set", path))
    for d in ("exact", "prefix", "suffix"):
        errs += _single_attribute_map_errors(value.get(d), join(path, d))
    for d in ("all", "any"):
        errs += _filter_list_errors(value.get(d), join(path, d))
    errs += subscriptions_api_filter_errors(value.get("not"), join(path, "not"))
    cesql = value.get("cesql")
    if cesql is not None and not isinstance(cesql, str):
        errs.append(err_invalid_value(cesql, join(path, "cesql"), "expected a string"))
    return errs


def filters_errors(value: Any, path: str = "spec.filters") -> list[FieldError]:
    """ValidateSubscriptionAPIFiltersList: `spec.filters`, every filter of which must match."""
    return _filter_list_errors(value, path)


# ---------------------------------------------------------------------------------------------
# Trigger
# ---------------------------------------------------------------------------------------------


def default_trigger(obj: Obj) -> None:
    """Trigger.SetDefaults: namespace, `spec.filter` `{}` (matches everything), the subscriber's and
    dead-letter sink's ref namespaces, and the `eventing.knative.dev/broker` label."""
    set_default_namespace(obj)
    ns = _namespace(obj)
    spec = obj.get("spec")
    if spec is None:
        spec = obj["spec"] = {}
    if not isinstance(spec, dict):
        return
    if spec.get("filter") is None:
        spec["filter"] = {}
    set_destination_defaults(spec.get("subscriber"), ns)
    set_delivery_defaults(spec.get("delivery"), ns)
    broker = spec.get("broker")
    if isinstance(broker, str) and broker:
        meta = obj["metadata"]
        labels = meta.get("labels")
        if labels is None:
            labels = meta["labels"] = {}
        if isinstance(labels, dict):
            labels[BROKER_LABEL] = broker


def _dependency_errors(value: Any, path: str, namespace: str) -> list[FieldError]:
    """validateDependencyAnnotation: a JSON ObjectReference in the trigger's namespace."""
    try:
        ref = json.loads(value) if isinstance(value, str) else None
    except ValueError as e:
        ref, detail = None, str(e)
    else:
        detail = "expected a JSON object"
    if not isinstance(ref, dict):
        return [
            FieldError(
                path,
                f"The provided annotation was not a corev1.ObjectReference: {json.dumps(value)}; {detail}",
            )
        ]
    errs: list[FieldError] = []
    if ref.get("namespace") and ref.get("namespace") != namespace:
        errs.append(
            FieldError(
                join(path, "namespace"),
                f'Namespace must be empty or equal to the trigger namespace "{namespace}"',
            )
        )
    missing = [join(path, k) for k in ("kind", "name", "apiVersion") if not ref.get(k)]
    if missing:
        errs.append(err_missing_field(*missing))
    return errs


def _trigger_annotation_errors(obj: Obj, spec: dict[str, Any]) -> list[FieldError]:
    annotations = as_dict(metadata(obj).get("annotations"))
    errs: list[FieldError] = []
    if DEPENDENCY_ANNOTATION in annotations:
        errs += _dependency_errors(
            annotations[DEPENDENCY_ANNOTATION],
            f"metadata.annotations[{DEPENDENCY_ANNOTATION}]",
            _namespace(obj),
        )
    if INJECTION_ANNOTATION in annotations:
        value = annotations[INJECTION_ANNOTATION]
        path = f"metadata.annotations[{INJECTION_ANNOTATION}]"
        if value not in ("enabled", "disabled"):
            errs.append(
                FieldError(
                    path,
                    'The provided injection annotation value can only be "enabled" or "disabled",'
                    f" not {json.dumps(value)}",
                )
            )
        elif spec.get("broker") != "default":
            errs.append(
                FieldError(
                    path,
                    "The provided injection annotation is only used for default broker, but"
                    f" non-default broker specified here: {json.dumps(spec.get('broker'))}",
                )
            )
    if DELIVERY_ORDER_ANNOTATION in annotations:
        value = annotations[DELIVERY_ORDER_ANNOTATION]
        if value not in (DELIVERY_ORDERED, DELIVERY_UNORDERED):
            errs.append(
                err_invalid_value(
                    value,
                    join("metadata.annotations", DELIVERY_ORDER_ANNOTATION),
                    f"expected {DELIVERY_ORDERED} or {DELIVERY_UNORDERED}",
                )
            )
    return errs


def validate_trigger(new: Obj, old: Obj | None) -> list[FieldError]:
    """Trigger.Validate: `spec.broker` required (immutable), `spec.filter.attributes`,
    `spec.filters`, `spec.subscriber` (a Destination), `spec.delivery`, and the annotations."""
    ns = _namespace(new)
    errs = validate_object_metadata(new, name_rule="dns1123-subdomain")
    spec, spec_errs = _spec(new, TRIGGER_SPEC_FIELDS)
    errs += spec_errs
    broker = spec.get("broker")
    if not broker:
        errs.append(err_missing_field("spec.broker"))
    elif not isinstance(broker, str):
        errs.append(err_invalid_value(broker, "spec.broker", "expected a string"))
    errs += attribute_filter_errors(spec.get("filter"), "spec.filter")
    errs += filters_errors(spec.get("filters"), "spec.filters")
    errs += destination_errors(spec.get("subscriber"), "spec.subscriber", parent_namespace=ns)
    errs += delivery_errors(spec.get("delivery"), "spec.delivery", parent_namespace=ns)
    errs += _trigger_annotation_errors(new, spec)
    if old is not None:
        before = as_dict(old.get("spec")).get("broker")
        if before != broker:
            errs.append(_immutable("spec.broker", before, broker))
    return errs


__all__ = [
    "API_VERSION",
    "ATTRIBUTE_NAME_RE",
    "BACKEND_ANNOTATION",
    "BACKEND_REDIS",
    "BACKEND_SQLITE",
    "BROKER_CLASS_ANNOTATION",
    "BROKER_CONDITIONS",
    "BROKER_CONDITION_DURABLE",
    "BROKER_LABEL",
    "CONDITION_READY",
    "CONSUMER_GROUP_ANNOTATION",
    "DELIVERY_ORDER_ANNOTATION",
    "DEPENDENCY_ANNOTATION",
    "ENGINE_EMBEDDED",
    "ENGINE_KUBERNETES",
    "FILTER_DIALECTS",
    "FLINT_BROKER_CLASS",
    "FLINT_BROKER_CLASSES",
    "FLINT_REDIS_BROKER_CLASS",
    "FLINT_SQLITE_BROKER_CLASS",
    "GROUP",
    "INJECTION_ANNOTATION",
    "STREAM_ANNOTATION",
    "TRIGGER_CONDITIONS",
    "VERSION",
    "attribute_filter_errors",
    "broker_address_url",
    "broker_backend",
    "broker_class",
    "broker_warnings",
    "default_backend",
    "default_broker",
    "default_trigger",
    "filters_errors",
    "is_flint_broker",
    "status_annotation",
    "subscriptions_api_filter_errors",
    "validate_broker",
    "validate_trigger",
]
