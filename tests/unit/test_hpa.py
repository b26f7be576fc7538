"""HPA-class decider traces with a fake clock; every expected number is worked out by hand from
Kubernetes' formulas: ratio r = mean utilisation / target (target 80 % unless annotated),
no change while |1 - r| <= 0.1, else desired = ceil(r × replicas measured); scale-down only to
the largest recommendation of the last 300 s; scale-up at most max(start + 4, 2 × start) per
15 s; never below 1."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api.autoscaling import HPA
from controller.autoscaling.annotations import RevisionScaling, effective
from controller.autoscaling.hpa import HpaDecider
from controller.autoscaling.settings import AutoscalerSettings

P = "autoscaling.knative.dev/"


def scaling(annotations: dict[str, str] | None = None, **settings: Any) -> RevisionScaling:
    settings.setdefault("max_replicas_per_machine", 1000)
    a = {P + "class": HPA, **(annotations or {})}
    return effective(AutoscalerSettings(**settings), a, 0)


def decider(annotations: dict[str, str] | None = None, **settings: Any) -> HpaDecider:
    return HpaDecider(scaling(annotations, **settings))


def util(*values: float) -> dict[str, float]:
    return {f"r{i}": v for i, v in enumerate(values)}


def test_effective_target() -> None:
    s = scaling()
    assert (s.metric, s.target, s.target_utilization_percentage) == ("cpu", 80.0, 100.0)
    assert scaling({P + "target": "50"}).target == 50.0


def test_refuses_the_kpa_class() -> None:
    with pytest.raises(ValueError, match="HpaDecider handles"):
        HpaDecider(effective(AutoscalerSettings(), {}, 0))


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (85.0, 4),  # r = 1.0625: within 10 %
        (72.0, 4),  # r = 0.9: on the bound, still within
        (88.0, 4),  # r = 1.1: on the bound, still within
        (89.0, 5),  # r = 1.1125: ceil(4.45) = 5
        (71.0, 4),  # r = 0.8875 → ceil(3.55) = 4 (a lower recommendation that rounds back up)
        (60.0, 3),  # r = 0.75 → ceil(3.0) = 3; the first recommendation, so nothing holds it
    ],
)
def test_tolerance_band(value: float, want: int) -> None:
    d = decider()
    r = d.decide(0.0, util(value, value, value, value), 4)
    assert r.desired_scale == want, r.reason
    assert not r.in_panic
    assert (r.observed_stable, r.observed_panic, r.target, r.ready_pods) == (value, None, 80.0, 4)


def test_tolerance_reason() -> None:
    r = decider().decide(0.0, util(85, 85, 85, 85), 4)
    assert r.reason == (
        "cpu: 85.0 % of a core per replica over a target of 80.0 % with 4 measured of 4 ready "
        "(ratio 1.06), within the 10 % tolerance: 4"
    )


def test_scale_up() -> None:
    d = decider()
    # 2 replicas at 200 %: r = 2.5, ceil(2.5 × 2) = 5; the rate allows max(2 + 4, 2 × 2) = 6.
    r = d.decide(0.0, util(200, 200), 2)
    assert (r.desired_scale, r.unclamped_scale, r.clamped_by) == (5, 5, None)
    assert r.reason.startswith("cpu: 200.0 % of a core per replica over a target of 80.0 %")
    assert r.reason.endswith("(ratio 2.50): 5")


def test_custom_target() -> None:
    # target 50: 3 replicas at 90 % → r = 1.8, ceil(5.4) = 6 ≤ max(3 + 4, 6) = 7.
    r = decider({P + "target": "50"}).decide(0.0, util(90, 90, 90), 3)
    assert (r.desired_scale, r.target) == (6, 50.0)


def test_scale_up_rate_and_unready_replicas() -> None:
    d = decider()
    # t=0: 2 at 400 % → r = 5, ceil(10) = 10; the rate allows max(2 + 4, 4) = 6.
    r = d.decide(0.0, util(400, 400), 2)
    assert r.desired_scale == 6
    assert "scale-up rate (+4 or +100 % per 15s) allows 6 (wants 10)" in r.reason
    # t=5: still 2 ready of the 6 wanted. The 4 starting replicas count as 0 % on a scale-up:
    # (400 + 400 + 0 × 4) / 6 = 133.3 → r = 1.667, ceil(1.667 × 6) = 10. The +4 at t=0 is in the
    # period, so it started from 2: the limit is still 6.
    r = d.decide(5.0, util(400, 400), 2)
    assert r.desired_scale == 6
    assert "4 not ready" in r.reason
    # t=15: the event at t=0 left the period: start 6, limit max(10, 12) = 12 → 10.
    r = d.decide(15.0, util(400, 400), 2)
    assert r.desired_scale == 10


def test_unready_replicas_dampen_a_small_scale_up() -> None:
    d = decider()
    d.decide(0.0, util(80, 80, 80, 80), 4)  # r = 1 → 4
    # current 4, 2 ready at 120 % (r = 1.5), 2 not ready yet: (120 + 120 + 0 + 0) / 4 = 60 →
    # r = 0.75, the direction flipped → keep 4.
    r = d.decide(2.0, util(120, 120), 2)
    assert r.desired_scale == 4
    assert "too uncertain to change" in r.reason


def test_missing_readings() -> None:
    # Scale-down: 4 ready, 2 measured at 20 % (r = 0.25); the 2 others count at the target:
    # (20 + 20 + 80 + 80) / 4 = 50 → r = 0.625, ceil(0.625 × 4) = 3.
    r = decider().decide(0.0, util(20, 20), 4)
    assert r.desired_scale == 3
    assert "2 without a reading" in r.reason
    # Scale-up: 2 measured at 160 % (r = 2); the others count as 0 %: 80 → r = 1 → keep 4.
    r = decider().decide(0.0, util(160, 160), 4)
    assert r.desired_scale == 4
    assert "too uncertain to change" in r.reason
    # 2 measured at 240 % (r = 3): (240 + 240) / 4 = 120 → r = 1.5, ceil(6) = 6 ≤ max(8, 8).
    r = decider().decide(0.0, util(240, 240), 4)
    assert r.desired_scale == 6


def test_stabilised_scale_down() -> None:
    d = decider()
    trace = [
        # t, utilisation of each replica, ready → want
        (0.0, (80, 80, 80, 80), 4, 4),  # r = 1: 4, recorded 4
        (10.0, (20, 20, 20, 20), 4, 4),  # r = 0.25 → 1; the window's max is 4
        (150.0, (40, 40, 40, 40), 4, 4),  # r = 0.5 → 2; max still 4
        (299.0, (20, 20, 20, 20), 4, 4),  # → 1; t=0 is still in (−1, 299]
        (300.0, (20, 20, 20, 20), 4, 2),  # t=0 left (0, 300]: max(1, 2, 1, 1) = 2
        (450.0, (20, 20), 2, 1),  # r = 0.25 → ceil(0.5) = 1; t=150 left (150, 450]: max 1
    ]
    for t, values, ready, want in trace:
        r = d.decide(t, util(*values), ready)
        assert r.desired_scale == want, (t, r.reason)
    assert d.current_scale == 1


def test_stabilisation_reason() -> None:
    d = decider()
    d.decide(0.0, util(80, 80, 80, 80), 4)
    r = d.decide(10.0, util(20, 20, 20, 20), 4)
    assert r.reason.endswith(": 4; scale-down stabilisation 300s holds 4 (wants 1)")


def test_never_below_one() -> None:
    d = decider({P + "min-scale": "0"})
    # 1 replica at 0 %: r = 0, ceil(0) = 0; Knative's HPA class keeps at least 1.
    r = d.decide(0.0, util(0.0), 1)
    assert (r.desired_scale, r.unclamped_scale, r.clamped_by) == (1, 0, None)
    assert "the HPA class never scales below 1" in r.reason
    # Not routed: still 1.
    r = d.decide(2.0, util(0.0), 1, routed=False)
    assert r.desired_scale == 1
    assert "not routed" in r.reason


def test_no_data_keeps_the_scale() -> None:
    d = decider()
    assert d.decide(0.0, {}, 0).desired_scale == 1  # a new revision: max(1, ready)
    r = d.decide(2.0, {}, 3, current_scale=3)
    assert (r.desired_scale, r.observed_stable) == (3, None)
    assert r.reason == "no CPU data: keeping 3"


def test_min_scale_only_while_routed() -> None:
    d = decider({P + "min-scale": "3"})
    # 3 at 10 %: r = 0.125, ceil(0.375) = 1, the first recommendation → 1, raised to 3.
    r = d.decide(0.0, util(10, 10, 10), 3)
    assert (r.desired_scale, r.unclamped_scale, r.clamped_by) == (3, 1, "min-scale")
    r = decider({P + "min-scale": "3"}).decide(0.0, util(10, 10, 10), 3, routed=False)
    assert (r.desired_scale, r.clamped_by) == (1, None)


@pytest.mark.parametrize(
    ("annotations", "settings", "want", "by"),
    [
        ({P + "max-scale": "5"}, {}, 5, "max-scale"),
        ({}, {"max_scale_limit": 6}, 6, "max-scale-limit"),
        ({P + "max-scale": "7"}, {"max_scale_limit": 6}, 6, "max-scale-limit"),
        ({}, {"max_replicas_per_machine": 3}, 3, "max-replicas-per-machine"),
        ({}, {}, 8, None),
    ],
)
def test_caps(annotations: dict[str, str], settings: dict[str, Any], want: int, by: str | None) -> None:
    # 4 at 160 %: r = 2, ceil(8) = 8, the rate allows max(4 + 4, 8) = 8.
    r = decider(annotations, **settings).decide(0.0, util(160, 160, 160, 160), 4)
    assert (r.desired_scale, r.unclamped_scale, r.clamped_by) == (want, 8, by)
    assert r.clamped == (by is not None)
    if by:
        assert f"capped at {by} {want} (wanted 8)" in r.reason


def test_memory_metric_keeps_the_scale() -> None:
    d = decider({P + "metric": "memory"})
    r = d.decide(0.0, util(400, 400, 400, 400), 4)
    assert r.desired_scale == 4
    assert "memory metric is not supported" in r.reason
    r = d.decide(2.0, util(400, 400, 400, 400), 4, current_scale=2)
    assert r.desired_scale == 2


def test_current_scale_from_the_caller() -> None:
    # The caller drives 5; 5 at 85 % is within the tolerance → 5 (not the 3 ready).
    r = decider().decide(0.0, util(85, 85, 85, 85, 85), 5, current_scale=5)
    assert r.desired_scale == 5


def test_update_keeps_the_window() -> None:
    d = decider()
    d.decide(0.0, util(80, 80, 80, 80), 4)
    d.update(scaling({P + "max-scale": "10"}))
    r = d.decide(10.0, util(20, 20, 20, 20), 4)
    assert r.desired_scale == 4  # still held by the recommendation of t=0
    with pytest.raises(ValueError):
        d.update(effective(AutoscalerSettings(), {}, 0))
