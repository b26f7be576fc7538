"""The side-by-side benchmark's own logic: statistics, pairing of alternated runs, the summary and
its table, the invalid flag, nginx configs, the gateway snapshot, argument bounds and reaping."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flint_common.wire import decode_snapshot
from loadtests import bench, bench_nginx, bench_report, bench_stats, procs
from loadtests.bench_report import ColdSample, LatencyRun, ThroughputRun

# --- statistics ----------------------------------------------------------------------------------


def test_median_and_percentile() -> None:
    assert bench_stats.median([3.0, 1.0, 2.0]) == 2.0
    assert bench_stats.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert bench_stats.median([None, 5.0, None]) == 5.0
    assert bench_stats.median([]) is None and bench_stats.median([None]) is None
    values = [float(v) for v in range(1, 101)]
    assert bench_stats.percentile(values, 50) == 50
    assert bench_stats.percentile(values, 99) == 99
    assert bench_stats.percentile([], 50) is None


def test_ratio() -> None:
    assert bench_stats.ratio(1.0, 4.0) == 0.25
    assert bench_stats.ratio(1.0, 0.0) is None
    assert bench_stats.ratio(None, 1.0) is None


def test_alternate_order() -> None:
    assert bench_stats.alternate(["a", "b", "c"], 2) == [(0, "a"), (0, "b"), (0, "c"), (1, "a"), (1, "b"),
                                                         (1, "c")]
    with pytest.raises(ValueError):
        bench_stats.alternate(["a"], 0)


def test_pairing_of_alternated_runs() -> None:
    runs = [(0, "gw", 10.0), (0, "ng", 20.0), (1, "gw", 30.0), (1, "ng", 40.0), (2, "gw", 5.0)]
    rounds = bench_stats.pair_rounds(runs)
    assert rounds == {0: {"gw": 10.0, "ng": 20.0}, 1: {"gw": 30.0, "ng": 40.0}, 2: {"gw": 5.0}}
    # round 2 has no partner: left out of the paired ratios
    assert bench_stats.paired_ratios(rounds, "gw", "ng", lambda v: v) == [0.5, 0.75]
    assert bench_stats.by_path(list(reversed(runs))) == {"gw": [10.0, 30.0, 5.0], "ng": [20.0, 40.0]}
    with pytest.raises(ValueError):
        bench_stats.pair_rounds([(0, "gw", 1.0), (0, "gw", 2.0)])


def test_paired_differs_from_ratio_of_medians_on_drift() -> None:
    # the machine gets twice as fast in round 1: every path doubles, the paired ratio stays 0.5
    runs = [(0, "gw", 10.0), (0, "ng", 20.0), (1, "gw", 20.0), (1, "ng", 40.0), (2, "gw", 12.0),
            (2, "ng", 24.0)]
    assert bench_stats.paired_ratios(bench_stats.pair_rounds(runs), "gw", "ng", lambda v: v) == [0.5] * 3


# --- summary, table, invalid flag ----------------------------------------------------------------


def _tp(rnd: int, path: str, rps: float, cpu: float | None, loadgen: float = 0.5) -> ThroughputRun:
    return ThroughputRun(round=rnd, path=path, rps=rps, requests=int(rps * 5), errors=0, error_detail={},
                         proxy_cpu_us=cpu, upstream_cpu_us=7.0, loadgen_cpu_fraction=loadgen, wall_s=5.0)


def _lat(rnd: int, path: str, p50: float, p99: float) -> LatencyRun:
    return LatencyRun(round=rnd, path=path, rate=1000.0, rps=1000.0, requests=5000,
                      latency_s={"p50": p50, "p90": p50 * 2, "p99": p99, "max": p99 * 3, "avg": p50},
                      errors=0, error_detail={}, proxy_cpu_us=None, loadgen_cpu_fraction=0.3, wall_s=5.0)


def _summary() -> bench_report.Summary:
    tp = []
    lat = []
    for rnd in range(3):
        tp += [_tp(rnd, "direct", 100_000, None, loadgen=0.95), _tp(rnd, "gateway", 20_000 + rnd, 40.0),
               _tp(rnd, "nginx", 50_000, 14.0)]
        lat += [_lat(rnd, "direct", 0.0001, 0.0005), _lat(rnd, "gateway", 0.0004, 0.0012),
                _lat(rnd, "nginx", 0.0002, 0.0008)]
    cold = [ColdSample(0.300, 0.150, 200, 200), ColdSample(0.320, 0.160, 200, 200),
            ColdSample(0.310, 0.150, 200, 200)]
    scale = {"requests": 1000, "successes": 1000, "errors": {}, "time_to_first_response_s": 0.5,
             "time_to_all_complete_s": 0.6, "latency_s": {"p50": 0.5, "p99": 0.55, "max": 0.56},
             "peak_replicas": 1, "peak_gateway_rss_mib": 90.0, "loadgen_cpu_fraction": 0.4, "invalid": False}
    return bench_report.summarize(tp, lat, cold, scale, {"command": "python -m loadtests.bench", "rounds": 3,
                                                         "duration_s": 5.0, "connections": 32, "workers": 1,
                                                         "hey_workers": 8, "machine": {"cpus": 2}})


def test_invalid_flag() -> None:
    assert bench_report.invalid(0.91) and not bench_report.invalid(0.9) and not bench_report.invalid(0.2)
    assert _tp(0, "direct", 1, None, loadgen=0.95).invalid
    assert not _tp(0, "direct", 1, None, loadgen=0.5).invalid
    s = _summary()
    assert s.throughput["direct"]["invalid_runs"] == 3
    assert s.throughput["gateway"]["invalid_runs"] == 0
    assert all(r["invalid"] for r in s.runs["throughput"] if r["path"] == "direct")


def test_summary_figures_and_targets() -> None:
    s = _summary()
    assert s.throughput["gateway"]["rps"] == 20_001
    assert s.ratios["rps_gateway_over_nginx"] == pytest.approx(20_001 / 50_000)
    assert s.ratios["rps_gateway_over_nginx_paired"] == pytest.approx(20_001 / 50_000)
    assert s.ratios["cpu_gateway_over_nginx"] == pytest.approx(40 / 14)
    assert s.ratios["added_p50_ms_gateway"] == pytest.approx(0.3)
    assert s.ratios["added_p99_ms_gateway"] == pytest.approx(0.7)
    assert s.latency["gateway"]["max_ms"] == pytest.approx(3.6)
    assert s.cold_start is not None
    assert s.cold_start["overhead_ms"] == pytest.approx(160.0)
    assert s.cold_start["ratio"] == pytest.approx(2.0)
    t = s.targets
    assert t["throughput ≥ 0.5 × nginx"]["met"] is False
    assert t["throughput ≥ 0.5 × nginx"]["missed_by"] == pytest.approx(0.5 - 20_001 / 50_000)
    assert t["CPU/request ≤ 2 × nginx"]["met"] is False
    assert t["added p50 ≤ 1 ms"]["met"] is True and t["added p99 ≤ 3 ms"]["met"] is True
    assert t["cold-start overhead ≤ 20 ms"]["missed_by"] == pytest.approx(140.0)
    assert t["1,000 from zero: all succeed within 5 s"]["met"] is True


def test_scale_with_errors_misses_the_target() -> None:
    scale = {"requests": 1000, "successes": 999, "time_to_all_complete_s": 1.0}
    s = bench_report.summarize([], [], None, scale)
    assert s.targets["1,000 from zero: all succeed within 5 s"]["met"] is False
    assert s.ratios["rps_gateway_over_nginx"] is None


def test_markdown_table() -> None:
    out = bench_report.markdown(_summary())
    lines = out.splitlines()
    assert lines[0].startswith("| path | req/s (wrk, median) | proxy CPU µs/req |")
    assert lines[1] == "|" + " --- |" * 7
    gateway = "| (b) Flint gateway | 20001 | 40.0 | 7.0 | 0.40 / 0.80 / 1.20 / 3.60 | 0 / 0 | 50 %; 30 % |"
    assert gateway in lines
    assert any(line.startswith("| (a) direct to the upstream | 100000 | — |") and "INVALID 3/3" in line
               for line in lines)
    assert "| gateway / nginx req/s | 0.40 (paired 0.40) |" in lines
    assert "| overhead (difference; min … max) | 160.0 ms (150.0 … 160.0) |" in lines
    assert "| throughput ≥ 0.5 × nginx | 0.40 | NO (missed by 0.10) |" in lines
    assert "| added p50 ≤ 1 ms | 0.30 | yes |" in lines
    assert "| time until all complete | 0.600 s |" in lines
    assert "Command: `python -m loadtests.bench`" in out
    # every table row has as many cells as its header
    for block in out.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows:
            assert len({r.count(" | ") for r in rows if "---" not in r}) == 1


def test_table_escapes_pipes() -> None:
    assert bench_report.table(["a"], [["x|y"]]).splitlines()[2] == "| x\\|y |"


def test_json_round_trip() -> None:
    import json

    data = json.loads(json.dumps(_summary().to_json()))
    assert data["throughput"]["nginx"]["rps"] == 50_000
    assert len(data["runs"]["latency"]) == 9
    assert data["leftover_processes"] == {}


# --- configs, snapshot, arguments ----------------------------------------------------------------


def test_nginx_configs(tmp_path: Path) -> None:
    up = bench_nginx.upstream_config(tmp_path, 9001)
    assert "worker_processes 1;" in up and "listen 127.0.0.1:9001" in up and "return 200;" in up
    assert "daemon off;" in up and str(tmp_path) in up
    px = bench_nginx.proxy_config(tmp_path, 9002, 9001, workers=2)
    assert "worker_processes 2;" in px and "server 127.0.0.1:9001;" in px and "keepalive 64;" in px
    assert "proxy_http_version 1.1;" in px and 'proxy_set_header Connection "";' in px
    assert "listen 127.0.0.1:9002" in px


def test_snapshot_decodes_as_the_gateway_does() -> None:
    snap = decode_snapshot(bench.snapshot(9001))
    assert snap.routes[0].hosts == (bench.HOST,)
    assert snap.revisions[0].endpoints[0].port == 9001
    assert snap.revisions[0].container_concurrency == 0


def test_parse_args_bounds() -> None:
    o = bench.parse_args(["--rounds", "2", "--duration", "1", "--skip-scale"])
    assert (o.rounds, o.duration_s, o.skip_scale, o.skip_cold_start) == (2, 1.0, True, False)
    assert o.argv == ["--rounds", "2", "--duration", "1", "--skip-scale"]
    for bad in (["--rounds", "0"], ["--duration", "1000"], ["--connections", "0"], ["--workers", "99"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


# --- reaping ---------------------------------------------------------------------------------------


def test_reap_stops_a_child_tree(tmp_path: Path) -> None:
    started = bench.Started(str(tmp_path))
    # a shell ignoring SIGTERM with two grandchildren: the group kill must take them all
    tree = subprocess.Popen(["/bin/sh", "-c", "trap '' TERM; sleep 60 & sleep 60 & wait"],
                            env=started.env(), start_new_session=True)
    started.add(tree)
    # a grandchild that escaped into its own session: only the /proc scan finds it
    escaped = subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork() == 0:\n"
                                "    os.setsid(); time.sleep(60)\n"], env=started.env(),
                               start_new_session=True)
    escaped.wait()
    end = time.monotonic() + 5
    while len(procs.mentioning(str(tmp_path))) < 4 and time.monotonic() < end:
        time.sleep(0.05)
    assert len(procs.mentioning(str(tmp_path))) >= 4  # sh, 2 sleeps, the escaped one
    killed = bench.reap(started, timeout_s=0.5)
    assert tree.returncode == -signal.SIGKILL  # not 0 after the sleeps: killed once TERM was ignored
    assert len(killed) == 1  # the escaped one
    assert procs.mentioning(str(tmp_path)) == {}
    assert started.procs == []


def test_reap_of_a_clean_exit_kills_nothing(tmp_path: Path) -> None:
    started = bench.Started(str(tmp_path))
    started.add(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=started.env(),
                                 start_new_session=True))
    assert bench.reap(started) == {}
    assert procs.mentioning(str(tmp_path)) == {}
    assert os.environ.get(bench.MARKER_ENV) is None


# --- the baseline comparison (issue 10) ------------------------------------------------------------


def _rounds(gw: list[tuple[float, float]], bl: list[tuple[float, float]],
            nginx_rps: list[float]) -> list[ThroughputRun]:
    """Alternated runs: per round (rps, cpu) of the gateway and the baseline, nginx's rps."""
    runs = []
    for rnd, ((g_rps, g_cpu), (b_rps, b_cpu), n_rps) in enumerate(zip(gw, bl, nginx_rps, strict=True)):
        runs += [_tp(rnd, "direct", 100_000, None), _tp(rnd, "gateway", g_rps, g_cpu),
                 _tp(rnd, "baseline", b_rps, b_cpu), _tp(rnd, "nginx", n_rps, 14.0)]
    return runs


