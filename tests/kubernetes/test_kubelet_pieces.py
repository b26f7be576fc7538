"""The kubelet stand-in's pure pieces (rollout plan, Deployment and Pod status, EndpointSlices)."""

from __future__ import annotations

import secrets
from typing import Any

from support.kubelet.addresses import PodIPs
from support.kubelet.deployments import deployment_status, plan, template_hash
from support.kubelet.endpointslices import desired_slice
from support.kubelet.pods import pod_status

NOW = "2026-01-01T00:00:00Z"


def pod(name: str, ready: bool = True, created: str = NOW, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": created,
                     "labels": {"app": "a"}, **meta},
        "spec": {"nodeName": "n",
                 "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": f"127.0.1.{len(name)}",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def names(pods: list[dict[str, Any]]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def test_plan_scales_up_and_down_unready_and_newest_first():
    assert plan(3, [pod("a")], []).create == 2
    step = plan(1, [pod("old", created="2026-01-01T00:00:00Z"), pod("new", created="2026-01-01T00:00:05Z"),
                    pod("sick", ready=False)], [])
    assert names(step.delete) == ["sick", "new"] and step.create == 0


def test_plan_rolls_with_surge_and_no_unavailability():
    old = [pod("o1"), pod("o2")]
    first = plan(2, [], old)
    assert first.create == 1 and first.delete == []  # surge 1, nothing ready to spare
    assert plan(2, [pod("n1", ready=False)], old).delete == []
    step = plan(2, [pod("n1")], old)
    assert len(step.delete) == 1 and step.create == 0  # 3 ready, 2 wanted: one old goes
    assert names(plan(2, [pod("n1")], [pod("o1"), pod("o2", ready=False)]).delete) == ["o2"]
    assert names(plan(0, [], old).delete) == ["o1", "o2"]
    assert plan(4, [], [pod(f"o{i}") for i in range(4)]).create == 1  # 25% of 4


def test_plan_recreate_deletes_every_old_pod_first():
    assert names(plan(2, [], [pod("o1"), pod("o2")], recreate=True).delete) == ["o1", "o2"]
    assert plan(2, [], [], recreate=True, old_terminating=1).create == 0
    assert plan(2, [], [], recreate=True).create == 2


def test_template_hash_is_stable_and_follows_the_template():
    t = {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}
    assert template_hash(t) == template_hash({"spec": t["spec"], "metadata": t["metadata"]})
    assert template_hash(t) != template_hash({**t, "metadata": {"labels": {"app": "b"}}})
    assert len(template_hash(t)) == 10


def test_deployment_status_conditions():
    dep = {"metadata": {"generation": 3}, "spec": {"replicas": 2}}
    done = deployment_status(dep, [pod("a"), pod("b")], [], "d-h", 0, 600, NOW)
    assert (done["replicas"], done["readyReplicas"], done["updatedReplicas"], done["observedGeneration"]) == (
        2, 2, 2, 3)
    assert [(c["type"], c["status"], c["reason"]) for c in done["conditions"]] == [
        ("Available", "True", "MinimumReplicasAvailable"), ("Progressing", "True", "NewReplicaSetAvailable")]
    stuck = deployment_status(dep, [pod("a", ready=False)], [], "d-h", 601, 600, NOW)
    assert [(c["type"], c["status"], c["reason"]) for c in stuck["conditions"]] == [
        ("Available", "False", "MinimumReplicasUnavailable"),
        ("Progressing", "False", "ProgressDeadlineExceeded"),
    ]
    assert stuck["unavailableReplicas"] == 1
    assert stuck["conditions"][1]["message"] == 'ReplicaSet "d-h" has timed out progressing.'


def test_pod_status_phases_and_conditions():
    running = {"name": "c", "ready": True, "started": True, "restartCount": 0,
               "state": {"running": {}}, "lastState": {}}
    waiting = {**running, "ready": False, "started": False, "state": {"waiting": {"reason": "ErrImagePull"}}}
    crashed = {**waiting, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
               "lastState": {"terminated": {"exitCode": 3}}}
    assert pod_status([running], False, {}, "ip", "h", NOW)["phase"] == "Running"
    assert pod_status([waiting], False, {}, "ip", "h", NOW)["phase"] == "Pending"
    assert pod_status([crashed], False, {}, "ip", "h", NOW)["phase"] == "Running"
    failed = {**running, "ready": False, "state": {"terminated": {"exitCode": 1}}}
    assert pod_status([failed], True, {}, "ip", "h", NOW)["phase"] == "Failed"
    status = pod_status([waiting], False, {}, "ip", "h", NOW)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["message"] == "containers with unready status: [c]"
    later = pod_status([waiting], False, status, "ip", "h", "2026-01-01T00:01:00Z")
    assert later["conditions"] == status["conditions"]  # unchanged: the same transition times


def test_endpoint_slice_conditions_and_named_target_ports():
    svc = {"metadata": {"name": "s", "namespace": "ns", "uid": "u"},
           "spec": {"selector": {"app": "a"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    gone = pod("gone", deletionTimestamp=NOW)
    other = pod("other")
    other["metadata"]["labels"] = {"app": "b"}
    out = desired_slice(svc, [pod("up"), pod("down", ready=False), gone, other])
    assert out["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    conditions = {e["targetRef"]["name"]: e["conditions"] for e in out["endpoints"]}
    assert conditions == {
        "up": {"ready": True, "serving": True, "terminating": False},
        "down": {"ready": False, "serving": False, "terminating": False},
        "gone": {"ready": False, "serving": True, "terminating": True},
    }
    assert out["metadata"]["labels"] == {
        "kubernetes.io/service-name": "s",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }


def test_pod_ips_are_the_lowest_free_reused_and_never_shared_between_runs():
    prefix = f"127.{100 + secrets.randbelow(150)}.{secrets.randbelow(250)}."  # nobody else's
    ips, other_run = PodIPs(prefix), PodIPs(prefix)
    try:
        assert [ips.allocate("a", [8080]), ips.allocate("b", [8080])] == [f"{prefix}1", f"{prefix}2"]
        assert ips.allocate("a", [8080]) == f"{prefix}1"  # the same Pod, the same IP
        assert other_run.allocate("x", [8080]) == f"{prefix}3"  # the lock files keep 1 and 2
        ips.release("a")
        assert ips.allocate("c", [8080]) == f"{prefix}1"
    finally:
        ips.release_all()
        other_run.release_all()
    assert other_run.allocate("y", []) == f"{prefix}1"
    other_run.release_all()
