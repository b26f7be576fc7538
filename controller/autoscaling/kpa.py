"""The KPA decider: Knative's scaling math as a pure state machine, with `now` passed in."""

from __future__ import annotations

import math
from dataclasses import dataclass

from controller.api.autoscaling import KPA, RPS
from controller.autoscaling.annotations import RevisionScaling
from controller.autoscaling.windows import TimedMax

# Why a decision was clamped (Decision.clamped_by).
CLAMP_MIN_SCALE = "min-scale"
CLAMP_INITIAL_SCALE = "initial-scale"
CLAMP_MAX_SCALE = "max-scale"
CLAMP_MAX_SCALE_LIMIT = "max-scale-limit"
CLAMP_MACHINE = "max-replicas-per-machine"


@dataclass(frozen=True)
class Decision:
    """One decision for one revision, with what it saw and why it chose what it did."""

    desired_scale: int
    """Replicas the revision should have."""
    in_panic: bool
    """Whether the decider is in panic mode (never scales down)."""
    observed_stable: float | None
    """Stable-window average of the metric (concurrency or rps); None: no data."""
    observed_panic: float | None
    """Panic-window average of the metric; None: no data."""
    target: float
    """Per-replica target T the numbers were divided by."""
    ready_pods: int
    """Ready replicas the decision was made against."""
    reason: str
    """A short sentence for people (`flint describe revision`, logs)."""
    unclamped_scale: int
    """The scale before min/initial/max/limit/machine bounds."""
    clamped_by: str | None = None
    """Which bound changed the scale: min-scale, initial-scale, max-scale, max-scale-limit or
    max-replicas-per-machine; None when none did."""

    @property
    def clamped(self) -> bool:
        return self.clamped_by is not None


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _fmt_s(x: float) -> str:
    return f"{x:g}s"


def upper_bound(s: RevisionScaling) -> tuple[int, str]:
    """The tightest of max-scale, max-scale-limit and the machine budget, and its name (0: none);
    shared by both deciders."""
    best, name = 0, ""
    for cap, cap_name in (
        (s.max_scale, CLAMP_MAX_SCALE),
        (s.max_scale_limit, CLAMP_MAX_SCALE_LIMIT),
        (s.max_replicas_per_machine, CLAMP_MACHINE),
    ):
        if cap > 0 and (best == 0 or cap < best):
            best, name = cap, cap_name
    return best, name


