"""Gradual rollout (Knative's rollout_test, as pure steps): shares, steps, state, validation."""

from __future__ import annotations

import pytest

from controller.api.serving import (
    default_route,
    default_service,
    route_warnings,
    service_warnings,
    validate_route,
    validate_service,
)
from controller.reconcilers.rollout import (
    ConfigRollout,
    Rollout,
    Share,
    baseline,
    decode,
    load_network_settings,
    observe_ready,
    status_traffic,
    step,
)


def shares(r: Rollout, cfg: str = "hello") -> list[tuple[str, int]]:
    c = r.get(cfg)
    assert c is not None
    return [(s.revision, s.percent) for s in c.shares]


def test_without_history_the_latest_ready_revision_gets_everything() -> None:
    goal = baseline([("hello", "hello-00001", 100)])
    assert step(goal, None, now=10) == goal
    assert shares(goal) == [("hello-00001", 100)] and goal.done


def test_a_new_revision_starts_at_one_percent() -> None:
    prev = baseline([("hello", "hello-00001", 100)])
    now = step(baseline([("hello", "hello-00002", 100)]), prev, now=100)
    assert shares(now) == [("hello-00001", 99), ("hello-00002", 1)]
    assert not now.done
    c = now.get("hello")
    assert c is not None and c.start_time == 100 and c.step_duration == 0
    assert now.next_step_time() is None  # no step until the 1 % state serves


def test_steps_are_fixed_once_the_first_percent_serves() -> None:
    started = ConfigRollout("hello", 100, (Share("a", 99), Share("b", 1)), start_time=100)
    observed = observe_ready(Rollout((started,)), now=102, duration_s=60)
    c = observed.get("hello")
    assert c is not None
    # 2 s to serve 1 %: the remaining 58 s hold 29 steps of 2 s, 99 % / 29 ≈ 3 % each.
    assert (c.step_duration, c.step_size, c.next_step_time) == (2.0, 3, 104.0)
    assert observe_ready(observed, now=150, duration_s=60) == observed  # fixed once


def test_a_rollout_moves_in_steps_and_ends_on_the_new_revision() -> None:
    prev = step(baseline([("hello", "b", 100)]), baseline([("hello", "a", 100)]), now=100)
    prev = observe_ready(prev, now=101, duration_s=10)
    goal = baseline([("hello", "b", 100)])
    seen = []
    t = 101.0
    while not prev.done:
        due = prev.next_step_time()
        assert due is not None
        assert step(goal, prev, now=due - 0.01) == prev  # nothing moves before a step is due
        t = due
        prev = step(goal, prev, now=t)
        seen.append(shares(prev))
        assert sum(p for _, p in shares(prev)) == 100
    new_shares = [dict(s).get("b", 0) for s in seen]
    assert new_shares == sorted(new_shares) and len(seen) > 2
    assert shares(prev) == [("b", 100)]
    assert t <= 110 + 1e-6  # done within the duration


def test_a_third_revision_mid_rollout_stacks_on_the_others() -> None:
    mid = Rollout((ConfigRollout("hello", 100, (Share("a", 60), Share("b", 40)), start_time=1,
                                 next_step_time=50, step_duration=5, step_size=10),))
    now = step(baseline([("hello", "c", 100)]), mid, now=20)
    assert shares(now) == [("a", 60), ("b", 39), ("c", 1)]
    c = now.get("hello")
    assert c is not None and c.start_time == 20 and c.step_size == 0


def test_a_step_takes_from_the_newest_older_revision_first() -> None:
    mid = Rollout((ConfigRollout("hello", 100, (Share("a", 10), Share("b", 20), Share("c", 70)),
                                 start_time=1, next_step_time=5, step_duration=5, step_size=25),))
    now = step(baseline([("hello", "c", 100)]), mid, now=5)
    assert shares(now) == [("a", 5), ("c", 95)]
    c = now.get("hello")
    assert c is not None and c.next_step_time == 10


def test_a_smaller_share_is_taken_from_the_oldest() -> None:
    mid = Rollout((ConfigRollout("hello", 100, (Share("a", 70), Share("b", 30)), start_time=1,
                                 next_step_time=50, step_duration=5, step_size=10),))
    now = step(baseline([("hello", "b", 50)]), mid, now=10)
    assert shares(now) == [("a", 20), ("b", 30)]


