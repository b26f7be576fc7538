"""A Revision's Deployment and private Service on the Kubernetes engine (Knative's shapes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from controller.autoscaling.annotations import RevisionScaling, effective
from controller.autoscaling.settings import AutoscalerSettings
from controller.runtime.kubernetes_manifests import (
    ManifestSettings,
    deployment,
    deployment_name,
    hpa,
    labels,
    pod_spec,
    private_service,
    private_service_name,
    user_port,
)

Obj = dict[str, Any]


def revision(spec: Obj | None = None, *, labels_: dict[str, str] | None = None,
             annotations: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
        "metadata": {
            "name": "hello-00002", "namespace": "apps", "uid": "rev-uid",
            "labels": labels_ if labels_ is not None else {
                "serving.knative.dev/configuration": "hello",
                "serving.knative.dev/service": "hello",
                "serving.knative.dev/routingState": "active",
                "serving.knative.dev/route": "hello",
                "team": "a",
            },
            "annotations": annotations or {},
        },
        "spec": spec if spec is not None else {
            "containerConcurrency": 1, "timeoutSeconds": 120,
            "containers": [{"image": "ghcr.io/example/hello:1", "name": "user-container",
                            "env": [{"name": "TARGET", "value": "x"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "hello"}}],
            "serviceAccountName": "runner",
        },
    }


def test_names_are_knative_s() -> None:
    assert deployment_name("hello-00002") == "hello-00002-deployment"
    assert private_service_name("hello-00002") == "hello-00002-private"


def test_labels_keep_the_user_s_and_add_the_revision_s() -> None:
    got = labels(revision())
    assert got == {
        "serving.knative.dev/configuration": "hello", "serving.knative.dev/service": "hello",
        "team": "a", "serving.knative.dev/revision": "hello-00002",
        "serving.knative.dev/revisionUID": "rev-uid", "app": "hello-00002",
    }  # routingState and route stay on the revision: they change without a new pod template
    assert labels(revision(labels_={"app": "mine"}))["app"] == "mine"


def test_the_deployment_runs_the_podspec_as_given_with_knative_s_additions() -> None:
    d = deployment(revision(annotations={
        "autoscaling.knative.dev/min-scale": "1", "serving.knative.dev/routes": "hello",
        "example.com/note": "kept"}), replicas=3)
    assert d["metadata"]["name"] == "hello-00002-deployment" and d["metadata"]["namespace"] == "apps"
    assert d["metadata"]["ownerReferences"] == [{
        "apiVersion": "serving.knative.dev/v1", "kind": "Revision", "name": "hello-00002",
        "uid": "rev-uid", "controller": True, "blockOwnerDeletion": True}]
    assert d["metadata"]["annotations"] == {"example.com/note": "kept"}
    spec = d["spec"]
    assert spec["replicas"] == 3 and spec["revisionHistoryLimit"] == 0
    assert spec["selector"] == {"matchLabels": {"serving.knative.dev/revisionUID": "rev-uid"}}
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}}
    assert spec["progressDeadlineSeconds"] == 600
    template = spec["template"]
    assert template["metadata"]["labels"]["serving.knative.dev/revisionUID"] == "rev-uid"
    assert template["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "user-container"
    pod = template["spec"]
    assert pod["volumes"] == [{"name": "cfg", "configMap": {"name": "hello"}}]  # honoured, not refused
    assert pod["serviceAccountName"] == "runner"
    assert "containerConcurrency" not in pod and "timeoutSeconds" not in pod
    assert pod["terminationGracePeriodSeconds"] == 120
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/example/hello:1"
    assert c["ports"] == [{"name": "user-port", "containerPort": 8080, "protocol": "TCP"}]
    assert c["env"] == [
        {"name": "TARGET", "value": "x"}, {"name": "PORT", "value": "8080"},
        {"name": "K_REVISION", "value": "hello-00002"}, {"name": "K_CONFIGURATION", "value": "hello"},
        {"name": "K_SERVICE", "value": "hello"}]
    assert c["readinessProbe"]["tcpSocket"] == {"port": 8080}  # no probe given: TCP on the port
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}


def test_the_user_port_and_the_probes_on_it() -> None:
    rev = revision({"containers": [{
        "image": "x", "ports": [{"containerPort": 9000, "name": "h2c"}],
        "readinessProbe": {"httpGet": {"path": "/ready"}},
        "livenessProbe": {"tcpSocket": {}}, "lifecycle": {"preStop": {"exec": {"command": ["drain"]}}}}]})
    assert user_port(rev) == 9000
    (c,) = pod_spec(rev)["containers"]
    assert c["ports"] == [{"name": "user-port", "containerPort": 9000, "protocol": "TCP"}]
    assert c["readinessProbe"] == {"httpGet": {"path": "/ready", "port": 9000}}
    assert c["livenessProbe"] == {"tcpSocket": {"port": 9000}}
    assert c["lifecycle"] == {"preStop": {"exec": {"command": ["drain"]}}}  # the user's own kept
    assert {"name": "PORT", "value": "9000"} in c["env"]


def test_sidecars_keep_their_ports_and_get_no_probe() -> None:
    rev = revision({"containers": [{"image": "proxy"}, {"image": "app", "ports": [{"containerPort": 3000}]}]})
    side, app = pod_spec(rev)["containers"]
    assert "ports" not in side and "readinessProbe" not in side
    assert {"name": "PORT", "value": "3000"} not in side["env"]
    assert app["ports"][0]["containerPort"] == 3000 and app["readinessProbe"]["tcpSocket"]["port"] == 3000


def test_settings_and_the_progress_deadline_annotation() -> None:
    rev = revision(annotations={"serving.knative.dev/progress-deadline": "90s"})
    d = deployment(rev, 1, ManifestSettings(progress_deadline_s=300, prestop_s=0))
    assert d["spec"]["progressDeadlineSeconds"] == 90
    assert "lifecycle" not in d["spec"]["template"]["spec"]["containers"][0]
    assert deployment(revision(), 1, ManifestSettings(progress_deadline_s=300))["spec"][
        "progressDeadlineSeconds"] == 300
    tight = revision({"timeoutSeconds": 2, "containers": [{"image": "x"}]})
    assert pod_spec(tight, ManifestSettings(prestop_s=5))["terminationGracePeriodSeconds"] == 6
    with pytest.raises(ValueError, match="prestop_s"):
        ManifestSettings(prestop_s=-1)


def test_the_private_service_selects_the_revision_s_pods() -> None:
    svc = private_service(revision())
    assert svc["metadata"]["name"] == "hello-00002-private"
    assert svc["metadata"]["labels"]["networking.internal.knative.dev/serviceType"] == "Private"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "rev-uid"
    assert svc["spec"] == {
        "selector": {"serving.knative.dev/revisionUID": "rev-uid"},
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}


def test_the_revision_is_not_changed() -> None:
    rev = revision()
    before = repr(rev)
    deployment(rev, 2)
    private_service(rev)
    assert repr(rev) == before


class _Body:
    def __init__(self, obj: Obj) -> None:
        self.data = json.dumps(obj)


@pytest.mark.parametrize("kind", ["V1Deployment", "V1Service"])
async def test_every_field_is_one_kubernetes_knows(kind: str) -> None:
    """Through kubernetes-asyncio's models and back: a misspelt or unknown field would be
    dropped on the way (the models know only the API's fields), so the round trip shows none."""
    made = deployment(revision(), 2) if kind == "V1Deployment" else private_service(revision())
    async with client.ApiClient() as api:
        model = api.deserialize(_Body(made), kind)
        assert api.sanitize_for_serialization(model) == made


def scaling(annotations: dict[str, str]) -> RevisionScaling:
    return effective(AutoscalerSettings(), annotations, 0)


def test_an_hpa_class_revision_gets_a_horizontal_pod_autoscaler() -> None:
    ann = {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
           "autoscaling.knative.dev/metric": "cpu", "autoscaling.knative.dev/target": "70.5",
           "autoscaling.knative.dev/min-scale": "2", "autoscaling.knative.dev/max-scale": "9",
           "autoscaling.knative.dev/window": "2m"}
    rev = revision(annotations=ann)
    h = hpa(rev, scaling(ann))
    assert h["apiVersion"] == "autoscaling/v2" and h["metadata"]["name"] == "hello-00002"
    assert h["metadata"]["ownerReferences"][0]["kind"] == "Revision"
    assert h["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hello-00002-deployment"},
        "minReplicas": 2, "maxReplicas": 9,
        "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 71}}}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120},
                     "scaleUp": {"stabilizationWindowSeconds": 120}},
    }


def test_a_memory_hpa_without_bounds() -> None:
    ann = {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
           "autoscaling.knative.dev/metric": "memory", "autoscaling.knative.dev/target": "256"}
    spec = hpa(revision(annotations=ann), scaling(ann))["spec"]
    assert "minReplicas" not in spec and spec["maxReplicas"] == 2**31 - 1 and "behavior" not in spec
    assert spec["metrics"] == [{"type": "Resource", "resource": {
        "name": "memory", "target": {"type": "AverageValue", "averageValue": "256Mi"}}}]


async def test_the_hpa_is_one_kubernetes_knows() -> None:
    ann = {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
           "autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/window": "60s"}
    made = hpa(revision(annotations=ann), scaling(ann))
    async with client.ApiClient() as api:
        model = api.deserialize(_Body(made), "V2HorizontalPodAutoscaler")
        assert api.sanitize_for_serialization(model) == made
