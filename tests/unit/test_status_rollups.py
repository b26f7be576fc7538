"""Pure status decisions of the Service, Configuration and Revision reconcilers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.reconcilers.conditions import get_condition, set_condition
from controller.reconcilers.configuration import configuration_status
from controller.reconcilers.revision import (
    PROGRESS_DEADLINE_ANNOTATION,
    _deadline_s,
    ever_ready,
    failed,
    health_conditions,
    referenced,
)
from controller.reconcilers.service import service_status
from controller.runtime.base import ReplicaState, ReplicaStatus
from flint_common.timefmt import rfc3339

Obj = dict[str, Any]
T0 = 1_700_000_000.0
T1 = T0 + 10
T2 = T0 + 20


def cond(obj_status: Obj, type_: str) -> Obj:
    c = get_condition(obj_status, type_)
    assert c is not None, f"no {type_} condition in {obj_status}"
    return c


def triple(obj_status: Obj, type_: str) -> tuple[str, str, str]:
    c = cond(obj_status, type_)
    return c["status"], c.get("reason", ""), c.get("message", "")


def ready_status(status: str, reason: str = "", message: str = "", **extra: Any) -> Obj:
    s: Obj = dict(extra)
    set_condition(s, "Ready", status, reason, message, now=T0)  # type: ignore[arg-type]
    return s


# ------------------------------------------------------------------------------------------
# service_status
# ------------------------------------------------------------------------------------------


def svc(generation: int = 3, status: Obj | None = None) -> Obj:
    obj: Obj = {"metadata": {"name": "hello", "namespace": "default", "generation": generation}}
    if status is not None:
        obj["status"] = status
    return obj


def child(name: str, generation: int, observed: int | None, status: Obj) -> Obj:
    s = dict(status)
    if observed is not None:
        s["observedGeneration"] = observed
    return {"metadata": {"name": name, "generation": generation}, "status": s}


def ready_cfg(**extra: Any) -> Obj:
    return child(
        "hello", 2, 2,
        ready_status("True", latestCreatedRevisionName="hello-00002",
                     latestReadyRevisionName="hello-00002", **extra),
    )


def ready_route() -> Obj:
    traffic = [{"revisionName": "hello-00002", "percent": 100, "latestRevision": True}]
    return child(
        "hello", 1, 1,
        ready_status(
            "True",
            url="http://hello.default.localhost",
            address={"url": "http://hello.default.localhost"},
            traffic=traffic,
        ),
    )


def test_service_without_children_is_unknown() -> None:
    status = service_status(svc(), None, None, now=T0)
    assert status["observedGeneration"] == 3
    assert triple(status, "ConfigurationsReady")[:2] == ("Unknown", "Creating")
    assert triple(status, "RoutesReady")[:2] == ("Unknown", "Creating")
    assert cond(status, "Ready")["status"] == "Unknown"
    for field in ("url", "traffic", "latestReadyRevisionName", "latestCreatedRevisionName"):
        assert field not in status


def test_service_ready_mirrors_its_children() -> None:
    status = service_status(svc(), ready_cfg(), ready_route(), now=T0)
    assert cond(status, "ConfigurationsReady")["status"] == "True"
    assert cond(status, "RoutesReady")["status"] == "True"
    assert cond(status, "Ready")["status"] == "True"
    assert status["latestCreatedRevisionName"] == "hello-00002"
    assert status["latestReadyRevisionName"] == "hello-00002"
    assert status["url"] == "http://hello.default.localhost"
    assert status["address"] == {"url": "http://hello.default.localhost"}
    assert status["traffic"] == [
        {"revisionName": "hello-00002", "percent": 100, "latestRevision": True}
    ]
    assert [c["type"] for c in status["conditions"]] == [
        "Ready", "ConfigurationsReady", "RoutesReady",
    ]


def test_service_child_that_has_not_observed_its_generation_is_out_of_date() -> None:
    stale = child("hello", 3, 2, ready_status("True"))
    status = service_status(svc(), stale, ready_route(), now=T0)
    s, reason, message = triple(status, "ConfigurationsReady")
    assert (s, reason) == ("Unknown", "OutOfDate")
    assert '"hello"' in message
    assert "3" in message
    assert cond(status, "Ready")["status"] == "Unknown"


def test_service_failed_configuration_fails_the_service() -> None:
    bad = child("hello", 2, 2, ready_status("False", "RevisionFailed", "exit code 1"))
    unknown_route = child("hello", 1, 1, ready_status("Unknown", "Programming", "wait"))
    status = service_status(svc(), bad, unknown_route, now=T0)
    assert triple(status, "ConfigurationsReady") == ("False", "RevisionFailed", "exit code 1")
    assert triple(status, "RoutesReady") == ("Unknown", "Programming", "wait")
    assert triple(status, "Ready") == ("False", "RevisionFailed", "exit code 1")


def test_service_route_conflict_fails_the_service() -> None:
    route = child("hello", 1, 1, ready_status("False", "HostConflict", 'host "x" is taken'))
    status = service_status(svc(), ready_cfg(), route, now=T0)
    assert triple(status, "Ready") == ("False", "HostConflict", 'host "x" is taken')


def test_service_status_does_not_mutate_its_input_and_keeps_transition_times() -> None:
    first = service_status(svc(), ready_cfg(), ready_route(), now=T0)
    old = svc(status=first)
    before = copy.deepcopy(old)
    second = service_status(old, ready_cfg(), ready_route(), now=T1)
    assert old == before
    assert cond(second, "Ready")["lastTransitionTime"] == rfc3339(T0)
    assert second == first


def test_service_keeps_last_known_route_fields_when_the_route_has_none() -> None:
    first = service_status(svc(), ready_cfg(), ready_route(), now=T0)
    route = child("hello", 2, 2, ready_status("Unknown"))
    status = service_status(svc(status=first), ready_cfg(), route, now=T1)
    assert status["url"] == "http://hello.default.localhost"
    assert cond(status, "Ready")["status"] == "Unknown"


# ------------------------------------------------------------------------------------------
# configuration_status
# ------------------------------------------------------------------------------------------


def config(generation: int = 2, status: Obj | None = None) -> Obj:
    obj: Obj = {"metadata": {"name": "hello", "namespace": "default", "generation": generation}}
    if status is not None:
        obj["status"] = status
    return obj


def revision(name: str, generation: int, ready: str | None, reason: str = "",
             message: str = "") -> Obj:
    return {
        "metadata": {
            "name": name,
            "labels": {"serving.knative.dev/configurationGeneration": str(generation)},
        },
        "status": ready_status(ready, reason, message) if ready else {},
    }


def test_configuration_without_revision_is_deploying() -> None:
    status = configuration_status(config(), None, [], now=T0)
    assert status["observedGeneration"] == 2
    assert triple(status, "Ready")[:2] == ("Unknown", "Deploying")
    assert "latestCreatedRevisionName" not in status
    assert "latestReadyRevisionName" not in status


def test_configuration_ready_with_its_latest_revision() -> None:
    r1 = revision("hello-00001", 1, "True")
    r2 = revision("hello-00002", 2, "True")
    status = configuration_status(config(), r2, [r1, r2], now=T0)
    assert status["latestCreatedRevisionName"] == "hello-00002"
    assert status["latestReadyRevisionName"] == "hello-00002"
    assert cond(status, "Ready")["status"] == "True"


def test_configuration_latest_failed_keeps_older_ready_revision() -> None:
    r1 = revision("hello-00001", 1, "True")
    r2 = revision("hello-00002", 2, "False", "ExitCode", "exit status 1")
    status = configuration_status(config(), r2, [r2, r1], now=T0)
    assert status["latestCreatedRevisionName"] == "hello-00002"
    assert status["latestReadyRevisionName"] == "hello-00001"
    s, reason, message = triple(status, "Ready")
    assert (s, reason) == ("False", "RevisionFailed")
    assert '"hello-00002"' in message
    assert "exit status 1" in message


def test_configuration_latest_ready_is_by_generation_not_name() -> None:
    zeta = revision("zeta", 1, "True")
    alpha = revision("alpha", 2, "True")
    old_ten = revision("hello-9", 9, "True")
    new_ten = revision("hello-10", 10, "True")
    status = configuration_status(config(), alpha, [alpha, zeta], now=T0)
    assert status["latestReadyRevisionName"] == "alpha"
    status = configuration_status(config(), new_ten, [new_ten, old_ten], now=T0)
    assert status["latestReadyRevisionName"] == "hello-10"


def named_config(generation: int, template_name: str, latest_ready: str) -> Obj:
    cfg = config(generation, {"latestReadyRevisionName": latest_ready})
    cfg["spec"] = {"template": {"metadata": {"name": template_name}}}
    return cfg


def test_configuration_rolled_back_to_a_named_revision_makes_it_latest_ready_again() -> None:
    """Knative's rollback_byo_test: X-foo, then X-foo-new, then X-foo's template again."""
    foo = revision("x-foo", 1, "True")
    foo_new = revision("x-foo-new", 2, "True")
    status = configuration_status(named_config(2, "x-foo-new", "x-foo"), foo_new, [foo, foo_new],
                                  now=T0)
    assert status["latestReadyRevisionName"] == "x-foo-new"
    back = named_config(3, "x-foo", "x-foo-new")
    status = configuration_status(back, foo, [foo, foo_new], now=T0)
    assert status["latestCreatedRevisionName"] == "x-foo"
    assert status["latestReadyRevisionName"] == "x-foo"
    assert cond(status, "Ready")["status"] == "True"


def test_configuration_named_revision_not_ready_keeps_the_current_latest_ready() -> None:
    foo = revision("x-foo", 1, "False", "ExitCode", "exit status 1")
    foo_new = revision("x-foo-new", 2, "True")
    status = configuration_status(named_config(3, "x-foo", "x-foo-new"), foo, [foo, foo_new],
                                  now=T0)
    assert status["latestReadyRevisionName"] == "x-foo-new"


def test_configuration_latest_ready_never_goes_back_below_the_current_one() -> None:
    # Unnamed templates: an older Ready revision is not a candidate once a newer one was ready.
    r1 = revision("hello-00001", 1, "True")
    r2 = revision("hello-00002", 2, "Unknown")
    r3 = revision("hello-00003", 3, "Unknown")
    cfg = config(3, {"latestReadyRevisionName": "hello-00002"})
    status = configuration_status(cfg, r3, [r1, r2, r3], now=T0)
    assert status["latestReadyRevisionName"] == "hello-00002"


def test_configuration_latest_not_ready_yet_carries_its_reason() -> None:
    r1 = revision("hello-00001", 1, "True")
    r2 = revision("hello-00002", 2, "Unknown", "Deploying", "waiting for a replica")
    status = configuration_status(config(), r2, [r1, r2], now=T0)
    assert triple(status, "Ready") == ("Unknown", "Deploying", "waiting for a replica")
    assert status["latestReadyRevisionName"] == "hello-00001"

    fresh = revision("hello-00002", 2, None)
    status = configuration_status(config(), fresh, [fresh], now=T0)
    s, reason, message = triple(status, "Ready")
    assert (s, reason) == ("Unknown", "Deploying")
    assert '"hello-00002"' in message
    assert "latestReadyRevisionName" not in status


def test_configuration_status_keeps_transition_time() -> None:
    r = revision("hello-00001", 1, "True")
    first = configuration_status(config(), r, [r], now=T0)
    second = configuration_status(config(status=first), r, [r], now=T1)
    assert cond(second, "Ready")["lastTransitionTime"] == rfc3339(T0)


# ------------------------------------------------------------------------------------------
# revision: referenced, health, ever_ready, failed, deadline
# ------------------------------------------------------------------------------------------


def route_obj(ns: str | None, spec: list[Obj], status: list[Obj] | None = None) -> Obj:
    meta: Obj = {"name": "r"}
    if ns is not None:
        meta["namespace"] = ns
    obj: Obj = {"metadata": meta, "spec": {"traffic": spec}}
    if status is not None:
        obj["status"] = {"traffic": status}
    return obj


def cfg_obj(latest_created: str | None, latest_ready: str | None, name: str = "hello") -> Obj:
    status: Obj = {}
    if latest_created:
        status["latestCreatedRevisionName"] = latest_created
    if latest_ready:
        status["latestReadyRevisionName"] = latest_ready
    return {"metadata": {"name": name, "namespace": "default"}, "status": status}


def test_referenced_by_status_traffic() -> None:
    r = route_obj(
        "default",
        [{"revisionName": "hello-00001", "percent": 100}],
        [{"revisionName": "hello-00001", "percent": 100, "latestRevision": False}],
    )
    assert referenced([r], None, "default", "hello-00001")
    assert not referenced([r], None, "default", "hello-00002")


def test_referenced_by_status_even_after_spec_moved_on() -> None:
    r = route_obj(
        "default",
        [{"revisionName": "hello-00002", "percent": 100}],
        [{"revisionName": "hello-00001", "percent": 100}],
    )
    assert referenced([r], None, "default", "hello-00001")
    assert referenced([r], None, "default", "hello-00002")


def test_referenced_by_spec_traffic_before_status() -> None:
    r = route_obj(None, [{"revisionName": "hello-00003", "percent": 100}])
    assert referenced([r], None, "default", "hello-00003")


def test_referenced_by_zero_percent_tag() -> None:
    r = route_obj(
        "default",
        [{"revisionName": "hello-00001", "tag": "old", "percent": 0}],
        [{"revisionName": "hello-00001", "tag": "old", "percent": 0}],
    )
    assert referenced([r], None, "default", "hello-00001")


def test_referenced_only_in_the_same_namespace() -> None:
    r = route_obj("other", [{"revisionName": "hello-00001", "percent": 100}])
    assert not referenced([r], None, "default", "hello-00001")
    assert not referenced([], cfg_obj("hello-00001", "hello-00001"), "default", "hello-00001")


def test_referenced_through_latest_revision_before_the_route_caught_up() -> None:
    # the route floats on configuration "hello" but its status still names 00001
    r = route_obj(
        "default",
        [{"configurationName": "hello", "latestRevision": True, "percent": 100}],
        [{"revisionName": "hello-00001", "percent": 100, "latestRevision": True}],
    )
    cfg = cfg_obj("hello-00003", "hello-00002")
    assert referenced([r], cfg, "default", "hello-00002")  # latest ready
    assert referenced([r], cfg, "default", "hello-00003")  # latest created
    assert referenced([r], cfg, "default", "hello-00001")  # still in status
    r_unresolved = route_obj(
        "default", [{"configurationName": "hello", "percent": 100}]  # latestRevision defaults
    )
    assert referenced([r_unresolved], cfg, "default", "hello-00002")
    # an older revision that is neither latest nor in status is not
    assert not referenced([r_unresolved], cfg, "default", "hello-00001")
    # without its configuration only names count
    assert not referenced([r_unresolved], None, "default", "hello-00002")


def test_latest_revision_of_another_configuration_does_not_reference() -> None:
    r = route_obj("default", [{"configurationName": "other", "percent": 100}])
    assert not referenced([r], cfg_obj("hello-00001", "hello-00001"), "default", "hello-00001")


def test_pinned_configuration_target_does_not_float() -> None:
    r = route_obj(
        "default",
        [{"configurationName": "hello", "latestRevision": False, "percent": 100}],
    )
    assert not referenced([r], cfg_obj("hello-00002", "hello-00002"), "default", "hello-00002")


def replica(state: ReplicaState, rid: str = "r1", *, code: int | None = None,
            message: str = "") -> ReplicaStatus:
    return ReplicaStatus(
        id=rid, revision_key="default/hello-00001", host="127.0.0.1", port=40000, pid=1,
        state=state, last_exit_code=code, message=message,
    )


def test_health_ready() -> None:
    status: Obj = {}
    health_conditions(status, [replica("ready"), replica("starting", "r2")], 1, now=T0)
    assert status["actualReplicas"] == 1
    assert status["desiredReplicas"] == 1
    for t in ("Ready", "ResourcesAvailable", "ContainerHealthy", "Active"):
        assert cond(status, t)["status"] == "True", t
    assert ever_ready({"status": status})


def test_health_starting() -> None:
    status: Obj = {}
    health_conditions(
        status, [replica("starting", message="not listening on $PORT yet")], 1, now=T0
    )
    assert status["actualReplicas"] == 0
    assert triple(status, "ResourcesAvailable") == (
        "Unknown", "Deploying", "not listening on $PORT yet",
    )
    assert triple(status, "ContainerHealthy")[:2] == ("Unknown", "Deploying")
    assert cond(status, "Ready")["status"] == "Unknown"
    assert not ever_ready({"status": status})


def test_health_starting_without_message_has_a_default_one() -> None:
    status: Obj = {}
    health_conditions(status, [replica("starting")], 1, now=T0)
    assert triple(status, "ResourcesAvailable")[2]
    assert triple(status, "ContainerHealthy")[2]


@pytest.mark.parametrize("state", ["crashed", "failed"])
def test_health_crashed_with_exit_code_and_message(state: ReplicaState) -> None:
    status: Obj = {}
    r = replica(state, code=3, message="exit status 3: ModuleNotFoundError: flask")
    health_conditions(status, [r], 1, now=T0)
    s, reason, message = triple(status, "ContainerHealthy")
    assert (s, reason) == ("False", "ExitCode")
    assert "ModuleNotFoundError: flask" in message
    assert cond(status, "ResourcesAvailable")["status"] == "Unknown"
    # Ready is False and says why
    assert triple(status, "Ready") == (s, reason, message)
    assert not ever_ready({"status": status})


def test_health_crashed_without_exit_code() -> None:
    status: Obj = {}
    health_conditions(status, [replica("crashed", message="killed by signal 9")], 1, now=T0)
    s, reason, message = triple(status, "ContainerHealthy")
    assert (s, reason) == ("False", "Crashed")
    assert "killed by signal 9" in message


def test_health_recovers_after_crash() -> None:
    status: Obj = {}
    health_conditions(status, [replica("crashed", code=1, message="boom")], 1, now=T0)
    health_conditions(status, [replica("ready")], 1, now=T1)
    assert cond(status, "Ready")["status"] == "True"
    assert cond(status, "ContainerHealthy")["status"] == "True"
    assert cond(status, "Ready")["lastTransitionTime"] == rfc3339(T1)


def test_health_scaled_to_zero_after_ready_stays_ready_but_inactive() -> None:
    status: Obj = {}
    health_conditions(status, [replica("ready")], 1, now=T0)
    health_conditions(status, [], 0, now=T1)
    assert status["actualReplicas"] == 0
    assert status["desiredReplicas"] == 0
    assert triple(status, "Active")[:2] == ("False", "NoTraffic")
    assert cond(status, "Ready")["status"] == "True"
    assert cond(status, "Ready")["lastTransitionTime"] == rfc3339(T0)
    assert cond(status, "ResourcesAvailable")["status"] == "True"
    assert ever_ready({"status": status})
    # and active again once a replica is ready
    health_conditions(status, [replica("starting")], 1, now=T2)
    assert cond(status, "Ready")["status"] == "True"
    health_conditions(status, [replica("ready")], 1, now=T2)
    assert cond(status, "Active")["status"] == "True"


def test_ever_ready() -> None:
    assert not ever_ready({})
    assert not ever_ready({"status": ready_status("True")})
    s: Obj = {}
    set_condition(s, "ResourcesAvailable", "Unknown", now=T0)
    assert not ever_ready({"status": s})
    set_condition(s, "ResourcesAvailable", "True", now=T0)
    assert ever_ready({"status": s})


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        ("False", "ProgressDeadlineExceeded", True),
        ("False", "ImageNotLocal", True),
        ("False", "ImageNotFound", True),
        ("False", "NotRunnable", True),
        ("False", "ExitCode", False),  # may recover: the runtime restarts it
        ("Unknown", "NotRunnable", False),
        ("True", "", False),
    ],
)
def test_failed(status: str, reason: str, expected: bool) -> None:
    assert failed({"status": ready_status(status, reason)}) is expected


def test_failed_without_status() -> None:
    assert not failed({})


def rev_with_deadline(value: str | None) -> Obj:
    meta: Obj = {"name": "x"}
    if value is not None:
        meta["annotations"] = {PROGRESS_DEADLINE_ANNOTATION: value}
    return {"metadata": meta}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 600.0),
        ("", 600.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("120", 120.0),
        (" 30s ", 30.0),
        ("soon", 600.0),
        ("s", 600.0),
    ],
)
def test_deadline(value: str | None, expected: float) -> None:
    assert _deadline_s(rev_with_deadline(value), 600.0) == expected


@pytest.mark.parametrize(("value", "expected"), [("1m30s", 90.0), ("500ms", 0.5)])
def test_deadline_go_durations(value: str, expected: float) -> None:
    assert _deadline_s(rev_with_deadline(value), 600.0) == expected
