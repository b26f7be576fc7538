"""AdmissionReview (`admission.k8s.io/v1`) in and out, and the two answers (pure: values in, values
out): defaulting as an RFC 6902 JSONPatch, validation as allowed or a 422 `Status` in the embedded
API's words (`controller.api.registry.invalid_status`), warnings in `response.warnings`."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import jsonpatch
import orjson

from controller.api.registry import Registry, default, invalid_status, object_name, validate
from controller.api.types import Obj, ResourceType

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class MalformedReview(ValueError):
    """The body is no AdmissionReview this webhook can answer; the message names the field."""


@dataclass(frozen=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class AdmissionRequest:
    """What the API server asks about: one write of one object."""

    uid: str
    kind: GroupVersionKind
    resource: tuple[str, str, str]
    """group, version, resource (plural)."""
    sub_resource: str
    operation: str
    name: str
    namespace: str
    object: Obj | None
    old_object: Obj | None
    dry_run: bool


def _string(value: Any, path: str, *, empty: bool = False, missing: bool = False) -> str:
    """`value` as a string; `empty`: "" is fine (the core group), `missing`: absent is ""."""
    if value is None and missing:
        return ""
    if not isinstance(value, str) or (not value and not empty):
        raise MalformedReview(f"{path}: expected a {'' if empty else 'non-empty '}string, got {value!r}")
    return value


def _object(value: Any, path: str) -> Obj | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MalformedReview(f"{path}: expected an object or null, got {type(value).__name__}")
    return value


def decode(body: bytes) -> AdmissionRequest:
    """The request of an AdmissionReview body; `MalformedReview` names what is wrong."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise MalformedReview(f"the body is not JSON: {e}") from None
    if not isinstance(review, dict):
        raise MalformedReview("the body must be a JSON object (an AdmissionReview)")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise MalformedReview(
            f"apiVersion, kind: expected {API_VERSION} {KIND}, got "
            f"{review.get('apiVersion')!r} {review.get('kind')!r} (admissionReviewVersions must be [v1])")
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("request: expected an object")
    kind = request.get("kind")
    if not isinstance(kind, dict):
        raise MalformedReview("request.kind: expected an object with group, version and kind")
    resource = request.get("resource")
    if not isinstance(resource, dict):
        raise MalformedReview("request.resource: expected an object with group, version and resource")
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise MalformedReview(
            f"request.operation: expected one of {', '.join(OPERATIONS)}, got {operation!r}")
    dry_run = request.get("dryRun", False)
    if not isinstance(dry_run, bool) and dry_run is not None:
        raise MalformedReview(f"request.dryRun: expected a boolean, got {dry_run!r}")
    obj = _object(request.get("object"), "request.object")
    if obj is None and operation in ("CREATE", "UPDATE"):
        raise MalformedReview(f"request.object: required on {operation}")
    old = _object(request.get("oldObject"), "request.oldObject")
    if old is None and operation == "UPDATE":
        raise MalformedReview("request.oldObject: required on UPDATE")
    return AdmissionRequest(
        uid=_string(request.get("uid"), "request.uid"),
        kind=GroupVersionKind(_string(kind.get("group"), "request.kind.group", empty=True),
                              _string(kind.get("version"), "request.kind.version"),
                              _string(kind.get("kind"), "request.kind.kind")),
        resource=(_string(resource.get("group"), "request.resource.group", empty=True),
                  _string(resource.get("version"), "request.resource.version"),
                  _string(resource.get("resource"), "request.resource.resource")),
        sub_resource=_string(request.get("subResource"), "request.subResource", empty=True, missing=True),
        operation=operation,
        name=_string(request.get("name"), "request.name", empty=True, missing=True),
        namespace=_string(request.get("namespace"), "request.namespace", empty=True, missing=True),
        object=obj, old_object=old, dry_run=bool(dry_run))


def _served(registry: Registry, request: AdmissionRequest) -> ResourceType | None:
    """The registry's type of the request's object, or None (another kind, a subresource, a
    deletion: this webhook has nothing to say about it)."""
    if request.sub_resource or request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return None
    for rt in registry.types:
        if (rt.group, rt.version, rt.kind) == (request.kind.group, request.kind.version, request.kind.kind):
            return rt
    return None


def _review(response: Obj) -> Obj:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def allowed(uid: str, warnings: list[str] | None = None) -> Obj:
    """An unconditional yes (with the warnings for the client, if any)."""
    return _review({"uid": uid, "allowed": True, **({"warnings": warnings} if warnings else {})})


def defaulting(registry: Registry, request: AdmissionRequest) -> Obj:
    """The mutating answer: allowed, with the JSONPatch from the object as sent to the object as
    the registry defaults it (no patch when nothing changes). Type errors are the validation's."""
    rt = _served(registry, request)
    if rt is None or request.object is None:
        return allowed(request.uid)
    defaulted, _ = default(rt, request.object)
    patch = jsonpatch.make_patch(request.object, defaulted).patch
    if not patch:
        return allowed(request.uid)
    return _review({"uid": request.uid, "allowed": True, "patchType": "JSONPatch",
                    "patch": base64.b64encode(orjson.dumps(patch)).decode("ascii")})


def validation(registry: Registry, request: AdmissionRequest) -> Obj:
    """The validating answer: allowed with the registry's warnings, or denied with a 422 `Status`
    carrying the embedded API's message and one cause per field (the object is validated as the
    API server would store it, against the old one on UPDATE)."""
    rt = _served(registry, request)
    if rt is None or request.object is None:
        return allowed(request.uid)
    _, errors = default(rt, request.object)  # only a wrong apiVersion or kind: nothing on a cluster
    old = request.old_object if request.operation == "UPDATE" else None
    more, warnings = validate(rt, request.object, old)
    errors += more
    if not errors:
        return allowed(request.uid, warnings)
    message, details = invalid_status(rt, object_name(request.object) or request.name, errors)
    return _review({"uid": request.uid, "allowed": False, "status": {
        "metadata": {}, "status": "Failure", "code": 422, "reason": "Invalid", "message": message,
        "details": details}})
