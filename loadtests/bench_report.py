"""The benchmark's results: per-run records, their summary (medians, ratios, targets), markdown, JSON.

Everything here is pure: `summarize` turns the alternated runs into the figures the README
quotes, `markdown` prints them. A run whose load generator used more than 90 % of a core is
marked invalid (the generator, not the proxy, may have set the pace); invalid runs are still
shown, and counted, but the summary says how many there were.

With `--baseline REV` a fourth path, `baseline` (REV's gateway), is measured in every round;
`compare_baseline` sets the current gateway against it as issue 10 asks: the median CPU µs per
request (new within +3 % of the baseline's) and the gateway/nginx throughput ratio (the ratio of
the medians, as in the targets; new within −0.02 of the baseline's), each also paired by round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtests import bench_stats as st

CPU_LIMIT = 0.9
"""A load generator above this fraction of one core makes its run invalid."""
PATHS = ("direct", "gateway", "baseline", "nginx")
PATH_LABELS = {
    "direct": "(a) direct to the upstream",
    "gateway": "(b) Flint gateway",
    "baseline": "(b0) Flint gateway, baseline",
    "nginx": "(c) nginx reverse proxy",
}

TARGET_THROUGHPUT = 0.5
"""gateway req/s ≥ 0.5 × nginx's."""
TARGET_CPU = 2.0
"""gateway CPU per request ≤ 2 × nginx's."""
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 3.0
TARGET_COLD_OVERHEAD_MS = 20.0
TARGET_SCALE_ALL_S = 5.0

BASELINE_CPU_CHANGE = 0.03
"""No regression: the new gateway's median CPU per request ≤ the baseline's × (1 + this)."""
BASELINE_RATIO_DIFFERENCE = -0.02
"""No regression: the new gateway/nginx throughput ratio ≥ the baseline's + this."""
VERDICT = "no regression: CPU within +3 %, throughput ratio within −0.02"
_EPS = 1e-9


def invalid(loadgen_cpu_fraction: float, limit: float = CPU_LIMIT) -> bool:
    """Whether a run's load generator used more than `limit` of one core."""
    return loadgen_cpu_fraction > limit


@dataclass(frozen=True)
class ThroughputRun:
    """One wrk run (closed loop) against one path."""

    round: int
    path: str
    rps: float
    requests: int
    errors: int
    error_detail: dict[str, int]
    proxy_cpu_us: float | None
    """CPU µs per request of the proxy under test (gateway or nginx proxy; None for direct)."""
    upstream_cpu_us: float | None
    """CPU µs per request of the upstream nginx."""
    loadgen_cpu_fraction: float
    wall_s: float

    @property
    def invalid(self) -> bool:
        return invalid(self.loadgen_cpu_fraction)


@dataclass(frozen=True)
class LatencyRun:
    """One hey run at a fixed rate against one path (latencies in seconds)."""

    round: int
    path: str
    rate: float
    rps: float
    requests: int
    latency_s: dict[str, float | None]
    errors: int
    error_detail: dict[str, int]
    proxy_cpu_us: float | None
    loadgen_cpu_fraction: float
    wall_s: float

    @property
    def invalid(self) -> bool:
        return invalid(self.loadgen_cpu_fraction)


@dataclass
class ColdSample:
    """One cold start through Flint and one bare start of the same app (seconds)."""

    flint_s: float
    bare_s: float
    flint_status: int | None
    bare_status: int | None

    @property
    def overhead_s(self) -> float:
        return self.flint_s - self.bare_s

    @property
    def ratio(self) -> float | None:
        return st.ratio(self.flint_s, self.bare_s)


