"""The admission webhook's pure half: AdmissionReview decoding, the defaulting JSONPatch and the
validation verdict, against the registry's own admission (the embedded API's)."""

from __future__ import annotations

import base64
import copy
from typing import Any

import jsonpatch
import orjson
import pytest

from controller.api.registry import admit, default, invalid_status, registry_for, validate
from controller.api.types import Invalid
from controller.webhook.review import MalformedReview, decode, defaulting, validation

REGISTRY = registry_for("kubernetes")
SERVICE_GVK = {"group": "serving.knative.dev", "version": "v1", "kind": "Service"}
SERVICE_GVR = {"group": "serving.knative.dev", "version": "v1", "resource": "services"}


def ksvc(name: str = "hello", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "uid": "u-1", "resourceVersion": "7"},
            "spec": {"template": {"spec": {"containers": [{"image": "example.com/app"}], **spec}}}}


def review(obj: Any, *, operation: str = "CREATE", old: Any = None, kind: Any = None,
           resource: Any = None, **extra: Any) -> dict[str, Any]:
    request = {"uid": "req-1", "kind": kind or SERVICE_GVK, "resource": resource or SERVICE_GVR,
               "operation": operation, "name": "hello", "namespace": "default",
               "object": obj, "oldObject": old, "dryRun": False, **extra}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def body(value: Any) -> bytes:
    return orjson.dumps(value)


def patched(obj: dict[str, Any], answer: dict[str, Any]) -> Any:
    response = answer["response"]
    assert response["patchType"] == "JSONPatch"
    ops = orjson.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(obj, ops)


# -- the registry's split ----------------------------------------------------------------------


def test_admit_is_default_then_validate() -> None:
    rt = REGISTRY.lookup("ksvc")
    obj, type_errors = default(rt, ksvc())
    assert type_errors == []
    assert obj == admit(rt, ksvc())[0]
    assert validate(rt, obj) == ([], [])
    bad = ksvc(containerConcurrency=2000)
    defaulted, _ = default(rt, bad)
    errors, warnings = validate(rt, defaulted)
    assert [e.path for e in errors] == ["spec.template.spec.containerConcurrency"] and warnings == []
    with pytest.raises(Invalid) as refused:
        admit(rt, bad)
    assert refused.value.errors == errors


def test_default_reports_a_wrong_kind_and_leaves_the_input_alone() -> None:
    rt = REGISTRY.lookup("ksvc")
    sent = {**ksvc(), "kind": "Configuration"}
    before = copy.deepcopy(sent)
    obj, errors = default(rt, sent)
    assert sent == before and obj is not sent
    assert [e.path for e in errors] == ["kind"]


def test_invalid_status_words_one_and_several_errors() -> None:
    rt = REGISTRY.lookup("ksvc")
    with pytest.raises(Invalid) as refused:
        admit(rt, ksvc(containerConcurrency=-1, timeoutSeconds=-5))
    message, details = invalid_status(rt, "hello", refused.value.errors)
    assert message.startswith('Service.serving.knative.dev "hello" is invalid: [')
    assert details["kind"] == "Service" and details["group"] == "serving.knative.dev"
    assert [c["field"] for c in details["causes"]] == [e.path for e in refused.value.errors]
    one, _ = invalid_status(rt, "hello", refused.value.errors[:1])
    assert one == f'Service.serving.knative.dev "hello" is invalid: {refused.value.errors[0]}'


# -- decoding ----------------------------------------------------------------------------------


def test_decode_reads_every_field() -> None:
    old = ksvc()
    request = decode(body(review(ksvc(), operation="UPDATE", old=old, dryRun=True, subResource="")))
    assert request.uid == "req-1" and request.operation == "UPDATE" and request.dry_run is True
    assert request.kind.api_version == "serving.knative.dev/v1" and request.kind.kind == "Service"
    assert request.resource == ("serving.knative.dev", "v1", "services")
    assert request.old_object == old and request.namespace == "default" and request.name == "hello"


def test_decode_takes_the_core_group_and_a_deletion_without_object() -> None:
    request = decode(body(review(None, operation="DELETE", old={"metadata": {}},
                                 kind={"group": "", "version": "v1", "kind": "ConfigMap"},
                                 resource={"group": "", "version": "v1", "resource": "configmaps"})))
    assert request.kind.group == "" and request.object is None


@pytest.mark.parametrize(("raw", "names"), [
    (b"{not json", "not JSON"),
    (b"[]", "JSON object"),
    (body({**review(ksvc()), "apiVersion": "admission.k8s.io/v1beta1"}), "admissionReviewVersions"),
    (body({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}), "request:"),
    (body(review(ksvc(), uid="")), "request.uid"),
    (body(review(ksvc(), kind="Service")), "request.kind:"),
    (body(review(ksvc(), kind={"group": "serving.knative.dev", "version": "v1"})), "request.kind.kind"),
    (body(review(ksvc(), resource={"group": "x", "version": 1, "resource": "s"})),
     "request.resource.version"),
    (body(review(ksvc(), operation="PATCH")), "request.operation"),
    (body(review(None)), "request.object: required on CREATE"),
    (body(review([1])), "request.object: expected an object"),
    (body(review(ksvc(), operation="UPDATE")), "request.oldObject: required on UPDATE"),
    (body(review(ksvc(), dryRun="yes")), "request.dryRun"),
    (body(review(ksvc(), namespace=3)), "request.namespace"),
])
def test_a_malformed_review_names_what_is_wrong(raw: bytes, names: str) -> None:
    with pytest.raises(MalformedReview, match=names.replace("(", r"\(")):
        decode(raw)


