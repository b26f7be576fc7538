"""Gradual rollout of a configuration's latest revision (Knative's route rollout), pure: time passed in."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from controller.api.autoscaling import parse_duration
from controller.api.serving_annotations import duration_problem
from controller.settings import NetworkSettings

STATE_ANNOTATION = "serving.knative.dev/rollout"
"""Where a Route keeps its rollout state: `status.annotations` (Knative keeps it on the Ingress)."""
IN_PROGRESS_REASON = "RolloutInProgress"
IN_PROGRESS_MESSAGE = "A gradual rollout of the latest revision(s) is in progress."


@dataclass(frozen=True)
class Share:
    revision: str
    percent: int
    """Of the whole route's traffic, not of the configuration's."""


@dataclass(frozen=True)
class ConfigRollout:
    """One configuration's `latestRevision` traffic: its revisions oldest first (the newest last);
    one revision when no rollout runs."""

    configuration: str
    percent: int
    """The route traffic the configuration's target asks for; the shares sum to it."""
    shares: tuple[Share, ...]
    start_time: float = 0.0
    """When the newest revision got its first 1 % (seconds)."""
    next_step_time: float = 0.0
    step_duration: float = 0.0
    """Seconds between steps; 0 until the 1 % state is observed serving."""
    step_size: int = 0
    """Percent moved to the newest revision per step."""

    @property
    def done(self) -> bool:
        return len(self.shares) < 2


@dataclass(frozen=True)
class Rollout:
    configurations: tuple[ConfigRollout, ...] = field(default_factory=tuple)

    @property
    def done(self) -> bool:
        return all(c.done for c in self.configurations)

    def get(self, configuration: str) -> ConfigRollout | None:
        return next((c for c in self.configurations if c.configuration == configuration), None)

    def next_step_time(self) -> float | None:
        """The earliest time a step is due, if any is scheduled."""
        times = [c.next_step_time for c in self.configurations if not c.done and c.next_step_time]
        return min(times) if times else None

    def encode(self) -> str:
        return orjson.dumps([
            {"configurationName": c.configuration, "percent": c.percent,
             "revisions": [{"revisionName": s.revision, "percent": s.percent} for s in c.shares],
             "stepParams": {"startTime": c.start_time, "nextStepTime": c.next_step_time,
                            "stepDuration": c.step_duration, "stepSize": c.step_size}}
            for c in self.configurations
        ]).decode()


def decode(text: str | None) -> Rollout | None:
    """The state `Rollout.encode` wrote; None when absent or not readable (a fresh start)."""
    if not text:
        return None
    try:
        data = orjson.loads(text)
        return Rollout(tuple(
            ConfigRollout(
                configuration=str(c["configurationName"]), percent=int(c["percent"]),
                shares=tuple(Share(str(s["revisionName"]), int(s["percent"]))
                             for s in c["revisions"]),
                start_time=float(c["stepParams"]["startTime"]),
                next_step_time=float(c["stepParams"]["nextStepTime"]),
                step_duration=float(c["stepParams"]["stepDuration"]),
                step_size=int(c["stepParams"]["stepSize"]),
            )
            for c in data
        ))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def baseline(targets: list[tuple[str, str, int]]) -> Rollout:
    """The rollout the route's resolved traffic asks for with no history: each (configuration,
    revision, percent) of a `latestRevision` target at its full share (0 % ones left out)."""
    by_config: dict[str, ConfigRollout] = {}
    for cfg, rev, pct in targets:
        if pct <= 0 or cfg in by_config:
            continue
        total = sum(p for c, _, p in targets if c == cfg)
        by_config[cfg] = ConfigRollout(cfg, total, (Share(rev, total),))
    return Rollout(tuple(sorted(by_config.values(), key=lambda c: c.configuration)))


def observe_ready(prev: Rollout, now: float, duration_s: float) -> Rollout:
    """The 1 % state serves: fix each new rollout's steps. The time it took to get there is the
    shortest step; the remaining percent is spread over the rest of the duration in as many
    steps as fit (at least 1 % each)."""
    out = []
    for c in prev.configurations:
        if c.step_duration == 0 and c.start_time > 0 and not c.done:
            min_step = max(1.0, math.ceil(now - c.start_time))
            span = max(1.0, duration_s - min_step)
            steps = max(1.0, span / min_step)
            remaining = c.percent - 1
            steps = min(steps, float(remaining)) or 1.0
            step_duration = span / steps
            c = replace(c, step_duration=step_duration, step_size=math.floor(remaining / steps + 0.5),
                        next_step_time=now + step_duration)
        out.append(c)
    return Rollout(tuple(out))