def test_the_state_survives_encoding_and_garbage_is_a_fresh_start() -> None:
    r = Rollout((ConfigRollout("hello", 100, (Share("a", 60), Share("b", 40)), start_time=1.5,
                               next_step_time=7, step_duration=2, step_size=4),))
    assert decode(r.encode()) == r
    assert decode("not json") is None and decode("") is None and decode('[{"x": 1}]') is None


def test_status_traffic_splits_only_the_latest_revision_target() -> None:
    resolved = [
        {"revisionName": "b", "latestRevision": True, "percent": 80},
        {"revisionName": "old", "latestRevision": False, "percent": 20, "tag": "prev"},
    ]
    r = step(baseline([("hello", "b", 80)]), baseline([("hello", "a", 80)]), now=0)
    out = status_traffic(resolved, ["hello", None], r)
    assert out == [
        {"revisionName": "a", "latestRevision": True, "percent": 79},
        {"revisionName": "b", "latestRevision": True, "percent": 1},
        {"revisionName": "old", "latestRevision": False, "percent": 20, "tag": "prev"},
    ]


def _service(annotations: dict[str, str]) -> dict:  # type: ignore[type-arg]
    svc = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "default", "annotations": annotations},
        "spec": {"template": {"spec": {"containers": [{"image": "/srv/app"}]}}},
    }
    default_service(svc)
    return svc


@pytest.mark.parametrize("value, message", [
    ("five minutes", "invalid value: five minutes"),
    ("211s44ms", "rollout-duration=211s44ms is not at second precision"),
    ("-211s", "rollout-duration=-211s must be positive"),
])
def test_a_bad_rollout_duration_is_refused_with_its_path(value: str, message: str) -> None:
    path = "metadata.annotations.serving.knative.dev/rollout-duration"
    errs = validate_service(_service({"serving.knative.dev/rollout-duration": value}), None)
    assert [(e.path, e.message) for e in errs] == [(path, message)]
    route = {"apiVersion": "serving.knative.dev/v1", "kind": "Route",
             "metadata": {"name": "r", "namespace": "default",
                          "annotations": {"serving.knative.dev/rollout-duration": value}},
             "spec": {"traffic": [{"configurationName": "hello", "percent": 100}]}}
    default_route(route)
    assert [(e.path, e.message) for e in validate_route(route, None)] == [(path, message)]


def test_a_good_rollout_duration_is_accepted_without_a_warning() -> None:
    svc = _service({"serving.knative.dev/rollout-duration": "2m"})
    assert validate_service(svc, None) == []
    assert service_warnings(svc) == []


def test_knative_annotations_the_engine_does_not_honour_are_warned_about() -> None:
    svc = _service({"networking.knative.dev/ingress.class": "kourier.ingress.networking.knative.dev",
                    "networking.knative.dev/disable-auto-tls": "true"})
    svc["spec"]["template"]["metadata"] = {
        "annotations": {"queue.sidecar.serving.knative.dev/resource-percentage": "10"}}
    warnings = service_warnings(svc)
    assert any(w.startswith("metadata.annotations.networking.knative.dev/ingress.class is accepted "
                            "but not honoured") for w in warnings)
    assert any("networking.knative.dev/disable-auto-tls" in w for w in warnings)
    assert any(w.startswith("spec.template.metadata.annotations.queue.sidecar.serving.knative.dev/"
                            "resource-percentage is accepted but not honoured") for w in warnings)
    assert route_warnings({"metadata": {"annotations": {
        "networking.knative.dev/http-option": "redirected"}}})


def test_network_settings() -> None:
    assert load_network_settings({"rollout-duration": "90s"}).rollout_duration_s == 90
    assert load_network_settings({}).rollout_duration_s == 0
    with pytest.raises(ValueError, match=r"rollout-duration: rollout-duration=1\.5s is not at second"):
        load_network_settings({"rollout-duration": "1.5s"})
    with pytest.raises(ValueError, match="domain-template: unknown network setting"):
        load_network_settings({"domain-template": "x"})
