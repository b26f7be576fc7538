"""The scaler applies the KPA decider: reports in, decisions out, a poke decides at once."""

from __future__ import annotations

from controller.autoscaling.scaler import Scaler
from controller.autoscaling.settings import AutoscalerSettings
from flint_common.wire import BucketLoad, LearnedLimits, Poke, Stats, decode_up

KEY = "default/hello-00001"


def revision(ready_once: bool = True, annotations: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    conds = [{"type": "ResourcesAvailable", "status": "True"}] if ready_once else []
    return {
        "metadata": {"namespace": "default", "name": "hello-00001", "annotations": annotations or {}},
        "spec": {"containerConcurrency": 0},
        "status": {"conditions": conds},
    }


class World:
    def __init__(self) -> None:
        self.rev: dict | None = revision()  # type: ignore[type-arg]
        self.ready = 0
        self.changed: list[str] = []
        self.connected = True
        self.now = 1000.0
        self.scaler = Scaler(
            AutoscalerSettings(stable_window_s=6.0, scale_to_zero_grace_period_s=0.0),
            revision=lambda key: self.rev if key == KEY else None,
            ready_replicas=lambda key: self.ready,
            routed=lambda key: True,
            on_change=self.changed.append,
            reporting=lambda: self.connected,
            clock=lambda: self.now,
        )


def test_a_poke_decides_at_once_from_zero() -> None:
    w = World()
    w.scaler.record_poke("gw/0", Poke(KEY, 3))
    assert w.scaler.desired(KEY) == 1  # ceil(3 / 70) = 1
    assert w.changed == [KEY]


def test_reports_drive_the_decision_every_tick() -> None:
    w = World()
    w.ready = 1
    for second in range(994, 1001):
        w.scaler.record_stats("gw/0", Stats(second, {KEY: BucketLoad(210.0, 50)}))
    w.scaler.tick(w.now)
    # 210 concurrent over a target of 100 × 70 % = 70 per replica: ceil(210 / 70) = 3.
    assert w.scaler.desired(KEY) == 3
    view = w.scaler.view(KEY)
    assert view is not None and view["observedStable"] == 210.0 and view["desiredScale"] == 3


def test_the_gateways_frames_decode_into_what_the_scaler_takes() -> None:
    """What a gateway sends (its encodings as of the link's first typed version) drives the
    scaler through `flint_common.wire`, not through raw dicts."""
    w = World()
    w.ready = 1
    for second in range(994, 1001):
        frame = (f'{{"type":"stats","bucket":{second},"revisions":{{"{KEY}":{{"concurrency":210.0,'
                 '"requests":50},"other/gone-00001":{"concurrency":0.0,"requests":0}}}')
        stats = decode_up(frame)
        assert isinstance(stats, Stats)
        w.scaler.record_stats("gw/0", stats)  # an unknown revision in the report is skipped
    w.scaler.tick(w.now)
    assert w.scaler.desired(KEY) == 3
    poke = decode_up(f'{{"type":"poke","revision":"{KEY}","waiting":1}}')
    assert poke == Poke(KEY, 1)


def test_no_gateway_connected_means_no_decision() -> None:
    """Without reports 'no data' is not idleness: a busy revision must not be scaled to zero."""
    w = World()
    w.ready = 2
    for second in range(994, 1001):
        w.scaler.record_stats("gw/0", Stats(second, {KEY: BucketLoad(100.0, 9)}))
    w.scaler.tick(w.now)
    before = w.scaler.desired(KEY)
    w.connected = False
    for _ in range(100):
        w.now += 2
        w.scaler.tick(w.now)
    assert w.scaler.desired(KEY) == before


def test_unknown_revision_is_not_driven() -> None:
    w = World()
    w.rev = None
    assert w.scaler.desired(KEY) is None
    w.scaler.record_poke("gw/0", Poke(KEY, 1))
    assert w.changed == []


def test_hpa_revisions_ignore_pokes() -> None:
    w = World()
    w.rev = revision(annotations={"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
                                  "autoscaling.knative.dev/metric": "cpu"})
    w.scaler.record_poke("gw/0", Poke(KEY, 1))
    assert w.changed == []
    w.ready = 1
    assert w.scaler.desired(KEY) == 1  # the HPA class never goes below one


def test_a_disconnected_workers_learned_limits_are_forgotten() -> None:
    w = World()
    other = "default/other-00001"
    load = {KEY: BucketLoad(1.0, 1)}
    w.scaler.record_stats("gw/0", Stats(999, load, {KEY: LearnedLimits({"r1": 2}, 1, 0)}))
    w.scaler.record_stats("gw/1", Stats(999, load, {
        KEY: LearnedLimits({"r1": 5, "r2": 3}, 0, 2), other: LearnedLimits({"r9": 1}, 1, 0)}))
    assert w.scaler.learned_limits(KEY) == {"replicas": {"r1": 2, "r2": 3}, "lowered": 1, "raised": 2}
    w.scaler.forget_worker("gw/1")
    assert w.scaler.learned_limits(KEY) == {"replicas": {"r1": 2}, "lowered": 1, "raised": 0}
    assert w.scaler.learned_limits(other) is None
    w.scaler.forget_worker("gw/0")
    w.scaler.forget_worker("gw/0")  # idempotent; unknown workers too
    w.scaler.forget_worker("gw/9")
    assert w.scaler.learned_limits(KEY) is None
    w.scaler.tick(w.now)
    view = w.scaler.view(KEY)  # what `flint describe revision` shows
    assert view is not None and view["learnedLimits"] is None
    # a worker back on a new link reports afresh
    w.scaler.record_stats("gw/1", Stats(1000, load, {KEY: LearnedLimits({"r2": 4}, 0, 0)}))
    assert w.scaler.learned_limits(KEY) == {"replicas": {"r2": 4}, "lowered": 0, "raised": 0}


def test_a_new_leaders_scaler_scales_nothing_down_before_a_stable_window_of_reports() -> None:
    w = World()
    w.ready = 3
    for second in range(994, 1001):  # the old leader saw 210 concurrent: three replicas
        w.scaler.record_stats("gw/0", Stats(second, {KEY: BucketLoad(210.0, 50)}))
    w.scaler.tick(w.now)
    assert w.scaler.desired(KEY) == 3
    w.scaler.reset()  # a new term: what the last one learned is not ours
    assert w.scaler.decision(KEY) is None
    # The load has dropped to one replica's worth, but the new leader has only seconds of it.
    for second in range(1001, 1006):
        w.now = float(second)
        w.scaler.record_stats("gw/0", Stats(second, {KEY: BucketLoad(20.0, 50)}))
        w.scaler.tick(w.now)
        assert w.scaler.desired(KEY) == 3, second
    for second in range(1006, 1016):  # a whole stable window (6 s) of reports: now it may
        w.now = float(second)
        w.scaler.record_stats("gw/0", Stats(second, {KEY: BucketLoad(20.0, 50)}))
        w.scaler.tick(w.now)
    assert w.scaler.desired(KEY) == 1


def test_a_new_leaders_scaler_keeps_a_single_idle_replica_for_a_stable_window() -> None:
    w = World()
    w.ready = 1
    w.scaler.reset()
    for second in range(1000, 1006):  # no traffic reported, but not yet a stable window of it
        w.now = float(second)
        w.scaler.tick(w.now)
        assert w.scaler.desired(KEY) == 1, second
    for second in range(1006, 1010):
        w.now = float(second)
        w.scaler.tick(w.now)
    assert w.scaler.desired(KEY) == 0
