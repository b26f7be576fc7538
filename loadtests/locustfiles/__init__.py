"""Locust scenarios for Flint: steady traffic, a traffic-split check and a burst from zero.

Run them with locust (`pip install -e '.[load]'`) against the gateway, naming the service's host
with `--flint-host` (Python does not resolve `*.localhost`)::

    locust -f loadtests/locustfiles/steady.py --headless -u 10 -r 10 --run-time 30s \\
        --host http://127.0.0.1:8080 --flint-host hello.default.localhost

docs/loadtesting.md lists the runs. The scenarios are `steady.py`, `split.py` and `burst.py`;
`common.py` is their locust glue (the options, the Host header, the API lookup).

This module holds the parts they share that need no locust: which revision an answer names, the
split a Service's `status.traffic` promises, the comparison and its table, the burst tally. It
never imports locust (importing locust monkey-patches the whole process for gevent), so tests
and tools can import it safely.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_REVISION_REGEX = r"\brevision\W{1,4}([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)"
"""Finds the revision in a plain-text answer: `Hello World! (revision hello-00001)` (examples/hello)."""
DEFAULT_REVISION_FIELD = "revision"
"""The JSON field (dotted for nested objects) naming the revision: tests/apps/echo, loadtests/apps/sleepy."""
DEFAULT_TOLERANCE_PP = 5.0
SIGMAS = 3.0
"""How many binomial standard deviations the report calls random noise."""


# --- hosts ----------------------------------------------------------------------------------------


def service_of_host(host: str) -> tuple[str, str] | None:
    """(namespace, route name) from a route's host `{route}.{namespace}.{domain}[:port]`, or None
    when the host has fewer than three labels. A tag's host (`{tag}-{route}...`) cannot be told
    apart from a route's: name the service explicitly for those (`--flint-service`)."""
    labels = host.split(":", 1)[0].strip().rstrip(".").split(".")
    if len(labels) < 3 or not labels[0] or not labels[1]:
        return None
    return labels[1], labels[0]


# --- answers --------------------------------------------------------------------------------------


def _dig(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def revision_of(body: bytes | str, content_type: str = "", *,
                regex: re.Pattern[str] | str = DEFAULT_REVISION_REGEX,
                json_field: str = DEFAULT_REVISION_FIELD) -> str | None:
    """The revision an answer names, or None.

    A JSON answer (by its Content-Type, or a body that starts with `{`) is read with `json_field`
    (dotted for nested objects); anything else, or JSON without that field, is searched with
    `regex`: its first group when it has one, else the whole match."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if "json" in content_type.lower() or text.lstrip().startswith("{"):
        try:
            value = _dig(json.loads(text), json_field)
        except ValueError:
            value = None
        if isinstance(value, str) and value:
            return value
    pattern = re.compile(regex) if isinstance(regex, str) else regex
    m = pattern.search(text)
    if m is None:
        return None
    return m.group(1) if pattern.groups else m.group(0)


# --- the route's split ----------------------------------------------------------------------------


def expected_split(service: Mapping[str, Any]) -> dict[str, float]:
    """revision → percent of the traffic from a Service's (or Route's) `status.traffic`.

    Entries naming the same revision add up (e.g. `latestRevision` and the same revision by name);
    entries at 0 % (tags only) are left out. Empty when the status has no traffic yet."""
    out: dict[str, float] = {}
    status = service.get("status")
    traffic = status.get("traffic") if isinstance(status, Mapping) else None
    for entry in traffic if isinstance(traffic, list) else []:
        if not isinstance(entry, Mapping):
            continue
        name, pct = entry.get("revisionName"), entry.get("percent")
        if isinstance(name, str) and isinstance(pct, int | float) and pct > 0:
            out[name] = out.get(name, 0.0) + float(pct)
    return out


@dataclass(frozen=True)
class SplitRow:
    revision: str
    expected_pct: float
    answers: int
    observed_pct: float

    @property
    def delta_pp(self) -> float:
        return self.observed_pct - self.expected_pct


@dataclass(frozen=True)
class SplitReport:
    """Observed answers per revision against the route's percentages."""

    rows: tuple[SplitRow, ...]
    answers: int
    """Answers that named a revision (the denominator of every observed share)."""
    unrecognized: int
    """Successful answers in which no revision was found (also counted as locust failures)."""
    tolerance_pp: float
    problems: tuple[str, ...] = ()
    """Why the check cannot pass regardless of the rows (no route traffic, no answers, …)."""

    @property
    def off(self) -> tuple[SplitRow, ...]:
        return tuple(r for r in self.rows if abs(r.delta_pp) > self.tolerance_pp)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.off and self.answers > 0

    @property
    def noise_pp(self) -> float:
        """`SIGMAS` binomial standard deviations of the widest expected share: how far the observed
        share may wander by chance alone with this many answers (the gateway picks a revision at
        random per request, weighted by the percentages)."""
        if self.answers == 0:
            return math.inf
        return max((SIGMAS * 100 * math.sqrt(p * (1 - p) / self.answers)
                    for p in (r.expected_pct / 100 for r in self.rows)), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "answers": self.answers,
            "unrecognized": self.unrecognized,
            "tolerance_pp": self.tolerance_pp,
            "noise_pp": None if math.isinf(self.noise_pp) else round(self.noise_pp, 3),
            "problems": list(self.problems),
            "revisions": [
                {"revision": r.revision, "expected_pct": r.expected_pct, "answers": r.answers,
                 "observed_pct": round(r.observed_pct, 3), "delta_pp": round(r.delta_pp, 3),
                 "within_tolerance": abs(r.delta_pp) <= self.tolerance_pp}
                for r in self.rows
            ],
        }