@dataclass
class Summary:
    config: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    cold_start: dict[str, Any] | None = None
    scale_from_zero: dict[str, Any] | None = None
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    leftover_processes: dict[str, str] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    """`compare_baseline` of the runs, with `--baseline` only (absent from the JSON otherwise)."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["baseline"] is None:
            del data["baseline"]
        return data


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000


def summarize_throughput(runs: Sequence[ThroughputRun]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path, rs in st.by_path([(r.round, r.path, r) for r in runs]).items():
        out[path] = {
            "rps": st.median([r.rps for r in rs]),
            "rps_runs": [round(r.rps) for r in rs],
            "proxy_cpu_us": st.median([r.proxy_cpu_us for r in rs]),
            "upstream_cpu_us": st.median([r.upstream_cpu_us for r in rs]),
            "errors": sum(r.errors for r in rs),
            "requests": sum(r.requests for r in rs),
            "loadgen_cpu_fraction": st.median([r.loadgen_cpu_fraction for r in rs]),
            "invalid_runs": sum(r.invalid for r in rs),
            "runs": len(rs),
        }
    return out


def summarize_latency(runs: Sequence[LatencyRun]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path, rs in st.by_path([(r.round, r.path, r) for r in runs]).items():
        out[path] = {
            "rate": rs[0].rate,
            "rps": st.median([r.rps for r in rs]),
            **{f"{k}_ms": _ms(st.median([r.latency_s.get(k) for r in rs])) for k in ("p50", "p90", "p99")},
            "max_ms": _ms(max((m for r in rs if (m := r.latency_s.get("max")) is not None), default=None)),
            "proxy_cpu_us": st.median([r.proxy_cpu_us for r in rs]),
            "errors": sum(r.errors for r in rs),
            "requests": sum(r.requests for r in rs),
            "loadgen_cpu_fraction": st.median([r.loadgen_cpu_fraction for r in rs]),
            "invalid_runs": sum(r.invalid for r in rs),
            "runs": len(rs),
        }
    return out


def _paired_median(runs: Sequence[tuple[int, str, Any]], num: str, den: str, attr: Any) -> float | None:
    return st.median(st.paired_ratios(st.pair_rounds(runs), num, den, attr))


def summarize_cold(samples: Sequence[ColdSample]) -> dict[str, Any]:
    return {
        "samples": len(samples),
        "flint_ms": _ms(st.median([s.flint_s for s in samples])),
        "bare_ms": _ms(st.median([s.bare_s for s in samples])),
        "overhead_ms": _ms(st.median([s.overhead_s for s in samples])),
        "ratio": st.median([s.ratio for s in samples]),
        "overhead_ms_min_max": [_ms(min((s.overhead_s for s in samples), default=None)),
                                _ms(max((s.overhead_s for s in samples), default=None))],
        "errors": sum(s.flint_status != 200 for s in samples) + sum(s.bare_status != 200 for s in samples),
        "samples_ms": [{"flint": round(s.flint_s * 1000, 2), "bare": round(s.bare_s * 1000, 2)}
                       for s in samples],
    }


def _target(value: float | None, limit: float, at_most: bool) -> dict[str, Any]:
    met = None if value is None else (value <= limit if at_most else value >= limit)
    by = None
    if value is not None and met is False:
        by = value - limit if at_most else limit - value
    return {"value": value, "limit": limit, "at_most": at_most, "met": met, "missed_by": by}


def summarize(
    throughput: Sequence[ThroughputRun],
    latency: Sequence[LatencyRun],
    cold: Sequence[ColdSample] | None = None,
    scale: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Summary:
    """Medians per path, ratios (of medians, and the median of per-round paired ratios), targets."""
    s = Summary(config=dict(config or {}))
    s.throughput = summarize_throughput(throughput)
    s.latency = summarize_latency(latency)
    tp = [(r.round, r.path, r) for r in throughput]
    lat = [(r.round, r.path, r) for r in latency]

    def tp_get(path: str, key: str) -> float | None:
        v = s.throughput.get(path, {}).get(key)
        return float(v) if v is not None else None

    def lat_get(path: str, key: str) -> float | None:
        v = s.latency.get(path, {}).get(key)
        return float(v) if v is not None else None

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    s.ratios = {
        "rps_gateway_over_nginx": st.ratio(tp_get("gateway", "rps"), tp_get("nginx", "rps")),
        "rps_gateway_over_nginx_paired": _paired_median(tp, "gateway", "nginx", lambda r: r.rps),
        "rps_gateway_over_direct": st.ratio(tp_get("gateway", "rps"), tp_get("direct", "rps")),
        "rps_gateway_over_direct_paired": _paired_median(tp, "gateway", "direct", lambda r: r.rps),
        "rps_nginx_over_direct": st.ratio(tp_get("nginx", "rps"), tp_get("direct", "rps")),
        "cpu_gateway_over_nginx": st.ratio(tp_get("gateway", "proxy_cpu_us"),
                                           tp_get("nginx", "proxy_cpu_us")),
        "cpu_gateway_over_nginx_paired": _paired_median(tp, "gateway", "nginx", lambda r: r.proxy_cpu_us),
        "added_p50_ms_gateway": diff(lat_get("gateway", "p50_ms"), lat_get("direct", "p50_ms")),
        "added_p99_ms_gateway": diff(lat_get("gateway", "p99_ms"), lat_get("direct", "p99_ms")),
        "added_p50_ms_nginx": diff(lat_get("nginx", "p50_ms"), lat_get("direct", "p50_ms")),
        "added_p99_ms_nginx": diff(lat_get("nginx", "p99_ms"), lat_get("direct", "p99_ms")),
        "added_p50_ms_gateway_paired": st.median(
            [a - b for a, b in _paired_values(lat, "gateway", "direct", "p50")]),
        "added_p99_ms_gateway_paired": st.median(
            [a - b for a, b in _paired_values(lat, "gateway", "direct", "p99")]),
    }
    s.targets = {
        "throughput ≥ 0.5 × nginx": _target(s.ratios["rps_gateway_over_nginx"], TARGET_THROUGHPUT, False),
        "CPU/request ≤ 2 × nginx": _target(s.ratios["cpu_gateway_over_nginx"], TARGET_CPU, True),
        "added p50 ≤ 1 ms": _target(s.ratios["added_p50_ms_gateway"], TARGET_ADDED_P50_MS, True),
        "added p99 ≤ 3 ms": _target(s.ratios["added_p99_ms_gateway"], TARGET_ADDED_P99_MS, True),
    }
    if cold is not None:
        s.cold_start = summarize_cold(cold)
        s.targets["cold-start overhead ≤ 20 ms"] = _target(s.cold_start["overhead_ms"],
                                                          TARGET_COLD_OVERHEAD_MS, True)
    if scale is not None:
        s.scale_from_zero = dict(scale)
        all_s = scale.get("time_to_all_complete_s")
        ok = scale.get("successes") == scale.get("requests")
        t = _target(all_s if ok else None, TARGET_SCALE_ALL_S, True)
        if not ok:
            t["met"] = False
        s.targets["1,000 from zero: all succeed within 5 s"] = t
    s.runs = {"throughput": [asdict(r) | {"invalid": r.invalid} for r in throughput],
              "latency": [asdict(r) | {"invalid": r.invalid} for r in latency]}
    s.baseline = compare_baseline(throughput)
    return s


# --- the baseline comparison (issue 10) ----------------------------------------------------------


def change(new: float | None, old: float | None) -> float | None:
    """new / old − 1 (+0.03 = 3 % more); None when either is unknown or old is 0."""
    r = st.ratio(new, old)
    return None if r is None else r - 1


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def within(cpu_change: float | None, ratio_difference: float | None) -> dict[str, bool | None]:
    """The verdict of issue 10: CPU per request at most +3 % and the gateway/nginx throughput
    ratio at most 0.02 lower than the baseline's (None when a figure is unknown)."""
    cpu = None if cpu_change is None else cpu_change <= BASELINE_CPU_CHANGE + _EPS
    rps = None if ratio_difference is None else ratio_difference >= BASELINE_RATIO_DIFFERENCE - _EPS
    both = None if cpu is None or rps is None else cpu and rps
    return {"cpu_within": cpu, "rps_ratio_within": rps, "no_regression": both}


