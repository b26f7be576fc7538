"""The pure parts of the scale-from-zero benchmark and its /proc helpers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests import procs
from loadtests.scale_from_zero import (
    APP_DIR,
    Outcome,
    Sample,
    error_kind,
    loadgen_invalid,
    manifest,
    markdown_table,
    parse_args,
    percentile,
    report_rows,
    summarize,
    timeline,
    timeline_table,
)

# --- percentiles -------------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0.5) == 1


def test_percentile_small_and_unsorted() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([15.0, 20.0, 35.0, 40.0, 50.0], 30) == 20.0  # the textbook example
    assert percentile([15.0, 20.0, 35.0, 40.0, 50.0], 40) == 20.0


def test_percentile_empty_and_bounds() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 0)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# --- validity and errors -----------------------------------------------------------------------


def test_loadgen_invalid_above_ninety_percent_of_a_core() -> None:
    assert not loadgen_invalid(0.9, 1.0)
    assert loadgen_invalid(0.91, 1.0)
    assert not loadgen_invalid(0.45, 1.0)
    assert loadgen_invalid(2.0, 2.0)
    assert not loadgen_invalid(1.0, 0.0)  # no wall time: nothing to judge
    assert loadgen_invalid(0.6, 1.0, limit=0.5)


def test_error_kind() -> None:
    assert error_kind(200) is None
    assert error_kind(503) == "status 503"
    assert error_kind(None) == "no response"
    assert error_kind(None, TimeoutError()) == "TimeoutError"
    assert error_kind(200, ConnectionResetError()) == "ConnectionResetError"


# --- summary, table, timeline ------------------------------------------------------------------


def _outcomes() -> list[Outcome]:
    ok = [Outcome(0.0, 0.5 + i / 100, 200, None) for i in range(8)]
    return [*ok, Outcome(0.0, 1.2, 503, "status 503"), Outcome(0.01, 3.0, None, "TimeoutError")]


def test_summarize() -> None:
    samples = [Sample(-0.05, 0, 80 * 1024), Sample(0.1, 1, 90 * 1024), Sample(0.6, 3, 100 * 1024),
               Sample(1.0, 2, 95 * 1024)]
    r = summarize(_outcomes(), samples, loadgen_cpu_s=0.5, wall_s=3.0,
                  gateway_idle_rss_kib=80 * 1024, gateway_hwm_kib=101 * 1024)
    assert r.requests == 10 and r.successes == 8
    assert r.errors == {"TimeoutError": 1, "status 503": 1}
    assert r.time_to_first_response_s == 0.5  # the first 200, not the first answer of any kind
    assert r.time_to_all_complete_s == 3.0
    assert r.latency_s["p50"] == pytest.approx(0.54)
    assert r.latency_s["p90"] == pytest.approx(1.2)
    assert r.latency_s["max"] == pytest.approx(2.99)
    assert r.peak_replicas == 3
    assert r.peak_gateway_rss_mib == 100
    assert r.gateway_rss_hwm_mib == 101
    assert r.gateway_idle_rss_mib == 80
    assert r.loadgen_cpu_fraction == pytest.approx(1 / 6)
    assert not r.invalid
    assert not r.meets_bar  # errors
    json.dumps(r.to_json())  # serialisable as it is


def test_meets_bar_only_when_all_succeed_within_five_seconds() -> None:
    fast = [Outcome(0.0, 0.3, 200, None)] * 5
    assert summarize(fast, [], loadgen_cpu_s=0.1, wall_s=0.3).meets_bar
    slow = [*fast, Outcome(0.0, 5.2, 200, None)]
    assert not summarize(slow, [], loadgen_cpu_s=0.1, wall_s=5.2).meets_bar
    assert not summarize([], [], loadgen_cpu_s=0.0, wall_s=0.0).meets_bar
    busy = summarize(fast, [], loadgen_cpu_s=0.3, wall_s=0.3)
    assert busy.invalid and busy.meets_bar  # the bar and validity are reported separately


def test_summarize_with_no_success() -> None:
    r = summarize([Outcome(0.0, 1.0, None, "ClientConnectorError")], [], loadgen_cpu_s=0.0, wall_s=1.0)
    assert r.successes == 0 and r.time_to_first_response_s is None
    rows = dict(report_rows(r))
    assert rows["time to first response"] == "—"
    assert rows["errors"] == "ClientConnectorError: 1"


def test_timeline_buckets() -> None:
    outcomes = [Outcome(0, 0.05, 200, None), Outcome(0, 0.15, 200, None), Outcome(0, 0.19, 200, None)]
    samples = [Sample(-0.02, 5, 1), Sample(0.0, 0, 1024), Sample(0.12, 2, 2048), Sample(0.18, 1, 512)]
    rows = timeline(outcomes, samples, 0.1)
    assert [r["completed"] for r in rows] == [1, 2]
    assert [r["completed_total"] for r in rows] == [1, 3]
    assert [r["replicas"] for r in rows] == [0, 2]  # the sample before the fire is left out
    assert [r["gateway_rss_mib"] for r in rows] == [1.0, 2.0]
    assert [r["t_s"] for r in rows] == [0.1, 0.2]
    with pytest.raises(ValueError):
        timeline(outcomes, samples, 0)


def test_timeline_table_merges_buckets() -> None:
    rows = [{"t_s": 0.1 * (i + 1), "completed": 1, "completed_total": i + 1,
             "replicas": i % 7, "gateway_rss_mib": float(i)} for i in range(60)]
    text = timeline_table(rows, max_rows=20)
    body = text.splitlines()[2:]
    assert len(body) == 20
    assert body[0] == "| 0.30 | 3 | 2 | 2.0 |"
    assert body[-1] == "| 6.00 | 60 | 3 | 59.0 |"  # rows 57-59: replicas 1, 2, 3


def test_markdown_table() -> None:
    text = markdown_table([("a", "1"), ("b|c", "2")])
    assert text.splitlines() == ["| metric | value |", "| --- | --- |", "| a | 1 |", "| b\\|c | 2 |"]


def test_report_rows_show_every_figure() -> None:
    r = summarize(_outcomes(), [Sample(0.1, 4, 2048)], loadgen_cpu_s=2.8, wall_s=3.0)
    rows = dict(report_rows(r))
    assert rows["peak replicas"] == "4"
    assert rows["succeeded (200)"] == "8"
    assert rows["valid run (load generator ≤ 90 % of a core)"].startswith("no")
    assert rows["latency p50 / p90 / p99 / max"].endswith(" s")
    assert "93 % of a core" in rows["load generator CPU"]


# --- manifest and arguments --------------------------------------------------------------------


def test_manifest_uses_an_absolute_image_and_unlimited_concurrency() -> None:
    m = manifest("sleepy", APP_DIR)
    spec = m["spec"]["template"]["spec"]
    assert spec["containerConcurrency"] == 0
    assert Path(spec["containers"][0]["image"]).is_absolute()
    assert (APP_DIR / "Procfile").read_text().startswith("web: ")
    assert m["metadata"] == {"name": "sleepy", "namespace": "default"}
    assert "env" not in spec["containers"][0]
    assert manifest("s", APP_DIR, delay_ms=5)["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "SLEEPY_MS", "value": "5"}
    ]


def test_parse_args_bounds() -> None:
    o = parse_args(["--requests", "20", "--timeout", "60", "--workers", "2", "--json", "x.json"])
    assert (o.requests, o.timeout_s, o.workers, o.json_path) == (20, 60.0, 2, Path("x.json"))
    assert parse_args([]).requests == 1000
    for bad in (["--requests", "0"], ["--requests", "1000000"], ["--timeout", "0"], ["--workers", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


# --- the process table, on real processes -----------------------------------------------------


def test_tree_memory_children_and_env_groups(tmp_path: Path) -> None:
    marker = str(tmp_path)
    child_code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "time.sleep(30)\n"
    )
    env = dict(os.environ, K_REVISION="bench-rev-00001", MARKER=marker)
    p = subprocess.Popen([sys.executable, "-c", child_code], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(procs.descendants(p.pid)) < 1:
            time.sleep(0.05)
        assert len(procs.descendants(p.pid)) == 1
        assert p.pid in procs.children(os.getpid())
        mem = procs.tree_memory([p.pid])
        own = procs.memory(p.pid)
        assert own is not None and mem.rss_kib > own.rss_kib > 0
        assert mem.hwm_kib >= mem.rss_kib
        # Two processes, one group: one replica. Another revision or another state dir: none.
        assert procs.process_groups_with_env("K_REVISION", "bench-rev-00001", also=marker) == {p.pid}
        assert procs.process_groups_with_env("K_REVISION", "bench-rev-0000", also=marker) == set()
        assert procs.process_groups_with_env("K_REVISION", "bench-rev-00001", also=marker + "x") == set()
        assert set(procs.mentioning(marker)) == {p.pid, *procs.descendants(p.pid)}
        assert procs.find_child(os.getpid(), "time.sleep(30)") == p.pid
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert procs.reap_mentioning(marker, timeout_s=5) == {}
    assert not procs.alive(p.pid)


def test_stop_escalates_to_sigkill() -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ok', flush=True)\n"
        "time.sleep(30)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert p.stdout is not None and p.stdout.readline() == b"ok\n"
    # It ignores SIGINT: killed after the 0.5 s (not exiting 0 after its 30 s sleep).
    assert procs.stop(p, sig=signal.SIGINT, timeout_s=0.5) is False
    assert p.returncode == -signal.SIGKILL
    q = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    time.sleep(0.2)
    assert procs.stop(q, sig=signal.SIGTERM, timeout_s=5) is True
    assert procs.stop(q) is True  # already gone


def test_reap_mentioning_kills_leftovers(tmp_path: Path) -> None:
    marker = str(tmp_path / "leftover")
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker],
                         start_new_session=True)
    try:
        time.sleep(0.1)
        left = procs.reap_mentioning(marker, timeout_s=0.3)
        assert list(left) == [p.pid]
        assert p.wait(5) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
