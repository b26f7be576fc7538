"""Smoke tests of the benchmarks: tiny bounded runs as subprocesses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import REPO, procs_mentioning


@pytest.mark.timeout(150)
def test_scale_from_zero_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sfz.json"
    r = subprocess.run(
        [sys.executable, "-m", "loadtests.scale_from_zero", "--requests", "20", "--timeout", "60",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "| succeeded (200) | 20 |" in r.stdout
    assert "| errors | none |" in r.stdout
    data = json.loads(out.read_text())
    assert data["requests"] == 20 and data["successes"] == 20 and data["errors"] == {}
    assert data["time_to_first_response_s"] <= data["time_to_all_complete_s"] <= 60
    assert data["peak_replicas"] >= 1
    assert data["peak_gateway_rss_mib"] > 0
    assert data["config"]["revision"].startswith("sleepy-")
    # Everything it started is gone: its temporary state dir is named in its log lines.
    state = next(line.split("(state ", 1)[1].rstrip(")") for line in r.stderr.splitlines()
                 if "(state " in line)
    assert not procs_mentioning(state)
    assert not Path(state).exists()


@pytest.mark.timeout(200)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (sh loadtests/setup-tools.sh)")
def test_eventing_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "events.json"
    r = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_events", "--duration", "1", "--rate", "50",
         "--rate-duration", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "| lost = 0 | 0 | yes |" in r.stdout
    data = json.loads(out.read_text())
    assert data["ingest_accepted"] > 0 and data["ingest_errors"] == 0
    assert data["logged"] >= data["ingest_accepted"]
    assert data["delivered_unique"] >= data["ingest_accepted"]
    assert data["rate_sent"] == 50 and data["rate_accepted"] == 50 and data["rate_lost"] == 0
    assert data["latency_ms"]["p50"] is not None
    assert data["problems"] == []


@pytest.mark.timeout(150)
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("wrk", "hey", "nginx")),
                    reason="wrk, hey or nginx is not installed (sh loadtests/setup-tools.sh)")
def test_side_by_side_benchmark_with_a_baseline_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # before the run: a commit meanwhile moves HEAD
    r = subprocess.run(
        [sys.executable, "-m", "loadtests.bench", "--baseline", "HEAD", "--rounds", "1", "--duration", "1",
         "--skip-cold-start", "--skip-scale", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    lines = r.stdout.splitlines()
    assert any(line.startswith("| (b0) Flint gateway, baseline HEAD | ") for line in lines)
    assert any(line.startswith(f"| new gateway ({head[:10]}") and f"vs baseline HEAD ({head[:10]})" in line
               for line in lines)
    # HEAD against HEAD: the verdict is printed (yes or NO: one 1-s round is noise, not a verdict)
    verdict = [line for line in lines if line.startswith("no regression: CPU within +3 %")]
    assert len(verdict) == 1 and verdict[0].split(": ")[-1].split(" ")[0] in ("yes", "NO")
    data = json.loads(out.read_text())
    assert data["config"]["baseline"]["commit"] == head
    assert data["throughput"]["baseline"]["requests"] > 0 and data["throughput"]["baseline"]["errors"] == 0
    assert data["baseline"]["cpu_us_baseline"] > 0 and data["baseline"]["rps_ratio_baseline"] > 0
    assert [x["path"] for x in data["runs"]["throughput"]] == ["direct", "gateway", "baseline", "nginx"]
    assert data["leftover_processes"] == {}
    # the baseline ran from the exported tree in the benchmark's temporary dir, now gone with its processes
    gateway_file = Path(data["config"]["baseline"]["gateway_file"])
    workdir = gateway_file.parent.parent.parent
    assert gateway_file == workdir / "baseline" / "gateway" / "__init__.py"
    assert workdir.name.startswith("flint-bench-")
    assert not workdir.exists()
    assert not procs_mentioning(str(workdir))


@pytest.mark.timeout(150)
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("wrk", "redis-server")),
                    reason="wrk or redis-server is not installed")
def test_redis_ingest_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "redis-ingest.json"
    r = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_redis_ingest", "--duration", "1", "--rounds", "1",
         "--events", "1000", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    data = json.loads(out.read_text())
    assert data["problems"] == []
    assert len(data["gateway"]) == 2 and len(data["micro"]) == 3
    for b in data["gateway"] + data["micro"]:
        assert b["events"] > 0 and b["errors"] == 0 and b["cpu_us_per_event"] > 0, b
    for b in data["gateway"]:
        assert b["stored"] >= b["events"], b  # every 202 is in the log or the stream
    batched, one = data["micro"][1], data["micro"][2]
    assert batched["pipelines"] < batched["events"] and one["pipelines"] == one["events"]
    assert "Redis / SQLite through the gateway: ingest" in r.stdout
