"""Smoke test of `python -m loadtests.bench_events --redis` (SQLite and FlintRedis brokers side
by side, then two dispatchers): it runs, loses nothing, reaps what it started. Its own module so
that it merges apart from the other benchmarks' smoke tests; skipped until the Redis pieces are on
the branch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import REPO


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (sh loadtests/setup-tools.sh)")
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_eventing_benchmark_with_redis_smoke(tmp_path: Path) -> None:
    pytest.importorskip("controller.eventing.redis_consumer",
                        reason="the dispatcher's Redis consumer (issue 12 §3) is not on this branch yet")
    pytest.importorskip("gateway.channels.redis_writer",
                        reason="the gateway's Redis ingress (issue 12 §2) is not on this branch yet")
    out = tmp_path / "events-redis.json"
    r = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_events", "--redis", "--duration", "1", "--rate", "50",
         "--rate-duration", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=280,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "| lost = 0 | 0 | yes |" in r.stdout
    data = json.loads(out.read_text())
    assert data["redis_backend_status"] == "redis"
    for phase in ("sqlite", "redis", "redis_two_dispatchers"):
        assert data[phase]["ingest_accepted"] > 0 and data[phase]["ingest_errors"] == 0, phase
        assert data[phase]["delivered_unique"] >= data[phase]["ingest_accepted"], phase
        assert data[phase]["rate_accepted"] == 50 and data[phase]["rate_lost"] == 0, phase
    assert data["redis"]["store_cpu_us_per_event"] is not None
    assert set(data["ratios"]) >= {"ingest_ratio", "gateway_cpu_ratio", "two_vs_one"}
    assert data["problems"] == []
