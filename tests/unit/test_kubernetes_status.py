"""Endpoints from EndpointSlices, and a revision's conditions from its Deployment and pods."""

from __future__ import annotations

from typing import Any

from controller.runtime.kubernetes_status import Condition, PodEndpoint, endpoints, revision_conditions

Obj = dict[str, Any]


def slice_(*eps: Obj, port: int = 8080, name: str = "http", address_type: str = "IPv4") -> Obj:
    return {"addressType": address_type, "ports": [{"name": name, "port": port, "protocol": "TCP"}],
            "endpoints": list(eps)}


def ep(ip: str, pod: str = "", **conditions: bool) -> Obj:
    out: Obj = {"addresses": [ip], "conditions": conditions}
    if pod:
        out["targetRef"] = {"kind": "Pod", "name": pod}
    return out


def test_endpoint_states() -> None:
    got = endpoints([slice_(
        ep("10.0.0.1", "a", ready=True, serving=True, terminating=False),
        ep("10.0.0.2", "b", ready=False, serving=False, terminating=False),
        ep("10.0.0.3", "c", ready=False, serving=True, terminating=True),
        ep("10.0.0.4", "d"),  # no conditions: the API says nil ready means ready
    )])
    assert got == [PodEndpoint("a", "10.0.0.1", 8080, "ready"),
                   PodEndpoint("b", "10.0.0.2", 8080, "starting"),
                   PodEndpoint("c", "10.0.0.3", 8080, "draining"),
                   PodEndpoint("d", "10.0.0.4", 8080, "ready")]


def test_an_address_in_two_slices_counts_once_at_its_best() -> None:
    got = endpoints([slice_(ep("10.0.0.1", "a", ready=False)), slice_(ep("10.0.0.1", "a", ready=True))])
    assert got == [PodEndpoint("a", "10.0.0.1", 8080, "ready")]


def test_only_the_http_port_and_ip_slices() -> None:
    assert endpoints([slice_(ep("10.0.0.1", ready=True), name="metrics")]) == []
    assert endpoints([slice_(ep("db.example.com", ready=True), address_type="FQDN")]) == []
    assert endpoints([slice_(ep("fd00::1", "v6", ready=True), address_type="IPv6", port=9000)]) == [
        PodEndpoint("v6", "fd00::1", 9000, "ready")]
    assert endpoints([slice_(ep("10.0.0.9", ready=True))])[0].pod == "10.0.0.9"  # no targetRef


def deployment(replicas: int = 1, available: int = 0, ready: int = 0, *conds: Obj) -> Obj:
    return {"spec": {"replicas": replicas},
            "status": {"availableReplicas": available, "readyReplicas": ready, "conditions": list(conds)}}


def progressing(status: str, reason: str = "", message: str = "") -> Obj:
    return {"type": "Progressing", "status": status, "reason": reason, "message": message}


def pod(*statuses: Obj, scheduled: Obj | None = None) -> Obj:
    conditions = [scheduled] if scheduled else []
    return {"status": {"conditions": conditions, "containerStatuses": list(statuses)}}


def test_no_deployment_yet_is_deploying() -> None:
    assert revision_conditions(None, []) == {"ResourcesAvailable": Condition("Unknown", "Deploying"),
                                             "ContainerHealthy": Condition("Unknown", "Deploying")}


def test_resources_follow_the_deployment() -> None:
    ok = revision_conditions(deployment(1, 1, 1, progressing("True", "NewReplicaSetAvailable")), [])
    assert ok == {"ResourcesAvailable": Condition("True"), "ContainerHealthy": Condition("True")}
    waiting = revision_conditions(deployment(1, 0, 0), [])
    assert waiting["ResourcesAvailable"] == Condition("Unknown", "Deploying")
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "quota"}
    assert revision_conditions(deployment(1, 0, 0, progressing("True"), failure), [])[
        "ResourcesAvailable"] == Condition("False", "FailedCreate", "quota")


def test_a_crashing_container_says_its_exit_code() -> None:
    crashed = {"name": "user-container", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
               "lastState": {"terminated": {"exitCode": 3, "message": "boom"}}}
    got = revision_conditions(deployment(1), [pod(crashed)])
    assert got["ContainerHealthy"] == Condition("False", "ExitCode3", "Container failed with: boom")
    clean = dict(crashed, lastState={"terminated": {"exitCode": 0}})
    assert revision_conditions(deployment(1), [pod(clean)])["ContainerHealthy"] == Condition(
        "False", "ExitCode0", "Container failed with: container exited with no error")


def test_an_image_that_cannot_be_pulled_is_said_at_once() -> None:
    pulling = {"name": "user-container", "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "ghcr.io/x/nope"'}}}
    got = revision_conditions(deployment(1), [pod(pulling)])
    assert got["ResourcesAvailable"] == Condition(
        "False", "ImagePullBackOff", 'Back-off pulling image "ghcr.io/x/nope"')
    creating = {"name": "user-container", "state": {"waiting": {"reason": "ContainerCreating"}}}
    assert revision_conditions(deployment(1), [pod(creating)])["ResourcesAvailable"].status == "Unknown"
    timed_out = deployment(1, 0, 0, progressing("False", "ProgressDeadlineExceeded", "too slow"))
    assert revision_conditions(timed_out, [pod(creating)])["ResourcesAvailable"] == Condition(
        "False", "ContainerCreating", "")


def test_an_unschedulable_pod_and_sidecars() -> None:
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/3 nodes are available: 3 Insufficient cpu."}
    got = revision_conditions(deployment(2), [pod(scheduled=unschedulable)])
    assert got["ResourcesAvailable"] == Condition(
        "False", "Unschedulable", "0/3 nodes are available: 3 Insufficient cpu.")
    side = {"name": "proxy", "lastState": {"terminated": {"exitCode": 1, "message": "proxy died"}}}
    assert "ContainerHealthy" not in revision_conditions(deployment(1), [pod(side)], ["user-container"])
    assert revision_conditions(deployment(0), [pod(side)]) == {
        "ResourcesAvailable": Condition("Unknown", "Deploying")}
