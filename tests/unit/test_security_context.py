"""Knative's runtime container_test: invalid security contexts are refused with the field path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.api import serving

SC = "spec.template.spec.containers[0].securityContext"
PSC = "spec.template.spec.securityContext"


def errors(container_sc: Any = None, pod_sc: Any = None) -> list[tuple[str, str]]:
    c: dict[str, Any] = {"image": "/srv/app"}
    if container_sc is not None:
        c["securityContext"] = container_sc
    spec: dict[str, Any] = {"containers": [c]}
    if pod_sc is not None:
        spec["securityContext"] = pod_sc
    svc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": {"name": "hello", "namespace": "default"},
           "spec": {"template": {"spec": spec}}}
    svc = copy.deepcopy(svc)
    serving.default_service(svc)
    return [(e.path, e.message) for e in serving.validate_service(svc, None)]


@pytest.mark.parametrize("field", ["runAsUser", "runAsGroup"])
@pytest.mark.parametrize("value", [-1, 2**31])
def test_container_ids_out_of_bounds_are_refused(field: str, value: int) -> None:
    assert errors({field: value}) == [
        (f"{SC}.{field}", f"expected 0 <= {value} <= 2147483647")]


def test_container_fields_knative_disallows_are_refused() -> None:
    got = errors({"privileged": True, "seLinuxOptions": {"level": "s0"}, "procMount": "Unmasked",
                  "windowsOptions": {}, "capabilities": {"drop": ["ALL"], "bogus": []}})
    assert sorted(got) == sorted([
        (f"{SC}.privileged", "must not set the field(s)"),
        (f"{SC}.seLinuxOptions", "must not set the field(s)"),
        (f"{SC}.procMount", "must not set the field(s)"),
        (f"{SC}.windowsOptions", "must not set the field(s)"),
        (f"{SC}.capabilities.bogus", "must not set the field(s)"),
    ])


def test_what_knative_allows_is_accepted_with_the_embedded_warning() -> None:
    allowed = {"runAsUser": 1000, "runAsGroup": 0, "runAsNonRoot": True, "privileged": False,
               "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
               "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert errors(allowed) == []
    svc = {"metadata": {"name": "hello"},
           "spec": {"template": {"spec": {"containers": [
               {"image": "/srv/app", "securityContext": allowed}]}}}}
    assert any(w.startswith(f"{SC} is accepted") for w in serving.service_warnings(svc))


def test_a_security_context_that_is_no_object_is_refused() -> None:
    assert errors("root") == [(SC, "invalid value: root; expected an object")]
    assert errors({"runAsUser": "root"}) == [
        (f"{SC}.runAsUser", "invalid value: root; expected an integer")]


def test_pod_security_context_bounds_and_disallowed_fields() -> None:
    got = errors(pod_sc={"runAsUser": -1, "fsGroup": -5, "supplementalGroups": [1, -2],
                         "sysctls": [{"name": "x", "value": "1"}], "seLinuxOptions": {}})
    assert sorted(got) == sorted([
        (f"{PSC}.runAsUser", "expected 0 <= -1 <= 2147483647"),
        (f"{PSC}.fsGroup", "expected 0 <= -5 <= 2147483647"),
        (f"{PSC}.supplementalGroups[1]", "expected 0 <= -2 <= 2147483647"),
        (f"{PSC}.sysctls", "must not set the field(s)"),
        (f"{PSC}.seLinuxOptions", "must not set the field(s)"),
    ])
    assert errors(pod_sc={"runAsUser": 1000, "fsGroup": 1000}) == []