def compare_split(expected: Mapping[str, float], observed: Mapping[str, int], *,
                  tolerance_pp: float = DEFAULT_TOLERANCE_PP, unrecognized: int = 0,
                  problems: tuple[str, ...] = ()) -> SplitReport:
    """Every revision that is expected or was seen, with its share of the answers that named a
    revision; a revision the route does not name expects 0 %. Rows: expected share (largest
    first), then name."""
    if tolerance_pp < 0:
        raise ValueError(f"the tolerance must be ≥ 0 percentage points, got {tolerance_pp}")
    answers = sum(observed.values())
    names = set(expected) | {k for k, v in observed.items() if v > 0}
    rows = tuple(sorted(
        (SplitRow(n, float(expected.get(n, 0.0)), observed.get(n, 0),
                  100.0 * observed.get(n, 0) / answers if answers else 0.0) for n in names),
        key=lambda r: (-r.expected_pct, r.revision),
    ))
    found = list(problems)
    if not expected and not problems:
        found.append("the route names no revision with traffic (status.traffic is empty)")
    if answers == 0:
        found.append("no answer named a revision")
    return SplitReport(rows, answers, unrecognized, tolerance_pp, tuple(found))


def split_table(report: SplitReport) -> str:
    """The report as a markdown table plus a verdict line (and warnings)."""
    lines = ["| revision | route % | answers | observed % | off by (pp) | |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in report.rows:
        mark = "ok" if abs(r.delta_pp) <= report.tolerance_pp else "OFF"
        lines.append(f"| {r.revision} | {r.expected_pct:g} | {r.answers} | {r.observed_pct:.1f} | "
                     f"{r.delta_pp:+.1f} | {mark} |")
    lines.append("")
    lines.append(f"{report.answers} answers named a revision"
                 + (f"; {report.unrecognized} named none" if report.unrecognized else "")
                 + f"; tolerance ±{report.tolerance_pp:g} pp.")
    if report.answers and report.rows and report.noise_pp > report.tolerance_pp:
        lines.append(f"warning: with {report.answers} answers random routing alone moves a share by "
                     f"up to ±{report.noise_pp:.1f} pp ({SIGMAS:g}σ), more than the tolerance: "
                     "run longer or with more users.")
    lines.extend(f"problem: {p}" for p in report.problems)
    if report.ok:
        lines.append("split check: PASS")
    else:
        off = ", ".join(f"{r.revision} {r.delta_pp:+.1f} pp" for r in report.off)
        lines.append("split check: FAIL" + (f" ({off})" if off else ""))
    return "\n".join(lines)


# --- burst ----------------------------------------------------------------------------------------


@dataclass
class BurstTally:
    """What a burst saw, in one process; tallies of several processes (locust workers on one
    machine: times are wall-clock epoch seconds) merge with `merge`."""

    first_sent: float | None = None
    """When the first request was sent."""
    first_success: float | None = None
    """When the first successful answer arrived."""
    last_user_first_success: float | None = None
    """When the last user that got an answer got its first one."""
    users: int = 0
    """Users that sent at least one request."""
    users_answered: int = 0
    """Users that got at least one successful answer."""
    successes: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def sent(self, at: float, first_of_user: bool) -> None:
        self.first_sent = at if self.first_sent is None else min(self.first_sent, at)
        if first_of_user:
            self.users += 1

    def answered(self, at: float, ok: bool, first_of_user: bool, error: str = "") -> None:
        """Record an answer: `first_of_user` when it is the user's first success."""
        if not ok:
            self.failures[error or "failure"] += 1
            return
        self.successes += 1
        self.first_success = at if self.first_success is None else min(self.first_success, at)
        if first_of_user:
            self.users_answered += 1
            self.last_user_first_success = (at if self.last_user_first_success is None
                                            else max(self.last_user_first_success, at))

    def to_json(self) -> dict[str, Any]:
        return {"first_sent": self.first_sent, "first_success": self.first_success,
                "last_user_first_success": self.last_user_first_success, "users": self.users,
                "users_answered": self.users_answered, "successes": self.successes,
                "failures": dict(self.failures)}

    def merge(self, other: Mapping[str, Any]) -> None:
        """Add another process's `to_json()`."""
        def lo(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)

        def hi(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else max(a, b)

        self.first_sent = lo(self.first_sent, other.get("first_sent"))
        self.first_success = lo(self.first_success, other.get("first_success"))
        self.last_user_first_success = hi(self.last_user_first_success,
                                          other.get("last_user_first_success"))
        self.users += int(other.get("users", 0))
        self.users_answered += int(other.get("users_answered", 0))
        self.successes += int(other.get("successes", 0))
        self.failures.update({str(k): int(v) for k, v in dict(other.get("failures", {})).items()})

    @property
    def time_to_first_success_s(self) -> float | None:
        if self.first_sent is None or self.first_success is None:
            return None
        return self.first_success - self.first_sent

    @property
    def time_to_every_user_s(self) -> float | None:
        """From the first request to the moment every user had an answer (None until they all did)."""
        if (self.first_sent is None or self.last_user_first_success is None
                or self.users_answered < self.users):
            return None
        return self.last_user_first_success - self.first_sent

    def summary(self) -> dict[str, Any]:
        return {**self.to_json(), "time_to_first_success_s": self.time_to_first_success_s,
                "time_to_every_user_s": self.time_to_every_user_s,
                "failed": sum(self.failures.values())}


def burst_table(t: BurstTally) -> str:
    def secs(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f} s"

    failures = ", ".join(f"{k}: {v}" for k, v in sorted(t.failures.items())) or "none"
    rows = [
        ("users that sent a request", str(t.users)),
        ("users that got an answer", str(t.users_answered)),
        ("time to first success (from the first request)", secs(t.time_to_first_success_s)),
        ("time until every user had an answer", secs(t.time_to_every_user_s)),
        ("successful requests", str(t.successes)),
        ("failed requests", str(sum(t.failures.values()))),
        ("failures", failures.replace("|", "\\|")),
    ]
    return "\n".join(["| burst from zero | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)])