class KpaDecider:
    """Knative's `autoscaler.Scale` plus the bounds and scale-to-zero rules of its KPA reconciler,
    for one revision. Call `decide` every tick and on a poke; it keeps the panic state, the
    scale-down-delay window and the idle clock between calls."""

    def __init__(self, scaling: RevisionScaling, *, initialized: bool = False) -> None:
        """`initialized`: the revision has already had its initial scale ready once (persisted by
        the caller across controller restarts, like Knative's ScaleTargetInitialized)."""
        if scaling.cls != KPA:
            raise ValueError(f"KpaDecider handles the {KPA} class, not {scaling.cls}")
        self.scaling = scaling
        self._initialized = initialized
        self._born: float | None = None
        self._panic_since: float | None = None
        self._max_panic_pods = 0
        self._quiet_since: float | None = None
        self._last_traffic: float | None = None
        self._delay: TimedMax | None = None
        self._make_delay_window()

    def _make_delay_window(self) -> None:
        s = self.scaling
        self._delay = TimedMax(s.scale_down_delay_s, s.tick_interval_s) if s.scale_down_delay_s > 0 else None

    def update(self, scaling: RevisionScaling) -> None:
        """New effective settings (annotations or global config changed); state is kept."""
        old, self.scaling = self.scaling, scaling
        if (old.scale_down_delay_s, old.tick_interval_s) != (
            scaling.scale_down_delay_s,
            scaling.tick_interval_s,
        ):
            self._make_delay_window()

    @property
    def initialized(self) -> bool:
        """Whether the initial scale has been reached once (persist it to survive restarts)."""
        return self._initialized

    @property
    def in_panic(self) -> bool:
        return self._panic_since is not None

    @property
    def last_traffic(self) -> float | None:
        """The last `now` whose panic-window average was above 0 (None: not since creation)."""
        return self._last_traffic

    def idle_zero_at(self) -> float | None:
        """When an idle revision may go to zero (quiet start + max(grace, retention)); None while
        traffic is seen."""
        if self._quiet_since is None:
            return None
        s = self.scaling
        return self._quiet_since + max(s.scale_to_zero_grace_period_s, s.scale_to_zero_pod_retention_period_s)

    # ------------------------------------------------------------------------------------------

    def decide(
        self,
        now: float,
        stable_avg: float | None,
        panic_avg: float | None,
        ready_pods: int,
        routed: bool = True,
    ) -> Decision:
        """The desired scale at `now`, from the stable and panic averages of the revision's metric
        (None: no data in that window), the ready replicas, and whether a route references it."""
        s = self.scaling
        ready = max(0, ready_pods)
        if self._born is None:
            self._born = now
            if ready > 1:
                # Knative starts a new decider in panic when it finds more than one pod: after a
                # restart the history is gone and scaling down on partial data would be wrong.
                self._panic_since = now
                self._max_panic_pods = ready
        if not self._initialized and ready >= s.initial_scale:
            self._initialized = True
        if stable_avg is not None and panic_avg is None:
            panic_avg = stable_avg  # the recent seconds are unknown: the stable view is the best guess
        self._track_traffic(now, stable_avg, panic_avg)

        if stable_avg is None or panic_avg is None:
            want, reason = self._no_data(now, ready)
            in_panic = self.in_panic
        else:
            want, reason, in_panic = self._compute(now, stable_avg, panic_avg, ready, routed)
        if not routed:
            reason += "; not routed, min-scale ignored"
        return self._finish(now, want, reason, in_panic, stable_avg, panic_avg, ready, routed)

    def _no_data(self, now: float, ready: int) -> tuple[int, str]:
        s = self.scaling
        if self._panic_since is not None and now > self._panic_since + s.stable_window_s:
            self._panic_since = None
            self._max_panic_pods = 0
        if self._panic_since is not None:
            want = max(ready, self._max_panic_pods)
            return want, f"no data, in panic: keeping {want}"
        zero_at = self.idle_zero_at()
        if zero_at is not None and now >= zero_at:
            return 0, "no data"
        return ready, f"no data: keeping {ready}"

    def _track_traffic(self, now: float, stable: float | None, panic: float | None) -> None:
        assert self._born is not None
        if panic is not None and panic > 0:
            self._last_traffic = now
        if stable is not None and stable > 0:
            self._quiet_since = None
        elif self._quiet_since is None:
            # The stable window shows no traffic (zeros, or no report at all) from now on. A new
            # decider must first watch a whole stable window, as Knative keeps a PA active for at
            # least a stable window before it may deactivate it.
            self._quiet_since = now + self.scaling.stable_window_s if now == self._born else now

    def _compute(
        self, now: float, stable: float, panic: float, ready: int, routed: bool
    ) -> tuple[int, str, bool]:
        s = self.scaling
        t = s.target
        ready1 = max(1, ready)
        max_up = math.ceil(s.max_scale_up_rate * ready1)
        max_down = math.floor(ready1 / s.max_scale_down_rate) if routed else 0
        dspc = math.ceil(stable / t)
        dppc = math.ceil(panic / t)
        stable_pods = min(max(dspc, max_down), max_up)
        panic_pods = min(max(dppc, max_down), max_up)
        notes: list[str] = []
        if dspc > max_up or dppc > max_up:
            notes.append(f"max-scale-up-rate {s.max_scale_up_rate:g} allows {max_up}")
        if min(dspc, dppc) < max_down and stable_pods == max_down:
            notes.append(f"max-scale-down-rate {s.max_scale_down_rate:g} keeps {max_down}")
        if s.activation_scale > 1:
            if dspc > 0 and stable_pods < s.activation_scale:
                stable_pods = s.activation_scale
                notes.append(f"activation-scale {s.activation_scale}")
            if dppc > 0 and panic_pods < s.activation_scale:
                panic_pods = s.activation_scale

        over = dppc / ready1 >= s.panic_threshold
        if over:
            self._panic_since = now  # start, or extend, the panic
        elif self._panic_since is not None and now > self._panic_since + s.stable_window_s:
            self._panic_since = None  # a whole stable window without a tick over the threshold
            self._max_panic_pods = 0
            notes.append("left panic")

        unit = "rps" if s.metric == RPS else "concurrent"
        if self._panic_since is not None:
            want = max(stable_pods, panic_pods)
            if want > self._max_panic_pods:
                self._max_panic_pods = want
            elif want < self._max_panic_pods:
                notes.append(f"in panic, not scaling down from {self._max_panic_pods}")
            want = self._max_panic_pods
            pct = panic / (t * ready1) * 100.0
            head = (
                f"panic: {_fmt(panic)} {unit} over a target of {_fmt(t)} per replica "
                f"with {ready} ready ({pct:.0f} %)"
            )
        else:
            want = stable_pods
            pct = stable / (t * ready1) * 100.0
            head = (
                f"stable: {_fmt(stable)} {unit} over a target of {_fmt(t)} per replica "
                f"with {ready} ready ({pct:.0f} %)"
            )

        if self._delay is not None:
            self._delay.record(now, float(want))
            delayed = int(self._delay.current())
            if delayed != want:
                notes.append(
                    f"scale-down-delay {_fmt_s(s.scale_down_delay_s)} holds {delayed} (wants {want})"
                )
                want = delayed
        reason = f"{head}: {want}"
        if notes:
            reason += "; " + "; ".join(notes)
        return want, reason, self._panic_since is not None

    def _finish(
        self,
        now: float,
        want: int,
        reason: str,
        in_panic: bool,
        stable: float | None,
        panic: float | None,
        ready: int,
        routed: bool,
    ) -> Decision:
        s = self.scaling
        unclamped = want
        clamped_by: str | None = None
        lower, lower_name = (s.min_scale, CLAMP_MIN_SCALE) if routed else (0, CLAMP_MIN_SCALE)
        if not self._initialized and s.initial_scale > lower:
            lower, lower_name = s.initial_scale, CLAMP_INITIAL_SCALE
        if want < lower:
            want, clamped_by = lower, lower_name
            reason += f"; raised to {lower_name} {lower}"
        cap, cap_name = self._cap()
        if cap and want > cap:
            want, clamped_by = cap, cap_name
            reason += f"; capped at {cap_name} {cap} (wanted {unclamped})"

        if want == 0:
            want, reason = self._to_zero(now, ready, reason)
        return Decision(
            desired_scale=want,
            in_panic=in_panic,
            observed_stable=stable,
            observed_panic=panic,
            target=s.target,
            ready_pods=ready,
            reason=reason,
            unclamped_scale=unclamped,
            clamped_by=clamped_by,
        )

    def _cap(self) -> tuple[int, str]:
        return upper_bound(self.scaling)

    def _to_zero(self, now: float, ready: int, reason: str) -> tuple[int, str]:
        s = self.scaling
        if not s.enable_scale_to_zero:
            return 1, reason + "; scale to zero is disabled: keeping 1"
        zero_at = self.idle_zero_at()
        if zero_at is not None and now >= zero_at:
            hold = max(s.scale_to_zero_grace_period_s, s.scale_to_zero_pod_retention_period_s)
            return 0, (
                f"idle: no traffic for the stable window ({_fmt_s(s.stable_window_s)}) "
                f"plus {_fmt_s(hold)}: scaling to 0"
            )
        if ready == 0:
            return 0, reason if reason.startswith("no data") else reason + "; at zero"
        left = f" in {_fmt_s(round(zero_at - now, 3))}" if zero_at is not None else ""
        return 1, reason + f"; idle: keeping the last replica, scale to zero{left}"


__all__ = ["Decision", "KpaDecider"]