# -- defaulting --------------------------------------------------------------------------------


def test_defaulting_patches_the_object_into_what_the_embedded_api_stores() -> None:
    sent = ksvc()
    answer = defaulting(REGISTRY, decode(body(review(sent))))
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "req-1" and answer["response"]["allowed"] is True
    out = patched(sent, answer)
    assert out == admit(REGISTRY.lookup("ksvc"), sent)[0]
    template = out["spec"]["template"]["spec"]
    assert template["containerConcurrency"] == 0 and template["timeoutSeconds"] == 300
    assert out["spec"]["traffic"] == [{"percent": 100, "latestRevision": True}]
    assert out["metadata"] == sent["metadata"]  # the server's fields are left alone


def test_defaulting_an_already_defaulted_object_sends_no_patch() -> None:
    defaulted, _ = admit(REGISTRY.lookup("ksvc"), ksvc())
    response = defaulting(REGISTRY, decode(body(review(defaulted))))["response"]
    assert response == {"uid": "req-1", "allowed": True}


@pytest.mark.parametrize("request_", [
    review({"metadata": {"name": "x"}}, kind={"group": "", "version": "v1", "kind": "ConfigMap"},
           resource={"group": "", "version": "v1", "resource": "configmaps"}),
    review(ksvc(), kind={"group": "serving.knative.dev", "version": "v2", "kind": "Service"}),
    review(ksvc(containerConcurrency=-1), subResource="status", operation="UPDATE", old=ksvc()),
    review(None, operation="DELETE", old=ksvc()),
])
def test_what_the_registry_does_not_serve_is_allowed_unchanged(request_: dict[str, Any]) -> None:
    request = decode(body(request_))
    for answer in (defaulting, validation):
        assert answer(REGISTRY, request)["response"] == {"uid": "req-1", "allowed": True}


# -- validation --------------------------------------------------------------------------------


def test_validation_denies_with_the_embedded_apis_message_and_causes() -> None:
    sent = ksvc(containerConcurrency=2000)
    sent["spec"]["template"]["spec"]["containers"][0]["image"] = ""
    rt = REGISTRY.lookup("ksvc")
    mutated, _ = default(rt, sent)  # what the API server sends once the defaulting webhook patched it
    response = validation(REGISTRY, decode(body(review(mutated))))["response"]
    with pytest.raises(Invalid) as refused:
        admit(rt, sent)
    message, details = invalid_status(rt, "hello", refused.value.errors)
    assert response["uid"] == "req-1" and response["allowed"] is False
    assert response["status"] == {"metadata": {}, "status": "Failure", "code": 422, "reason": "Invalid",
                                  "message": message, "details": details}
    assert [c["field"] for c in details["causes"]] == [
        "spec.template.spec.containerConcurrency", "spec.template.spec.containers[0].image"]
    assert "warnings" not in response


def test_validation_judges_the_object_as_sent() -> None:
    """Not defaulted first: what the API server would store is what is checked (here, without
    the defaulting webhook's traffic, a Service routes nothing)."""
    response = validation(REGISTRY, decode(body(review(ksvc()))))["response"]
    assert response["allowed"] is False
    assert [c["field"] for c in response["status"]["details"]["causes"]] == ["spec.traffic"]


def test_validation_allows_a_valid_object_with_its_warnings() -> None:
    broker = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
              "metadata": {"name": "b", "namespace": "default",
                           "annotations": {"eventing.knative.dev/broker.class": "MTChannelBasedBroker"}}}
    request = decode(body(review(broker, kind={"group": "eventing.knative.dev", "version": "v1",
                                               "kind": "Broker"},
                                 resource={"group": "eventing.knative.dev", "version": "v1",
                                           "resource": "brokers"})))
    response = validation(REGISTRY, request)["response"]
    assert response["allowed"] is True
    assert response["warnings"] == admit(REGISTRY.lookup("broker"), broker)[1] != []


def test_validation_of_an_update_checks_it_against_the_old_object() -> None:
    creator = "serving.knative.dev/creator"
    old = admit(REGISTRY.lookup("ksvc"), ksvc())[0]
    old["metadata"]["annotations"] = {creator: "alice"}
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][creator] = "mallory"
    response = validation(REGISTRY, decode(body(review(new, operation="UPDATE", old=old))))["response"]
    assert response["allowed"] is False
    assert [c["field"] for c in response["status"]["details"]["causes"]] == [
        f"metadata.annotations.{creator}"]
    same = validation(REGISTRY, decode(body(review(old, operation="UPDATE", old=old))))["response"]
    assert same["allowed"] is True
    created = validation(REGISTRY, decode(body(review(new))))["response"]  # no old on CREATE
    assert created["allowed"] is True
