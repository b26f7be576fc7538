"""The HPA-class decider: Kubernetes' Horizontal Pod Autoscaler algorithm on CPU, pure, `now` passed in.

Knative's `hpa.autoscaling.knative.dev` class hands a revision to a Kubernetes HPA with the
`cpu` (or `memory`) metric and never scales it to zero. Flint runs the same algorithm itself
(kube-controller-manager's `replica_calculator.go` and `horizontal.go`, with their defaults):

* utilisation U = mean CPU of the replicas with a reading, in percent of one core; the usage
  ratio r = U / target (target: the `target` annotation, default 80);
* within the tolerance (|1 - r| <= 10 %) the scale stays where it is; otherwise
  desired = ceil(r × replicas with a reading);
* missing readings (a ready replica not sampled twice yet) count as exactly the target on a
  scale-down and as 0 % on a scale-up; replicas wanted but not ready yet count as 0 % on a
  scale-up. With them the ratio is computed again, and if it then falls in the tolerance or
  flips direction, the scale stays (Kubernetes' dampening of decisions on partial data);
* scale-down stabilisation: a lower recommendation is applied only down to the largest
  recommendation of the last 300 s (the window (now - 300 s, now], now included); scale-up has
  no stabilisation window;
* scale-up rate (Kubernetes' default behavior): at most max(+4 replicas, +100 %) per 15 s,
  measured from the scale at the start of the trailing 15 s; the default scale-down rate
  (100 % per 15 s) never limits and is not modelled;
* bounds: at least max(1, min-scale) (min-scale only while a route references the revision, as
  for the KPA; the floor of 1 always, as Knative's HPA class has minReplicas >= 1), at most the
  tightest of max-scale, max-scale-limit and the machine budget, reported in `clamped_by`.

The `memory` metric is accepted by the API (Knative allows it) but not measured by Flint: the
decider keeps the current scale and says so in the reason.

"Current scale" is what Kubernetes reads from the scale subresource (spec.replicas): the scale
this decider last decided, which includes replicas still starting; the caller may pass the
replica count it is actually driving instead (`current_scale`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

from controller.api.autoscaling import CPU, HPA
from controller.autoscaling.annotations import RevisionScaling
from controller.autoscaling.kpa import (
    CLAMP_MIN_SCALE,
    Decision,
    upper_bound,
)

TOLERANCE = 0.1
"""kube-controller-manager's `--horizontal-pod-autoscaler-tolerance`: no change while the usage
ratio is within 10 % of 1 (bounds included)."""
SCALE_DOWN_STABILIZATION_S = 300.0
"""Kubernetes' default `behavior.scaleDown.stabilizationWindowSeconds`."""
SCALE_UP_PERIOD_S = 15.0
"""Period of Kubernetes' default scale-up policies."""
SCALE_UP_PODS = 4
"""Default scale-up policy `Pods`: 4 replicas per period."""
SCALE_UP_PERCENT = 100.0
"""Default scale-up policy `Percent`: 100 % per period (selectPolicy Max picks the larger)."""
_EPS = 1e-9


def _fmt(x: float) -> str:
    return f"{x:.1f}"


