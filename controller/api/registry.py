"""The served resource types, found by any name a client uses, and admission through their hooks."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

from controller.api import eventing, messaging, serving
from controller.api.meta import err_invalid_value, metadata
from controller.api.naming import GROUP as SERVING_GROUP
from controller.api.naming import VERSION as SERVING_VERSION
from controller.api.types import (
    Defaulter,
    FieldError,
    Invalid,
    Obj,
    ResourceType,
    Validator,
    Warner,
)
from controller.store.base import Kind

Engine = Literal["embedded", "kubernetes"]


class UnknownResource(KeyError):
    """No served resource type answers to that name, group/version/plural or apiVersion/kind."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _serving_types(engine: Engine) -> tuple[ResourceType, ...]:
    embedded = engine == "embedded"
    no_warnings = engine != "embedded"

    def kind(
        kind: str,
        plural: str,
        short: tuple[str, ...],
        default: Defaulter,
        validate: Validator,
        warnings: Warner,
    ) -> ResourceType:
        return ResourceType(
            group=SERVING_GROUP,
            version=SERVING_VERSION,
            kind=kind,
            plural=plural,
            singular=kind.lower(),
            short_names=short,
            default=default,
            validate=validate,
            warnings=(lambda obj: []) if no_warnings else warnings,
        )

    return (
        kind(
            "Service",
            "services",
            ("kservice", "ksvc"),
            serving.default_service,
            partial(serving.validate_service, embedded=embedded),
            serving.service_warnings,
        ),
        kind(
            "Configuration",
            "configurations",
            ("config", "cfg"),
            serving.default_configuration,
            partial(serving.validate_configuration, embedded=embedded),
            serving.configuration_warnings,
        ),
        kind(
            "Revision",
            "revisions",
            ("rev",),
            serving.default_revision,
            partial(serving.validate_revision, embedded=embedded),
            serving.revision_warnings,
        ),
        kind(
            "Route",
            "routes",
            ("rt",),
            serving.default_route,
            serving.validate_route,
            serving.route_warnings,
        ),
    )


SERVING_TYPES: tuple[ResourceType, ...] = _serving_types("embedded")
"""Knative Serving's four kinds as the embedded engine serves them."""

EVENTING_TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        group=eventing.GROUP,
        version=eventing.VERSION,
        kind="Broker",
        plural="brokers",
        singular="broker",
        default=eventing.default_broker,
        validate=eventing.validate_broker,
        warnings=eventing.broker_warnings,
    ),
    ResourceType(
        group=eventing.GROUP,
        version=eventing.VERSION,
        kind="Trigger",
        plural="triggers",
        singular="trigger",
        default=eventing.default_trigger,
        validate=eventing.validate_trigger,
    ),
    ResourceType(
        group=messaging.GROUP,
        version=messaging.VERSION,
        kind="Channel",
        plural="channels",
        singular="channel",
        short_names=("ch",),
        default=messaging.default_channel,
        validate=messaging.validate_channel,
        warnings=messaging.channel_warnings,
    ),
    ResourceType(
        group=messaging.GROUP,
        version=messaging.VERSION,
        kind="InMemoryChannel",
        plural="inmemorychannels",
        singular="inmemorychannel",
        short_names=("imc",),
        default=messaging.default_in_memory_channel,
        validate=messaging.validate_in_memory_channel,
    ),
    ResourceType(
        group=messaging.FLINT_GROUP,
        version=messaging.VERSION,
        kind="RedisChannel",
        plural="redischannels",
        singular="redischannel",
        short_names=("rch",),
        default=messaging.default_redis_channel,
        validate=messaging.validate_redis_channel,
    ),
    ResourceType(
        group=messaging.GROUP,
        version=messaging.VERSION,
        kind="Subscription",
        plural="subscriptions",
        singular="subscription",
        short_names=("sub",),
        default=messaging.default_subscription,
        validate=messaging.validate_subscription,
    ),
)
"""Knative Eventing's eventing.knative.dev/v1 Broker, Trigger and messaging.knative.dev/v1
Channel, InMemoryChannel, Subscription, with Knative's short names (none for Broker, Trigger),
and Flint's messaging.flint.dev/v1 RedisChannel (an InMemoryChannel whose log is a Redis stream)."""

TYPES: tuple[ResourceType, ...] = SERVING_TYPES + EVENTING_TYPES
"""What the API serves: Knative Serving's and Eventing's kinds."""


