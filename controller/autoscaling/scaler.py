"""Applies the KPA decider: gateway reports in, a decision per revision every tick and on a poke."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.api.autoscaling import HPA
from controller.autoscaling.annotations import RevisionScaling, effective
from controller.autoscaling.cpu import CpuSampler, cpu_seconds_by_group
from controller.autoscaling.hpa import HpaDecider
from controller.autoscaling.kpa import Decision, KpaDecider
from controller.autoscaling.settings import AutoscalerSettings
from controller.autoscaling.windows import RevisionMetrics
from flint_common.wire import LearnedLimits, Poke, Stats

log = logging.getLogger("flint.scaler")

Obj = dict[str, Any]


@dataclass
class _Revision:
    scaling: RevisionScaling
    metrics: RevisionMetrics
    decider: KpaDecider | HpaDecider
    decision: Decision | None = None
    sampler: CpuSampler | None = None
    """HPA class only: CPU utilisation of the ready replicas from /proc."""
    metrics_cpu: dict[str, float] = field(default_factory=dict)
    """HPA class only: the last utilisation per replica, percent of one core."""
    clamps: dict[str, int] | None = None
    """Decisions bounded, by what bounded them (a counter for /metrics)."""


def scaling_of(settings: AutoscalerSettings, revision: Obj) -> RevisionScaling:
    """The revision's effective scaling knobs: its annotations over the global settings."""
    annotations = revision["metadata"].get("annotations") or {}
    cc = int((revision.get("spec") or {}).get("containerConcurrency") or 0)
    return effective(settings, annotations, cc)