def compare_baseline(runs: Sequence[ThroughputRun], new: str = "gateway", old: str = "baseline",
                     ref: str = "nginx") -> dict[str, Any] | None:
    """The current gateway (`new`) against the baseline build (`old`) from alternated throughput
    runs: medians over the rounds, the same paired by round, each round's figures and the verdict.
    None when no run measured `old`."""
    by = st.by_path([(r.round, r.path, r) for r in runs])
    if old not in by:
        return None

    def med(path: str, key: str) -> float | None:
        return st.median([getattr(r, key) for r in by.get(path, [])])

    cpu_new, cpu_old = med(new, "proxy_cpu_us"), med(old, "proxy_cpu_us")
    rps_ref = med(ref, "rps")
    ratio_new, ratio_old = st.ratio(med(new, "rps"), rps_ref), st.ratio(med(old, "rps"), rps_ref)
    rounds: list[dict[str, Any]] = []
    for rnd, slot in sorted(st.pair_rounds([(r.round, r.path, r) for r in runs]).items()):
        n, o, x = slot.get(new), slot.get(old), slot.get(ref)
        rn = st.ratio(n.rps, x.rps) if n and x else None
        ro = st.ratio(o.rps, x.rps) if o and x else None
        cn = n.proxy_cpu_us if n else None
        co = o.proxy_cpu_us if o else None
        rounds.append({"round": rnd, "cpu_us_new": cn, "cpu_us_baseline": co, "cpu_change": change(cn, co),
                       "rps_new": n.rps if n else None, "rps_baseline": o.rps if o else None,
                       "rps_nginx": x.rps if x else None, "rps_ratio_new": rn, "rps_ratio_baseline": ro,
                       "rps_ratio_difference": _difference(rn, ro)})
    cpu_change = change(cpu_new, cpu_old)
    ratio_difference = _difference(ratio_new, ratio_old)
    return {
        "cpu_us_new": cpu_new,
        "cpu_us_baseline": cpu_old,
        "cpu_change": cpu_change,
        "rps_ratio_new": ratio_new,
        "rps_ratio_baseline": ratio_old,
        "rps_ratio_difference": ratio_difference,
        "paired": {
            "cpu_change": st.median([r["cpu_change"] for r in rounds]),
            "rps_ratio_new": st.median([r["rps_ratio_new"] for r in rounds]),
            "rps_ratio_baseline": st.median([r["rps_ratio_baseline"] for r in rounds]),
            "rps_ratio_difference": st.median([r["rps_ratio_difference"] for r in rounds]),
        },
        "rounds": rounds,
        "limits": {"cpu_change_at_most": BASELINE_CPU_CHANGE,
                   "rps_ratio_difference_at_least": BASELINE_RATIO_DIFFERENCE},
        **within(cpu_change, ratio_difference),
        "errors": {new: sum(r.errors for r in by.get(new, [])), old: sum(r.errors for r in by[old])},
        "invalid_runs": {p: sum(r.invalid for r in by.get(p, [])) for p in (new, old, ref)},
    }