class HpaDecider:
    """One revision of the HPA class. Call `decide` every tick with the CPU utilisation of its
    ready replicas; it keeps the recommendations of the stabilisation window, the scale-up events
    of the rate period and the current scale between calls."""

    def __init__(
        self,
        scaling: RevisionScaling,
        *,
        stabilization_window_s: float = SCALE_DOWN_STABILIZATION_S,
        tolerance: float = TOLERANCE,
    ) -> None:
        if scaling.cls != HPA:
            raise ValueError(f"HpaDecider handles the {HPA} class, not {scaling.cls}")
        if stabilization_window_s < 0 or tolerance < 0:
            raise ValueError("the stabilisation window and the tolerance cannot be negative")
        self.scaling = scaling
        self.stabilization_window_s = stabilization_window_s
        self.tolerance = tolerance
        self._current: int | None = None
        self._recommendations: deque[tuple[float, int]] = deque()
        self._scale_events: deque[tuple[float, int]] = deque()  # (time, change of the scale)

    def update(self, scaling: RevisionScaling) -> None:
        """New effective settings (annotations or global config changed); state is kept."""
        if scaling.cls != HPA:
            raise ValueError(f"HpaDecider handles the {HPA} class, not {scaling.cls}")
        self.scaling = scaling

    @property
    def current_scale(self) -> int | None:
        """The scale of the last decision (None before the first)."""
        return self._current

    # ------------------------------------------------------------------------------------------

    def decide(
        self,
        now: float,
        utilisation_by_replica: Mapping[str, float],
        ready_pods: int,
        routed: bool = True,
        *,
        current_scale: int | None = None,
    ) -> Decision:
        """The desired scale at `now` from the CPU utilisation (percent of one core, over the last
        sampling interval) of each ready replica that has a reading, the number of ready replicas,
        and whether a route references the revision. `current_scale`: the scale being applied
        (default: this decider's previous decision, or max(1, ready) at the first call)."""
        s = self.scaling
        ready = max(0, ready_pods)
        if current_scale is not None:
            current = max(0, current_scale)
        elif self._current is not None:
            current = self._current
        else:
            current = max(1, ready)
        samples = [max(0.0, float(u)) for u in utilisation_by_replica.values()]
        observed = sum(samples) / len(samples) if samples else None

        if s.metric != CPU:
            want = current
            reason = (
                f"the {s.metric} metric is not supported by Flint's HPA class (only cpu): keeping {current}"
            )
        elif not samples:
            want = current
            reason = f"no CPU data: keeping {current}"
        else:
            raw, reason = self._recommend(samples, ready, current)
            want, notes = self._stabilize(now, raw, current)
            reason = f"{reason}: {want}"
            if notes:
                reason += "; " + "; ".join(notes)
        if not routed:
            reason += "; not routed, min-scale ignored"
        return self._finish(now, want, current, reason, observed, ready, routed)

    def _within(self, ratio: float) -> bool:
        return abs(1.0 - ratio) <= self.tolerance + _EPS

    def _recommend(self, samples: list[float], ready: int, current: int) -> tuple[int, str]:
        """Kubernetes' `calcPlainMetricReplicas` for a utilisation target."""
        t = self.scaling.target
        n = len(samples)
        usage = sum(samples) / n
        ratio = usage / t
        missing = max(0, ready - n)
        unready = max(0, current - max(ready, n))
        head = (
            f"cpu: {_fmt(usage)} % of a core per replica over a target of {_fmt(t)} % "
            f"with {n} measured of {ready} ready (ratio {ratio:.2f})"
        )
        scale_up_with_unready = unready > 0 and ratio > 1.0
        if not scale_up_with_unready and missing == 0:
            if self._within(ratio):
                return current, head + f", within the {self.tolerance * 100:g} % tolerance"
            return math.ceil(ratio * n - _EPS), head
        values = list(samples)
        if missing:
            # Scale-down: a replica without a reading is assumed at the target; scale-up: at 0 %.
            values += [t if ratio < 1.0 else 0.0] * missing
        if scale_up_with_unready:
            values += [0.0] * unready
        new_ratio = sum(values) / len(values) / t
        parts = []
        if missing:
            parts.append(f"{missing} without a reading")
        if scale_up_with_unready:
            parts.append(f"{unready} not ready")
        head += f", counting {' and '.join(parts)}: ratio {new_ratio:.2f}"
        if self._within(new_ratio) or (ratio > 1.0 > new_ratio) or (ratio < 1.0 < new_ratio):
            return current, head + ", too uncertain to change"
        proposed = math.ceil(new_ratio * len(values) - _EPS)
        if (new_ratio < 1.0 and proposed > current) or (new_ratio > 1.0 and proposed < current):
            return current, head + ", too uncertain to change"
        return proposed, head

    def _stabilize(self, now: float, raw: int, current: int) -> tuple[int, list[str]]:
        """Kubernetes' `stabilizeRecommendationWithBehaviors` (scale-down window, no scale-up
        window) and its default scale-up rate policies."""
        notes: list[str] = []
        self._recommendations.append((now, raw))
        cutoff = now - self.stabilization_window_s
        while self._recommendations and self._recommendations[0][0] <= cutoff:
            self._recommendations.popleft()
        down = max(r for _, r in self._recommendations)
        want = current
        if want < raw:
            want = raw  # scale up at once
        if want > down:
            want = down
        if raw < want:
            notes.append(
                f"scale-down stabilisation {self.stabilization_window_s:g}s holds {want} (wants {raw})"
            )
        if want > current:
            limit = self._scale_up_limit(now, current)
            if want > limit:
                notes.append(
                    f"scale-up rate (+{SCALE_UP_PODS} or +{SCALE_UP_PERCENT:g} % per "
                    f"{SCALE_UP_PERIOD_S:g}s) allows {limit} (wants {want})"
                )
                want = limit
        return want, notes

    def _scale_up_limit(self, now: float, current: int) -> int:
        cutoff = now - SCALE_UP_PERIOD_S
        while self._scale_events and self._scale_events[0][0] <= cutoff:
            self._scale_events.popleft()
        added = sum(c for _, c in self._scale_events if c > 0)
        removed = -sum(c for _, c in self._scale_events if c < 0)
        start = current - added + removed
        limit = max(start + SCALE_UP_PODS, math.ceil(start * (1.0 + SCALE_UP_PERCENT / 100.0)))
        return max(limit, current)

    def _finish(
        self,
        now: float,
        want: int,
        current: int,
        reason: str,
        observed: float | None,
        ready: int,
        routed: bool,
    ) -> Decision:
        s = self.scaling
        unclamped = want
        clamped_by: str | None = None
        min_scale = s.min_scale if routed else 0
        if want < min_scale:
            want, clamped_by = min_scale, CLAMP_MIN_SCALE
            reason += f"; raised to {CLAMP_MIN_SCALE} {min_scale}"
        if want < 1:
            want = 1
            reason += "; the HPA class never scales below 1"
        cap, cap_name = self._cap()
        if cap and want > cap:
            want, clamped_by = cap, cap_name
            reason += f"; capped at {cap_name} {cap} (wanted {unclamped})"
        if want != current:
            self._scale_events.append((now, want - current))
        self._current = want
        return Decision(
            desired_scale=want,
            in_panic=False,
            observed_stable=observed,
            observed_panic=None,
            target=s.target,
            ready_pods=ready,
            reason=reason,
            unclamped_scale=unclamped,
            clamped_by=clamped_by,
        )

    def _cap(self) -> tuple[int, str]:
        return upper_bound(self.scaling)


__all__ = ["SCALE_DOWN_STABILIZATION_S", "TOLERANCE", "HpaDecider"]