@dataclass(frozen=True)
class Registry:
    """An immutable set of resource types with lookups; `extend` gives a registry with more."""

    types: tuple[ResourceType, ...]

    def extend(self, more: Iterable[ResourceType]) -> Registry:
        return replace(self, types=self.types + tuple(more))

    def lookup(self, name: str) -> ResourceType:
        """By plural, singular, short name or kind, any case; `plural.group` works too."""
        wanted = name.strip().lower()
        for rt in self.types:
            names = {rt.plural, rt.singular, rt.kind.lower(), *rt.short_names}
            qualified = {f"{n}.{rt.group}" for n in (rt.plural, rt.singular, rt.kind.lower())}
            if wanted in names or wanted in qualified:
                return rt
        raise UnknownResource(
            f'the server doesn\'t have a resource type "{name}"; known: {", ".join(self.known())}'
        )

    def for_group_version_plural(self, group: str, version: str, plural: str) -> ResourceType:
        """The type behind `/apis/{group}/{version}/.../{plural}`."""
        in_group = [rt for rt in self.types if rt.group == group]
        if not in_group:
            raise UnknownResource(f'unknown API group "{group}"')
        in_version = [rt for rt in in_group if rt.version == version]
        if not in_version:
            raise UnknownResource(f'unknown version "{version}" of API group "{group}"')
        for rt in in_version:
            if rt.plural == plural:
                return rt
        raise UnknownResource(
            f'unknown resource "{plural}" in {group}/{version}; known: '
            + ", ".join(rt.plural for rt in in_version)
        )

    def for_api_version_kind(self, api_version: str, kind: str) -> ResourceType:
        """The type of a manifest's `apiVersion` and `kind`."""
        with_version = [rt for rt in self.types if rt.api_version == api_version]
        if not with_version:
            raise UnknownResource(f'unknown apiVersion "{api_version}"')
        for rt in with_version:
            if rt.kind == kind:
                return rt
        raise UnknownResource(
            f'unknown kind "{kind}" in {api_version}; known: '
            + ", ".join(rt.kind for rt in with_version)
        )

    def known(self) -> list[str]:
        """`services (service, kservice, ksvc)` for each type: what `lookup` accepts."""
        return [f"{rt.plural} ({', '.join((rt.singular, *rt.short_names))})" for rt in self.types]


REGISTRY = Registry(TYPES)


def _kubernetes_eventing(rt: ResourceType) -> ResourceType:
    """An eventing type as the Kubernetes engine defaults it (a Channel: a RedisChannel)."""
    if (rt.group, rt.kind) == (messaging.GROUP, "Channel"):
        return replace(rt, default=partial(messaging.default_channel,
                                           template=messaging.KUBERNETES_CHANNEL_TEMPLATE))
    return rt


def registry_for(engine: Engine = "embedded") -> Registry:
    """The embedded engine refuses and warns about fields it cannot honour; on Kubernetes the
    cluster honours them, so only Knative's own rules apply (and a Channel's default template
    is a RedisChannel)."""
    if engine == "embedded":
        return REGISTRY
    return Registry(_serving_types(engine)
                    + tuple(_kubernetes_eventing(rt) for rt in TYPES[len(SERVING_TYPES):]))


def served_kinds(registry: Registry = REGISTRY) -> dict[Kind, tuple[str, str]]:
    """Each store Kind's (version, kind name) as the CRDs in deploy/crds serve them: what the
    Kubernetes store needs to address a custom resource."""
    return {Kind(rt.group, rt.plural): (rt.version, rt.kind) for rt in registry.types}


def lookup(name: str) -> ResourceType:
    return REGISTRY.lookup(name)


def for_group_version_plural(group: str, version: str, plural: str) -> ResourceType:
    return REGISTRY.for_group_version_plural(group, version, plural)


def for_api_version_kind(api_version: str, kind: str) -> ResourceType:
    return REGISTRY.for_api_version_kind(api_version, kind)


def default(rt: ResourceType, new: Obj) -> tuple[Obj, list[FieldError]]:
    """Defaulting (Knative's SetDefaults, the mutating webhook's half): a defaulted copy of `new`,
    with `apiVersion` and `kind` filled when missing, and the errors of an `apiVersion` or `kind`
    that names another type (they are reported with the validation's)."""
    obj = copy.deepcopy(new)
    errs: list[FieldError] = []
    for field, expected in (("apiVersion", rt.api_version), ("kind", rt.kind)):
        value = obj.get(field)
        if value is None or value == "":
            obj[field] = expected
        elif value != expected:
            errs.append(err_invalid_value(value, field, f"expected {expected}"))
    rt.default(obj)
    return obj, errs


def validate(rt: ResourceType, obj: Obj, old: Obj | None = None) -> tuple[list[FieldError], list[str]]:
    """Validation (Knative's Validate, the validating webhook's half) of an already defaulted
    `obj` against `old` (None on create): its errors, and the warnings for the client (none
    when there are errors)."""
    errs = rt.validate(obj, old)
    return errs, ([] if errs else rt.warnings(obj))


def object_name(obj: Obj) -> str:
    """How a refusal names the object: its name, else its generateName."""
    meta = metadata(obj)
    return str(meta.get("name") or meta.get("generateName") or "")


def admit(rt: ResourceType, new: Obj, old: Obj | None = None) -> tuple[Obj, list[str]]:
    """Defaults a copy of `new`, validates it against `old` (None on create) and returns it with
    the warnings for the client. Raises `Invalid` carrying every FieldError (the embedded API's
    admission: `default` then `validate`)."""
    obj, errs = default(rt, new)
    more, warnings = validate(rt, obj, old)
    errs += more
    if errs:
        raise Invalid(rt.kind, object_name(obj), errs)
    return obj, warnings


def invalid_status(rt: ResourceType, name: str, errors: list[FieldError]) -> tuple[str, Obj]:
    """A refusal in Kubernetes' words, the same for the embedded API's 422 and the webhook's
    denial: the message (`Service.serving.knative.dev "hello" is invalid: <error>: <path>`, a
    bracketed list for several) and the Status `details` with one cause per field."""
    qualified = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    texts = [str(fe) for fe in errors]
    detail = texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]" if texts else ""
    causes = [{"reason": "FieldValueInvalid", "message": fe.message, "field": fe.path} for fe in errors]
    details: Obj = {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes}
    return f'{qualified} "{name}" is invalid: {detail}', details