def test_compare_baseline_medians_paired_and_rounds() -> None:
    runs = _rounds(gw=[(30_000, 24.0), (32_000, 22.0), (31_000, 23.0)],
                   bl=[(31_000, 23.0), (33_000, 22.0), (30_000, 22.5)],
                   nginx_rps=[60_000, 64_000, 62_000])
    cmp = bench_report.compare_baseline(runs)
    assert cmp is not None
    assert cmp["cpu_us_new"] == 23.0 and cmp["cpu_us_baseline"] == 22.5
    assert cmp["cpu_change"] == pytest.approx(23.0 / 22.5 - 1)
    assert cmp["rps_ratio_new"] == pytest.approx(31_000 / 62_000)
    assert cmp["rps_ratio_baseline"] == pytest.approx(31_000 / 62_000)
    assert cmp["rps_ratio_difference"] == pytest.approx(0.0)
    r = cmp["rounds"]
    assert [x["round"] for x in r] == [0, 1, 2]
    assert r[0]["cpu_change"] == pytest.approx(24 / 23 - 1)
    assert r[1]["cpu_change"] == pytest.approx(0.0)
    assert r[0]["rps_ratio_new"] == pytest.approx(0.5)
    assert r[0]["rps_ratio_difference"] == pytest.approx(30_000 / 60_000 - 31_000 / 60_000)
    assert cmp["paired"]["cpu_change"] == pytest.approx(23 / 22.5 - 1)  # median of +4.3, 0, +2.2 %
    assert cmp["paired"]["rps_ratio_difference"] == pytest.approx(-1_000 / 64_000)
    assert cmp["no_regression"] is True and cmp["cpu_within"] and cmp["rps_ratio_within"]
    assert cmp["errors"] == {"gateway": 0, "baseline": 0}


