"""KPA decider traces with a fake clock; every expected number is worked out from the formulas:
T = target per replica, dspc = ceil(stable / T), dppc = ceil(panic / T),
maxUp = ceil(1000 × max(1, ready)), maxDown = floor(max(1, ready) / 2),
panic when dppc / max(1, ready) ≥ 2."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api.autoscaling import HPA
from controller.autoscaling.annotations import RevisionScaling, effective
from controller.autoscaling.kpa import KpaDecider
from controller.autoscaling.settings import AutoscalerSettings
from controller.autoscaling.windows import RevisionMetrics

P = "autoscaling.knative.dev/"


def scaling(cc: int = 10, annotations: dict[str, str] | None = None, **settings: Any) -> RevisionScaling:
    settings.setdefault("max_replicas_per_machine", 1000)
    return effective(AutoscalerSettings(**settings), annotations or {}, cc)


def decider(cc: int = 10, annotations: dict[str, str] | None = None, **settings: Any) -> KpaDecider:
    # Already initialized unless a test is about initial-scale.
    return KpaDecider(scaling(cc, annotations, **settings), initialized=True)


def warm(d: KpaDecider, t: float = -2.0) -> KpaDecider:
    """A first tick with one ready pod: a decider that first meets more than one pod starts in
    panic (Knative's restart rule, tested on its own), which the traces below do not want."""
    d.decide(t, 7.0, 7.0, 1)
    return d


def test_step_up() -> None:
    d = warm(decider())  # T = 10 × 70 % = 7
    # stable 20, ready 2: dspc = ceil(2.86) = 3, dppc = 3, 3 / 2 = 1.5 < 2 → stable mode, 3.
    r = d.decide(0.0, 20.0, 20.0, 2)
    assert (r.desired_scale, r.in_panic) == (3, False)
    assert r.reason == "stable: 20.0 concurrent over a target of 7.0 per replica with 2 ready (143 %): 3"
    assert (r.observed_stable, r.observed_panic, r.target) == (20.0, 20.0, 7.0)


def test_ramp() -> None:
    d = warm(decider())
    trace = [
        # t, stable, panic, ready → want
        (0.0, 10.0, 12.0, 2, 2),  # dspc 2, dppc 2, 2/2 = 1
        (2.0, 14.0, 20.0, 2, 2),  # dspc 2, dppc 3, 1.5
        (4.0, 15.0, 21.0, 2, 3),  # dspc ceil(2.14) = 3, dppc 3, 1.5
        (6.0, 20.0, 28.0, 3, 3),  # dspc ceil(2.86) = 3, dppc 4, 1.33
        (8.0, 25.0, 35.0, 3, 4),  # dspc ceil(3.57) = 4, dppc 5, 1.67
    ]
    for t, s, p, ready, want in trace:
        r = d.decide(t, s, p, ready)
        assert (r.desired_scale, r.in_panic) == (want, False), (t, r.reason)


def test_burst_into_panic_stays_and_exits_after_a_stable_window() -> None:
    d = decider()
    # t=0: panic 34, ready 1: dppc = ceil(4.857) = 5, 5 / 1 = 5 ≥ 2 → panic, want max(1, 5) = 5.
    r = d.decide(0.0, 5.0, 34.0, 1)
    assert (r.desired_scale, r.in_panic) == (5, True)
    assert r.reason.startswith(
        "panic: 34.0 concurrent over a target of 7.0 per replica with 1 ready (486 %): 5"
    )
    # t=2: panic 80, ready 5: dppc = ceil(11.43) = 12, 12/5 = 2.4 → still over (panic time = 2), want 12.
    r = d.decide(2.0, 10.0, 80.0, 5)
    assert (r.desired_scale, r.in_panic) == (12, True)
    # t=4: the burst is gone: panic 14 → dppc 2, 2/12 < 2, but a panic never scales down:
    # stable would be max(ceil(15/7) = 3, maxDown floor(12/2) = 6) = 6 → held at 12.
    r = d.decide(4.0, 15.0, 14.0, 12)
    assert (r.desired_scale, r.in_panic) == (12, True)
    assert "in panic, not scaling down from 12" in r.reason
    # t=62: 62 is not after 2 + 60 → still panicking.
    assert d.decide(62.0, 15.0, 14.0, 12).desired_scale == 12
    # t=64: a whole stable window since the last tick over the threshold → stable mode: 6.
    r = d.decide(64.0, 15.0, 14.0, 12)
    assert (r.desired_scale, r.in_panic) == (6, False)
    assert "left panic" in r.reason


def test_panic_tick_over_threshold_extends_the_panic() -> None:
    d = decider()
    d.decide(0.0, 14.0, 14.0, 1)  # dppc 2, 2/1 = 2 ≥ 2 → panic at 0
    d.decide(50.0, 14.0, 28.0, 2)  # dppc 4, 4/2 = 2 → panic extended to 50
    assert d.decide(100.0, 7.0, 7.0, 4).in_panic  # 100 is not after 50 + 60
    assert not d.decide(112.0, 7.0, 7.0, 4).in_panic


def test_rate_limits() -> None:
    d = decider(max_scale_up_rate=2.0, max_scale_down_rate=4.0)
    # ready 3, stable = panic 70 → dspc 10, maxUp = ceil(2 × 3) = 6; 10/3 ≥ 2 → panic at 6.
    r = d.decide(0.0, 70.0, 70.0, 3)
    assert r.desired_scale == 6
    assert "max-scale-up-rate 2 allows 6" in r.reason
    d = decider()
    # ready 10, stable = panic 7 → dspc 1, maxDown = floor(10 / 2) = 5.
    assert d.decide(0.0, 7.0, 7.0, 10).desired_scale == 10  # a new decider with >1 pod starts in panic
    d = decider()
    d.decide(0.0, 7.0, 7.0, 1)
    assert d.decide(2.0, 7.0, 7.0, 10).desired_scale == 5


def test_restart_with_several_pods_starts_in_panic() -> None:
    # Knative: history is lost on restart, so a decider meeting > 1 pod holds them for a window.
    d = decider()
    r = d.decide(0.0, 0.0, 0.0, 4)
    assert (r.desired_scale, r.in_panic) == (4, True)
    assert d.decide(61.0, 0.0, 0.0, 4).in_panic is False


def test_idle_to_zero_after_window_and_grace_from_reports() -> None:
    d = decider()
    m = RevisionMetrics(60, 6)
    # Traffic of 3 concurrent in buckets 0..9, then the gateway reports 0 every second.
    # stable > 0 while bucket 9 is in the window (now < 69); at t=70 the window 11..70 is all 0:
    # the quiet period starts at 70, and the grace of 30 s ends at 100.
    decisions = {}
    for t in range(0, 112, 2):
        for b in range(max(0, t - 2), t):
            m.record_report("w", b, 3.0 if b < 10 else 0.0, 0)
        s, p = m.observed(float(t), "concurrency")
        decisions[t] = d.decide(float(t), s, p, 1)
    assert decisions[68].observed_stable and decisions[68].observed_stable > 0
    assert decisions[70].observed_stable == 0.0
    assert decisions[70].desired_scale == 1
    assert "scale to zero in 30s" in decisions[70].reason
    assert decisions[98].desired_scale == 1
    assert decisions[100].desired_scale == 0
    assert decisions[100].reason == "idle: no traffic for the stable window (60s) plus 30s: scaling to 0"


def test_pod_retention_keeps_the_last_pod_longer() -> None:
    d = decider(scale_to_zero_pod_retention_period_s=45.0)
    d.decide(0.0, 3.0, 3.0, 1)
    # The stable window is quiet from 10: zero at 10 + max(30, 45) = 55.
    assert d.decide(10.0, 0.0, 0.0, 1).desired_scale == 1
    assert d.decide(54.0, 0.0, 0.0, 1).desired_scale == 1
    assert d.decide(55.0, 0.0, 0.0, 1).desired_scale == 0


def test_scale_to_zero_disabled_keeps_one() -> None:
    d = decider(enable_scale_to_zero=False)
    d.decide(0.0, 3.0, 3.0, 1)
    r = d.decide(500.0, 0.0, 0.0, 1)
    assert r.desired_scale == 1
    assert "scale to zero is disabled" in r.reason


def test_traffic_resets_the_idle_clock() -> None:
    d = decider()
    d.decide(0.0, 3.0, 3.0, 1)
    d.decide(10.0, 0.0, 0.0, 1)  # quiet from 10
    d.decide(20.0, 1.0, 1.0, 1)  # traffic again
    assert d.decide(40.0, 0.0, 0.0, 1).desired_scale == 1  # quiet from 40
    assert d.decide(69.0, 0.0, 0.0, 1).desired_scale == 1
    assert d.decide(70.0, 0.0, 0.0, 1).desired_scale == 0


def test_no_data_keeps_the_scale_until_idle() -> None:
    d = decider()
    d.decide(0.0, 14.0, 14.0, 3)  # a new decider with 3 pods: panic hold at 3
    r = d.decide(100.0, None, None, 3)
    # No report in the window: keep 3 (panic ended: 100 > 0 + 60). The quiet period starts now.
    assert (r.desired_scale, r.reason) == (3, "no data: keeping 3")
    assert d.decide(129.0, None, None, 3).desired_scale == 3
    r = d.decide(130.0, None, None, 3)  # 100 + 30
    assert r.desired_scale == 0
    assert r.reason.startswith("idle:")


def test_new_revision_without_any_data_waits_a_window_then_grace() -> None:
    d = decider()
    assert d.decide(0.0, None, None, 1).desired_scale == 1
    assert d.decide(89.0, None, None, 1).desired_scale == 1
    assert d.decide(90.0, None, None, 1).desired_scale == 0  # 0 + 60 + 30


def test_scale_down_delay() -> None:
    # Recommendations are held for ceil(10 / 2) = 5 ticks: the max over indexes (t/2 - 5, t/2].
    d = decider(scale_down_delay_s=10.0)
    assert d.decide(0.0, 7.0, 7.0, 1).desired_scale == 1
    assert d.decide(2.0, 35.0, 35.0, 3).desired_scale == 5  # dspc 5, 5/3 = 1.67
    # Demand drops: dspc 2, maxDown floor(5/2) = 2 → wants 2, the window still holds 5.
    for t in (4.0, 6.0, 8.0, 10.0):
        r = d.decide(t, 14.0, 14.0, 5)
        assert r.desired_scale == 5, t
    assert "scale-down-delay 10s holds 5 (wants 2)" in r.reason
    # t=12: index 6, the window is indexes 2..6; the 5 was at index 1 → 2.
    assert d.decide(12.0, 14.0, 14.0, 5).desired_scale == 2


def test_min_and_max_bounds_are_reported() -> None:
    d = decider(annotations={P + "min-scale": "2", P + "max-scale": "3"})
    r = d.decide(0.0, 0.0, 0.0, 1)
    assert (r.desired_scale, r.clamped_by, r.unclamped_scale) == (2, "min-scale", 0)
    # ready 3, stable = panic 70: dspc 10, 10/3 ≥ 2 → panic 10 → capped at 3.
    r = d.decide(2.0, 70.0, 70.0, 3)
    assert (r.desired_scale, r.clamped_by, r.unclamped_scale, r.clamped) == (3, "max-scale", 10, True)
    assert "capped at max-scale 3 (wanted 10)" in r.reason
    # t=4: still in panic (since 2), held at its max 10 → capped at 3 again.
    r = d.decide(4.0, 14.0, 14.0, 3)
    assert (r.desired_scale, r.clamped_by, r.unclamped_scale) == (3, "max-scale", 10)


def test_max_scale_limit_and_machine_cap() -> None:
    # The tightest cap binds: machine 4 < limit 8.
    d = decider(max_scale_limit=8, max_scale=8, max_replicas_per_machine=4)
    r = d.decide(0.0, 700.0, 700.0, 1)  # dspc 100
    assert (r.desired_scale, r.clamped_by) == (4, "max-replicas-per-machine")
    d = decider(max_scale_limit=3, max_scale=3, max_replicas_per_machine=4)
    r = d.decide(0.0, 700.0, 700.0, 1)
    assert (r.desired_scale, r.clamped_by) == (3, "max-scale")
    d = decider(annotations={P + "max-scale": "0"}, max_scale_limit=3, max_scale=3)
    assert d.decide(0.0, 700.0, 700.0, 1).clamped_by == "max-scale-limit"


def test_activation_scale_from_zero() -> None:
    d = decider(annotations={P + "activation-scale": "3"})
    # From zero with 1 waiting: dspc = ceil(1/7) = 1, dppc 1, 1/1 < 2 → 1, raised to activation-scale 3.
    r = d.decide(0.0, 1.0, 1.0, 0)
    assert r.desired_scale == 3
    assert "activation-scale 3" in r.reason
    # No traffic: activation-scale does not hold pods up.
    d2 = decider(annotations={P + "activation-scale": "3"})
    assert d2.decide(0.0, 0.0, 0.0, 0).desired_scale == 0


def test_initial_scale_until_reached() -> None:
    d = KpaDecider(scaling(annotations={P + "initial-scale": "3"}))
    r = d.decide(0.0, None, None, 0)
    assert (r.desired_scale, r.clamped_by) == (3, "initial-scale")
    assert not d.initialized
    assert d.decide(2.0, 0.0, 0.0, 2).desired_scale == 3  # 2 ready: not reached yet
    d.decide(4.0, 0.0, 0.0, 3)
    assert d.initialized
    # From then on the formula rules: stable 7 → dspc 1, maxDown floor(3/2) = 1 → 1.
    assert d.decide(6.0, 7.0, 7.0, 3).desired_scale == 1


def test_initial_scale_zero() -> None:
    d = KpaDecider(scaling(allow_zero_initial_scale=True, initial_scale=0))
    assert d.decide(0.0, None, None, 0).desired_scale == 0
    assert d.initialized


def test_rps_metric() -> None:
    d = warm(decider(annotations={P + "metric": "rps"}))
    # T = 200 × 70 % = 140; 300 rps with 2 ready: dspc ceil(2.14) = 3, 3/2 = 1.5 → 3.
    r = d.decide(0.0, 300.0, 300.0, 2)
    assert r.desired_scale == 3
    assert r.reason.startswith("stable: 300.0 rps over a target of 140.0 per replica with 2 ready (107 %)")


def test_missing_worker_report_does_not_scale_down() -> None:
    m = RevisionMetrics(60, 6)
    for b in range(0, 30):
        m.record_report("a", b, 14.0, 0)
        m.record_report("b", b, 14.0, 0)
    m.record_report("a", 30, 14.0, 0)  # b's report for 30 is missing
    s, p = m.observed(31.0, "concurrency")
    # Bucket 30 is unknown and skipped: panic window 26..31 → 26..29 at 28 → 28. Counting b as 0
    # would read (4 × 28 + 14) / 5 = 25.2.
    assert (s, p) == (28.0, 28.0)
    d = warm(decider(), t=29.0)
    # 4 ready, dspc = dppc = 4, 4/4 = 1 → 4: no scale-down from a lost report.
    assert d.decide(31.0, s, p, 4).desired_scale == 4


def test_unrouted_revision_ignores_min_scale_and_goes_to_zero() -> None:
    d = decider(annotations={P + "min-scale": "2"})
    assert d.decide(0.0, 0.0, 0.0, 1).desired_scale == 2  # routed: min-scale
    # Unrouted: no min-scale and no scale-down rate limit. The first tick was quiet, so the
    # quiet period started at 0 + 60 (a new decider watches a whole window): zero at 90.
    r = d.decide(50.0, 0.0, 0.0, 2, routed=False)
    assert r.desired_scale == 1
    assert "not routed, min-scale ignored" in r.reason
    assert d.decide(90.0, 0.0, 0.0, 2, routed=False).desired_scale == 0


def test_unrouted_revision_with_traffic_in_flight_keeps_its_computed_scale() -> None:
    d = decider(annotations={P + "min-scale": "5"})
    d.decide(0.0, 7.0, 7.0, 1)
    # 14 concurrent still draining: dspc 2; unrouted → maxDown 0 and no min-scale: 2.
    assert d.decide(2.0, 14.0, 14.0, 5, routed=False).desired_scale == 2


def test_hpa_class_is_refused() -> None:
    with pytest.raises(ValueError):
        KpaDecider(scaling(annotations={P + "class": HPA}))


def test_update_keeps_state() -> None:
    d = decider()
    d.decide(0.0, 34.0, 34.0, 1)
    d.update(scaling(annotations={P + "scale-down-delay": "10s"}))
    assert d.in_panic
    assert d.scaling.scale_down_delay_s == 10.0