def _paired_values(runs: Sequence[tuple[int, str, LatencyRun]], a: str, b: str,
                   key: str) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for _, slot in sorted(st.pair_rounds(runs).items()):
        if a in slot and b in slot:
            va, vb = slot[a].latency_s.get(key), slot[b].latency_s.get(key)
            if va is not None and vb is not None:
                out.append((va * 1000, vb * 1000))
    return out


# --- markdown ------------------------------------------------------------------------------------


def _f(v: Any, fmt: str = ".0f", unit: str = "") -> str:
    if v is None:
        return "—"
    return f"{v:{fmt}}{unit}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table; `|` in cells is escaped."""
    def cell(x: str) -> str:
        return x.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _validity(d: Mapping[str, Any]) -> str:
    frac = d.get("loadgen_cpu_fraction")
    bad = d.get("invalid_runs", 0)
    text = f"{_f(None if frac is None else 100 * frac)} %"
    return text + (f" — INVALID {bad}/{d.get('runs')}" if bad else "")


def path_label(path: str, config: Mapping[str, Any]) -> str:
    """A path's row label; the baseline's names its revision."""
    label = PATH_LABELS.get(path, path)
    if path == "baseline":
        rev = (config.get("baseline") or {}).get("rev")
        label += f" {rev}" if rev else ""
    return label


def _signed(v: float | None, fmt: str, unit: str = "") -> str:
    """`+1.2` / `−1.2` (a true minus sign, as in the limits), `—` when unknown."""
    if v is None:
        return "—"
    text = f"{abs(v):{fmt}}"
    sign = "−" if v < 0 and float(text) != 0 else "+"
    return f"{sign}{text}{unit}"


def _yes(v: bool | None) -> str:
    return {True: "yes", False: "NO", None: "—"}[v]


def verdict_line(cmp: Mapping[str, Any]) -> str:
    """`no regression: CPU within +3 %, throughput ratio within −0.02: yes` (or NO, with what
    missed; — when a figure is unknown)."""
    why = []
    if cmp.get("cpu_within") is False:
        why.append(f"CPU {_signed(100 * cmp['cpu_change'], '.1f', ' %')}")
    if cmp.get("rps_ratio_within") is False:
        why.append(f"throughput ratio {_signed(cmp['rps_ratio_difference'], '.3f')}")
    return f"{VERDICT}: {_yes(cmp.get('no_regression'))}" + (f" ({'; '.join(why)})" if why else "")