def test_compare_baseline_without_baseline_runs() -> None:
    assert bench_report.compare_baseline(_rounds([(1, 1)], [(1, 1)], [1])[:2]) is None
    s = _summary()
    assert s.baseline is None and "baseline" not in s.to_json()
    assert "no regression" not in bench_report.markdown(s)
    assert "(b0)" not in bench_report.markdown(s)


def test_verdict_limits() -> None:
    assert bench_report.within(0.03, -0.02) == {"cpu_within": True, "rps_ratio_within": True,
                                                "no_regression": True}
    # exactly at the limits after floating-point arithmetic still passes
    assert bench_report.within(bench_report.change(20.6, 20.0), 0.48 - 0.5)["no_regression"] is True
    assert bench_report.within(0.031, 0.0) == {"cpu_within": False, "rps_ratio_within": True,
                                               "no_regression": False}
    assert bench_report.within(-0.5, -0.021)["rps_ratio_within"] is False
    assert bench_report.within(None, 0.0) == {"cpu_within": None, "rps_ratio_within": True,
                                              "no_regression": None}
    assert bench_report.change(1.0, 0.0) is None and bench_report.change(None, 1.0) is None


def test_verdict_line() -> None:
    line = bench_report.verdict_line
    assert line(bench_report.within(0.01, 0.0)) == \
        "no regression: CPU within +3 %, throughput ratio within −0.02: yes"
    cmp = {"cpu_change": 0.052, "rps_ratio_difference": -0.031, **bench_report.within(0.052, -0.031)}
    assert line(cmp) == ("no regression: CPU within +3 %, throughput ratio within −0.02: NO "
                         "(CPU +5.2 %; throughput ratio −0.031)")
    assert line(bench_report.within(None, None)).endswith(": —")