class Scaler:
    """Keeps one metrics window and one KPA decider per revision, fed by the gateways' `stats`
    and `poke` messages. `desired(key)` is what the revision reconciler scales to; a change calls
    `on_change(key)` so the reconciler runs at once."""

    def __init__(
        self,
        settings: AutoscalerSettings,
        *,
        revision: Callable[[str], Obj | None],
        ready_replicas: Callable[[str], int],
        replica_pids: Callable[[str], dict[str, int]] = lambda _key: {},
        routed: Callable[[str], bool],
        on_change: Callable[[str], None],
        reporting: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._revision = revision
        self._ready = ready_replicas
        self._pids = replica_pids
        """Ready replica id → process group, for the HPA class's CPU readings."""
        self._routed = routed
        self._on_change = on_change
        self._reporting = reporting
        """Whether any gateway is connected: without one there are no reports, and "no data"
        must not be taken for idleness (it would scale busy revisions to zero)."""
        self._clock = clock
        self._states: dict[str, _Revision] = {}
        self._task: asyncio.Task[None] | None = None
        self._limits: dict[str, dict[str, LearnedLimits]] = {}
        """revision key → gateway worker → the learned limits it reported last."""
        self._limit_keys: dict[str, set[str]] = {}
        """gateway worker → the revisions of its last report's limits."""

    # -- inputs ---------------------------------------------------------------------------------

    def record_stats(self, worker: str, stats: Stats) -> None:
        """A gateway worker's `stats` message: one bucket, every revision it saw recently."""
        for key, load in stats.revisions.items():
            state = self._state(key)
            if state is None:
                continue
            state.metrics.record_report(worker, stats.bucket, load.concurrency, load.requests)
        self._record_limits(worker, stats.limits)

    def _record_limits(self, worker: str, limits: Mapping[str, LearnedLimits]) -> None:
        """The worker's learned limits replace what it reported before (absent: none now)."""
        for key in self._limit_keys.get(worker, set()) - limits.keys():
            by_worker = self._limits.get(key)
            if by_worker is not None:
                by_worker.pop(worker, None)
                if not by_worker:
                    del self._limits[key]
        for key, lim in limits.items():
            self._limits.setdefault(key, {})[worker] = lim
        if limits:
            self._limit_keys[worker] = set(limits)
        else:
            self._limit_keys.pop(worker, None)

    def forget_worker(self, worker: str) -> None:
        """A gateway worker's link is gone: drop the learned limits it reported (a restarted
        worker learns afresh, and reports again once its link is back)."""
        self._record_limits(worker, {})

    def learned_limits(self, key: str) -> dict[str, Any] | None:
        """What the gateways learned about revision `key`'s replicas: the lowest limit per
        replica over the workers, and how often they changed; None when nothing was learned."""
        by_worker = self._limits.get(key)
        if not by_worker:
            return None
        replicas: dict[str, int] = {}
        for lim in by_worker.values():
            for ep_id, n in lim.replicas.items():
                replicas[ep_id] = min(n, replicas.get(ep_id, n))
        return {
            "replicas": dict(sorted(replicas.items())),
            "lowered": sum(lim.lowered for lim in by_worker.values()),
            "raised": sum(lim.raised for lim in by_worker.values()),
        }

    def record_poke(self, worker: str, poke: Poke) -> None:
        """A request waits for a revision with no ready replica: decide now, not at the tick."""
        key = poke.revision
        state = self._state(key)
        if state is None or state.sampler is not None:  # the HPA class never scales to zero
            return
        now = self._clock()
        state.metrics.record_poke(worker, math.floor(now), poke.waiting)
        self._decide(key, state, now)

    def forget(self, key: str) -> None:
        self._states.pop(key, None)
        self._limits.pop(key, None)

    # -- outputs --------------------------------------------------------------------------------

    def desired(self, key: str) -> int | None:
        """The last decision's scale, deciding once if there is none yet; None for a revision
        this scaler does not know."""
        state = self._state(key)
        if state is None:
            return None
        if state.decision is None:
            self._decide(key, state, self._clock())
        return state.decision.desired_scale if state.decision is not None else None

    def decision(self, key: str) -> Decision | None:
        state = self._states.get(key)
        return state.decision if state is not None else None

    def view(self, key: str) -> dict[str, Any] | None:
        """The autoscaler's view of a revision, for `flint describe revision` and /metrics."""
        state = self._states.get(key)
        if state is None or state.decision is None:
            return None
        d = state.decision
        return {
            "class": state.scaling.cls,
            "metric": state.scaling.metric,
            "target": d.target,
            "mode": "panic" if d.in_panic else "stable",
            "observedStable": d.observed_stable,
            "observedPanic": d.observed_panic,
            "readyReplicas": d.ready_pods,
            "desiredScale": d.desired_scale,
            "unclampedScale": d.unclamped_scale,
            "clampedBy": d.clamped_by,
            "reason": d.reason,
            "stableWindowSeconds": state.scaling.stable_window_s,
            "panicWindowSeconds": state.scaling.panic_window_s,
            "warnings": list(state.scaling.warnings),
            "learnedLimits": self.learned_limits(key),
        }

    def revision_keys(self) -> list[str]:
        return list(self._states)

    def clamp_counts(self, key: str) -> dict[str, int]:
        state = self._states.get(key)
        return dict(state.clamps or {}) if state is not None else {}

    # -- the loop -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scaler")

    def reset(self) -> None:
        """Forget every revision's windows, deciders and learned limits, as a restarted
        controller would have (a new leader's term starts with it): each revision gets a new
        decider, and a new KPA decider scales nothing down before it has watched a whole stable
        window of reports (it starts in panic with more than one ready replica, and takes a
        single replica to zero only after a stable window of no traffic)."""
        self._states.clear()
        self._limits.clear()
        self._limit_keys.clear()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_interval_s)
            await self._sample_cpu()
            self.tick(self._clock())

    async def _sample_cpu(self) -> None:
        """Feed the HPA-class revisions their replicas' CPU utilisation (one /proc scan)."""
        hpa = {k: st for k, st in self._states.items() if st.sampler is not None}
        if not hpa:
            return
        groups = {k: {f"{rid}/{pid}": pid for rid, pid in self._pids(k).items()} for k in hpa}
        cpu = await asyncio.to_thread(
            cpu_seconds_by_group, {pid for g in groups.values() for pid in g.values()}
        )
        mono = time.monotonic()
        for key, st in hpa.items():
            assert st.sampler is not None
            readings = {rk: cpu.get(pid) for rk, pid in groups[key].items()}
            util = st.sampler.update(mono, readings)
            st.metrics_cpu = util

    def tick(self, now: float) -> None:
        """One decision for every revision (Knative decides every tick-interval); none while no
        gateway reports (the last decisions stand)."""
        if not self._reporting():
            return
        for key in list(self._states):
            state = self._states.get(key)
            if state is None:
                continue
            if self._revision(key) is None:
                del self._states[key]
                continue
            try:
                self._decide(key, state, now)
            except Exception:
                log.exception("autoscaler decision failed revision=%s", key)

    # -- internals ------------------------------------------------------------------------------

    def _state(self, key: str) -> _Revision | None:
        state = self._states.get(key)
        rev = self._revision(key)
        if rev is None:
            self._states.pop(key, None)
            return None
        scaling = scaling_of(self.settings, rev)
        if state is not None and (scaling.cls == HPA) != (state.sampler is not None):
            state = None  # the class changed: start over
        if state is None:
            metrics = RevisionMetrics(scaling.stable_window_s, scaling.panic_window_s)
            if scaling.cls == HPA:
                state = _Revision(scaling, metrics, HpaDecider(scaling), sampler=CpuSampler())
            else:
                state = _Revision(
                    scaling, metrics, KpaDecider(scaling, initialized=_had_ready_replicas(rev))
                )
            self._states[key] = state
        elif scaling != state.scaling:
            state.scaling = scaling
            state.metrics.set_windows(scaling.stable_window_s, scaling.panic_window_s)
            state.decider.update(scaling)
        return state

    def _decide(self, key: str, state: _Revision, now: float) -> None:
        if isinstance(state.decider, HpaDecider):
            decision = state.decider.decide(
                now, state.metrics_cpu, self._ready(key), routed=self._routed(key)
            )
        else:
            stable, panic = state.metrics.observed(now, state.scaling.metric)
            decision = state.decider.decide(
                now, stable, panic, self._ready(key), routed=self._routed(key)
            )
        old = state.decision
        state.decision = decision
        if decision.clamped_by:
            state.clamps = state.clamps or {}
            state.clamps[decision.clamped_by] = state.clamps.get(decision.clamped_by, 0) + 1
        if (
            old is None
            or old.desired_scale != decision.desired_scale
            or old.clamped_by != decision.clamped_by
        ):
            log.info(
                "scale revision=%s from=%s to=%d reason=%s",
                key, "-" if old is None else old.desired_scale, decision.desired_scale, decision.reason,
            )
            self._on_change(key)


def _had_ready_replicas(rev: Obj) -> bool:
    """A revision that has been ready before (a controller restart) needs no initial scale."""
    for c in (rev.get("status") or {}).get("conditions") or []:
        if c.get("type") == "ResourcesAvailable" and c.get("status") == "True":
            return True
    return False