def step(goal: Rollout, prev: Rollout | None, now: float) -> Rollout:
    """The traffic to serve now: `goal` (the baseline) moved towards from `prev` (pure).

    A configuration whose newest ready revision changed starts a rollout: the newest gets 1 % and
    the previous newest gives it up; due steps then move `step_size` from the older revisions
    (newest first) to the newest until it holds all the configuration's percent."""
    if prev is None or not prev.configurations:
        return goal
    out = []
    for g in goal.configurations:
        p = prev.get(g.configuration)
        if p is None or g.percent <= 1:
            out.append(g)
            continue
        out.append(_step_config(g, p, now))
    return Rollout(tuple(out))


def _resize(shares: list[Share], goal: int) -> list[Share]:
    """The configuration's percent changed: the newest takes an increase, the oldest give up a
    decrease."""
    diff = goal - sum(s.percent for s in shares)
    if diff > 0:
        shares[-1] = replace(shares[-1], percent=shares[-1].percent + diff)
    cut = -diff
    while cut > 0 and shares:
        if shares[0].percent > cut:
            shares[0] = replace(shares[0], percent=shares[0].percent - cut)
            break
        cut -= shares.pop(0).percent
    return shares


def _step_config(goal: ConfigRollout, prev: ConfigRollout, now: float) -> ConfigRollout:
    shares = _resize(list(prev.shares), goal.percent)
    newest = goal.shares[0].revision
    if not shares or shares[-1].revision == newest:
        if len(shares) < 2:
            return goal
        current = replace(prev, percent=goal.percent, shares=tuple(shares))
        return _move(current, now) if current.step_size > 0 else current
    # A new revision: it gets 1 %, taken from the newest older one that has any.
    for i in range(len(shares) - 1, -1, -1):
        if shares[i].percent > 0:
            shares[i] = replace(shares[i], percent=shares[i].percent - 1)
            break
    kept = tuple(s for s in shares if s.percent > 0)
    return ConfigRollout(goal.configuration, goal.percent, (*kept, Share(newest, 1)), start_time=now)


def _move(c: ConfigRollout, now: float) -> ConfigRollout:
    """One step, if it is due."""
    if now < c.next_step_time or c.done:
        return c
    older = list(c.shares[:-1])
    left = c.step_size
    while left > 0 and older:
        if older[-1].percent > left:
            older[-1] = replace(older[-1], percent=older[-1].percent - left)
            break
        left -= older.pop().percent
    newest = replace(c.shares[-1], percent=min(c.percent, c.shares[-1].percent + c.step_size))
    if not older:
        return ConfigRollout(c.configuration, c.percent, (replace(newest, percent=c.percent),))
    return replace(c, shares=(*older, newest), next_step_time=now + c.step_duration)


def status_traffic(resolved: list[dict[str, Any]], configs: list[str | None],
                   rollout: Rollout) -> list[dict[str, Any]]:
    """The route's status.traffic: each `latestRevision` target (`configs[i]` names its
    configuration, None for other targets) replaced by its rollout's revisions and shares."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for target, cfg in zip(resolved, configs, strict=True):
        c = rollout.get(cfg) if cfg is not None and not target.get("tag") else None
        if c is None or int(target.get("percent") or 0) == 0:
            out.append(target)
            continue
        if cfg in seen:
            continue  # a second target of the same configuration: its share is in the first
        seen.add(cfg)  # type: ignore[arg-type]
        out += [dict(target, revisionName=s.revision, percent=s.percent) for s in c.shares]
    return out


def load_network_settings(data: dict[str, str]) -> NetworkSettings:
    """`NetworkSettings` from Knative `config-network` keys (only `rollout-duration: 120s` is
    one the embedded engine has); raises ValueError naming the key."""
    out = NetworkSettings()
    for key, raw in data.items():
        text = str(raw).strip()
        if key != "rollout-duration":
            raise ValueError(f"{key}: unknown network setting (known: rollout-duration)")
        problem = duration_problem(text)
        if problem:
            raise ValueError(f"rollout-duration: {problem}")
        out = replace(out, rollout_duration_s=float(parse_duration(text) or 0.0))
    return out