def test_baseline_markdown_rows() -> None:
    runs = _rounds(gw=[(30_000, 24.0), (30_000, 24.0)], bl=[(32_000, 22.0), (32_000, 22.0)],
                   nginx_rps=[60_000, 60_000])
    cmp = bench_report.compare_baseline(runs)
    assert cmp is not None
    rows = bench_report.baseline_rows(cmp)
    assert rows[0] == ["gateway CPU µs/request (median of the rounds)", "24.0", "22.0", "+9.1 %", "≤ +3 %",
                       "NO"]
    assert rows[1] == ["gateway / nginx req/s (ratio of the medians)", "0.500", "0.533", "−0.033", "≥ −0.02",
                       "NO"]
    assert bench_report.baseline_round_rows(cmp) == [
        ["1", "24.0 / 22.0", "+9.1 %", "0.500 / 0.533", "−0.033"],
        ["2", "24.0 / 22.0", "+9.1 %", "0.500 / 0.533", "−0.033"]]


def test_summary_and_markdown_with_a_baseline() -> None:
    runs = _rounds(gw=[(30_000, 22.0)], bl=[(30_300, 22.0)], nginx_rps=[60_000])
    config = {"command": "python -m loadtests.bench --baseline main", "rounds": 1,
              "baseline": {"rev": "main", "commit": "0123456789abcdef", "subject": "s",
                           "new": {"head": "fedcba9876543210", "dirty": True}}}
    s = bench_report.summarize(runs, [], None, None, config)
    assert s.baseline is not None and s.baseline["no_regression"] is True
    data = s.to_json()
    assert data["baseline"]["cpu_us_baseline"] == 22.0 and data["throughput"]["baseline"]["rps"] == 30_300
    out = bench_report.markdown(s)
    lines = out.splitlines()
    assert any(x.startswith("| (b0) Flint gateway, baseline main | 30300 | 22.0 |") for x in lines)
    assert ("| new gateway (fedcba9876 + local changes) vs baseline main (0123456789) | new | baseline "
            "| change | limit | within |") in lines
    assert "| 1 | 22.0 / 22.0 | +0.0 % | 0.500 / 0.505 | −0.005 |" in lines
    assert "no regression: CPU within +3 %, throughput ratio within −0.02: yes" in lines
    assert "WARNING" not in out
    order = [x.split(" |")[0] for x in lines if x.startswith("| (")]
    assert order == ["| (a) direct to the upstream", "| (b) Flint gateway",
                     "| (b0) Flint gateway, baseline main", "| (c) nginx reverse proxy"]
    for block in out.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows:
            assert len({r.count(" | ") for r in rows if "---" not in r}) == 1


def test_baseline_errors_are_warned() -> None:
    runs = _rounds(gw=[(30_000, 22.0)], bl=[(30_000, 22.0)], nginx_rps=[60_000])
    runs[1] = dataclasses.replace(runs[1], errors=5)
    cmp = bench_report.compare_baseline(runs)
    assert cmp is not None and cmp["errors"] == {"gateway": 5, "baseline": 0}
    assert "WARNING: errors in the compared runs (gateway 5, baseline 0)" in \
        bench_report.baseline_markdown(cmp, {"rev": "main"})[-1]


def test_parse_args_baseline() -> None:
    assert bench.parse_args([]).baseline is None
    assert bench.parse_args(["--baseline", "HEAD~3"]).baseline == "HEAD~3"