def baseline_rows(cmp: Mapping[str, Any]) -> list[list[str]]:
    """The comparison table's rows: the two figures of the verdict, then the same paired by round."""
    pct = 100 * BASELINE_CPU_CHANGE
    cpu_change = cmp.get("cpu_change")
    paired = cmp.get("paired") or {}
    paired_cpu = paired.get("cpu_change")
    return [
        ["gateway CPU µs/request (median of the rounds)", _f(cmp.get("cpu_us_new"), ".1f"),
         _f(cmp.get("cpu_us_baseline"), ".1f"),
         _signed(None if cpu_change is None else 100 * cpu_change, ".1f", " %"),
         f"≤ +{pct:.0f} %", _yes(cmp.get("cpu_within"))],
        ["gateway / nginx req/s (ratio of the medians)", _f(cmp.get("rps_ratio_new"), ".3f"),
         _f(cmp.get("rps_ratio_baseline"), ".3f"), _signed(cmp.get("rps_ratio_difference"), ".3f"),
         f"≥ {_signed(BASELINE_RATIO_DIFFERENCE, '.2f')}", _yes(cmp.get("rps_ratio_within"))],
        ["gateway CPU µs/request, paired by round (median of new/baseline − 1)", "", "",
         _signed(None if paired_cpu is None else 100 * paired_cpu, ".1f", " %"), "", ""],
        ["gateway / nginx req/s, paired by round (medians; median difference)",
         _f(paired.get("rps_ratio_new"), ".3f"), _f(paired.get("rps_ratio_baseline"), ".3f"),
         _signed(paired.get("rps_ratio_difference"), ".3f"), "", ""],
    ]


def baseline_round_rows(cmp: Mapping[str, Any]) -> list[list[str]]:
    """One row per round: CPU per request and gateway/nginx ratio, new against baseline."""
    rows = []
    for r in cmp.get("rounds", []):
        ch = r.get("cpu_change")
        rows.append([str(r["round"] + 1),
                     f"{_f(r.get('cpu_us_new'), '.1f')} / {_f(r.get('cpu_us_baseline'), '.1f')}",
                     _signed(None if ch is None else 100 * ch, ".1f", " %"),
                     f"{_f(r.get('rps_ratio_new'), '.3f')} / {_f(r.get('rps_ratio_baseline'), '.3f')}",
                     _signed(r.get("rps_ratio_difference"), ".3f")])
    return rows


def baseline_markdown(cmp: Mapping[str, Any], info: Mapping[str, Any]) -> list[str]:
    """The comparison with the baseline build: its table, the rounds, the verdict (and warnings)."""
    rev = info.get("rev", "baseline")
    commit = str(info.get("commit") or "")[:10]
    name = f"baseline {rev}" + (f" ({commit})" if commit else "")
    build = info.get("new") or {}
    new = "new gateway"
    if build.get("head"):
        new += f" ({str(build['head'])[:10]}{' + local changes' if build.get('dirty') else ''})"
    out = [
        table([f"{new} vs {name}", "new", "baseline", "change", "limit", "within"],
              baseline_rows(cmp)),
        table(["round", "CPU µs/req new / baseline", "CPU change", "gateway / nginx req/s new / baseline",
               "difference"], baseline_round_rows(cmp)),
    ]
    out.append(verdict_line(cmp))
    warnings = []
    errors = cmp.get("errors") or {}
    if any(errors.values()):
        warnings.append("errors in the compared runs (" + ", ".join(f"{k} {v}" for k, v in errors.items())
                        + "): the figures may not compare")
    invalid_runs = cmp.get("invalid_runs") or {}
    if any(invalid_runs.values()):
        warnings.append("invalid runs, the load generator saturated its core ("
                        + ", ".join(f"{k} {v}" for k, v in invalid_runs.items() if v) + ")")
    if warnings:
        out.append("WARNING: " + "; ".join(warnings))
    return out


def markdown(s: Summary) -> str:
    """The report: paths side by side, ratios against the targets, cold start, scale from zero."""
    c = s.config
    parts: list[str] = []
    rows: list[list[str]] = []
    for path in PATHS:
        t = s.throughput.get(path)
        lat = s.latency.get(path, {})
        if t is None:
            continue
        rows.append([
            path_label(path, c),
            _f(t["rps"]),
            "—" if path == "direct" else _f(t["proxy_cpu_us"], ".1f"),
            _f(t["upstream_cpu_us"], ".1f"),
            " / ".join(_f(lat.get(k), ".2f") for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
            f"{t['errors']} / {lat.get('errors', 0)}",
            f"{_validity(t)}; {_validity(lat) if lat else '—'}",
        ])
    rate = next((d["rate"] for d in s.latency.values()), None)
    parts.append(table(
        ["path", "req/s (wrk, median)", "proxy CPU µs/req", "upstream nginx CPU µs/req",
         f"latency p50 / p90 / p99 / max ms at {_f(rate)} req/s (hey)", "errors (wrk / hey)",
         "load generator CPU (wrk; hey)"],
        rows))
    r = s.ratios
    ratio_rows = [
        ["gateway / nginx req/s", f"{_f(r.get('rps_gateway_over_nginx'), '.2f')} "
                                  f"(paired {_f(r.get('rps_gateway_over_nginx_paired'), '.2f')})"],
        ["gateway / direct req/s", f"{_f(r.get('rps_gateway_over_direct'), '.2f')} "
                                   f"(paired {_f(r.get('rps_gateway_over_direct_paired'), '.2f')})"],
        ["nginx / direct req/s", _f(r.get("rps_nginx_over_direct"), ".2f")],
        ["gateway / nginx CPU per request", f"{_f(r.get('cpu_gateway_over_nginx'), '.2f')} "
                                            f"(paired {_f(r.get('cpu_gateway_over_nginx_paired'), '.2f')})"],
        ["latency added by the gateway p50 / p99", f"{_f(r.get('added_p50_ms_gateway'), '.2f')} / "
                                                   f"{_f(r.get('added_p99_ms_gateway'), '.2f')} ms"],
        ["latency added by nginx p50 / p99", f"{_f(r.get('added_p50_ms_nginx'), '.2f')} / "
                                             f"{_f(r.get('added_p99_ms_nginx'), '.2f')} ms"],
    ]
    parts.append(table(["ratio", "value"], ratio_rows))
    if s.baseline is not None:
        parts += baseline_markdown(s.baseline, c.get("baseline") or {})
    if s.cold_start is not None:
        cs = s.cold_start
        lo, hi = cs["overhead_ms_min_max"]
        parts.append(table(["cold start (median of samples)", "value"], [
            ["samples", str(cs["samples"])],
            ["first request through Flint, revision at zero", _f(cs["flint_ms"], ".1f", " ms")],
            ["bare start of the same app (poll every 5 ms) + one request", _f(cs["bare_ms"], ".1f", " ms")],
            ["overhead (difference; min … max)", f"{_f(cs['overhead_ms'], '.1f')} ms "
                                                 f"({_f(lo, '.1f')} … {_f(hi, '.1f')})"],
            ["ratio", _f(cs["ratio"], ".2f", " ×")],
            ["errors", str(cs["errors"])],
        ]))
    if s.scale_from_zero is not None:
        z = s.scale_from_zero
        lat = z.get("latency_s") or {}
        errs = ", ".join(f"{k}: {v}" for k, v in (z.get("errors") or {}).items()) or "none"
        parts.append(table([f"scale from zero to {z.get('requests')} concurrent", "value"], [
            ["succeeded", f"{z.get('successes')} of {z.get('requests')} (errors: {errs})"],
            ["time to first response", _f(z.get("time_to_first_response_s"), ".3f", " s")],
            ["time until all complete", _f(z.get("time_to_all_complete_s"), ".3f", " s")],
            ["latency p50 / p99 / max",
             " / ".join(_f(lat.get(k), ".3f") for k in ("p50", "p99", "max")) + " s"],
            ["peak replicas", str(z.get("peak_replicas"))],
            ["peak gateway RSS", _f(z.get("peak_gateway_rss_mib"), ".1f", " MiB")],
            ["load generator CPU", f"{_f(100 * float(z.get('loadgen_cpu_fraction') or 0))} % of a core"
                                   + (" — INVALID" if z.get("invalid") else "")],
        ]))
    target_rows = []
    for name, t in s.targets.items():
        met = {True: "yes", False: "NO", None: "—"}[t["met"]]
        if t["met"] is False and t["missed_by"] is not None:
            met += f" (missed by {t['missed_by']:.2f})"
        target_rows.append([name, _f(t["value"], ".2f"), met])
    parts.append(table(["target", "measured", "met"], target_rows))
    if c:
        parts.append(f"Command: `{c.get('command', '')}`; {c.get('rounds')} rounds × {c.get('duration_s')} s "
                     f"per path, wrk -t1 -c{c.get('connections')}, hey -c{c.get('hey_workers')}, "
                     f"{c.get('workers')} worker(s) per proxy; "
                     f"machine: {c.get('machine', {}).get('cpus')} CPUs.")
    if s.leftover_processes:
        parts.append("WARNING: processes left behind were killed: "
                     + "; ".join(f"{p} {cmd[:80]}" for p, cmd in s.leftover_processes.items()))
    return "\n\n".join(parts)
