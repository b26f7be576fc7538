"""Smoke test of the locust scenarios (loadtests/locustfiles) against a real `flint up`.

Each scenario runs at a tiny bounded size (a few users, a few seconds) as a subprocess: importing
locust monkey-patches the process for gevent, so this process never imports it (the first test
checks that the scenarios' shared logic can be imported without it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.harness import APPS, BIN, REPO, Flint, poll, start_flint, stop_flint

LOCUST = BIN / "locust"
LOCUSTFILES = REPO / "loadtests" / "locustfiles"
SLEEPY = REPO / "loadtests" / "apps" / "sleepy"
# tests/integration/test_autoscaling_e2e.py's test profile: idle revisions reach zero in seconds.
PROFILE = (
    "--autoscaler", "stable-window=2s",
    "--autoscaler", "scale-to-zero-grace-period=0s",
    "--autoscaler", "tick-interval=0.5s",
)
RUN_S = 4
USERS = 4

pytestmark = pytest.mark.skipif(not LOCUST.exists(),
                                reason="locust is not installed: pip install -e '.[load]'")


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flint]:
    f = start_flint(tmp_path_factory.mktemp("locust"), *PROFILE)
    try:
        yield f
    finally:
        stop_flint(f)


def locust(f: Flint, scenario: str, service: str, tmp: Path, *extra: str, users: int = USERS,
           seconds: int = RUN_S) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """Run one scenario headless (all users spawned at once); return the process and locust's
    final totals (`requests`, `failures`, from `--json-file`)."""
    prefix = tmp / f"{scenario}-stats"
    cmd = [
        str(LOCUST), "-f", str(LOCUSTFILES / f"{scenario}.py"), "--headless",
        "-u", str(users), "-r", str(users), "--run-time", f"{seconds}s",
        "--host", f"http://127.0.0.1:{f.port}", "--flint-host", f.host(service),
        "--flint-api", f.api, "--exit-code-on-error", "1", "--json-file", str(prefix), *extra,
    ]
    # No FLINT_*/LOCUST_* settings of the caller's, and no locust.conf but ours (none): run in tmp.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLINT_", "LOCUST_"))}
    assert f.token is not None
    env["FLINT_TOKEN"] = f.token.reveal()  # the split check reads the route's percentages
    r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=seconds + 45)
    totals = {"requests": 0, "failures": 0}
    stats_file = Path(f"{prefix}.json")
    if stats_file.exists():
        for entry in json.loads(stats_file.read_text()):
            totals["requests"] += int(entry["num_requests"])
            totals["failures"] += int(entry["num_failures"])
    return r, totals


def _out(r: subprocess.CompletedProcess[str]) -> str:
    return f"exit {r.returncode}\nstdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"


def _replicas(f: Flint, revision: str) -> int:
    return sum(1 for r in f.replica_records() if r["revision_key"] == f"default/{revision}")


def test_shared_logic_imports_without_locust() -> None:
    import loadtests.locustfiles as lf

    assert "locust" not in sys.modules and "gevent" not in sys.modules
    assert lf.revision_of(b"Hello World! (revision hello-00001)\n", "text/plain") == "hello-00001"
    assert lf.revision_of(b'{"revision": "echo-00002", "pid": 7}', "application/json") == "echo-00002"
    assert lf.revision_of(b'{"revision": "sleepy-00001", "slept_ms": 0}', "") == "sleepy-00001"
    assert lf.revision_of(b'{"meta": {"rev": "a-1"}}', "application/json", json_field="meta.rev") == "a-1"
    assert lf.revision_of(b"served by v=b-00003", "text/plain", regex=r"v=(\S+)") == "b-00003"
    assert lf.revision_of(b"no name here", "text/plain") is None
    svc = {"status": {"traffic": [
        {"revisionName": "s-00002", "percent": 60, "latestRevision": True},
        {"revisionName": "s-00001", "percent": 40},
        {"revisionName": "s-00001", "percent": 0, "tag": "blue"},
    ]}}
    assert lf.expected_split(svc) == {"s-00002": 60.0, "s-00001": 40.0}
    ok = lf.compare_split({"a": 50, "b": 50}, {"a": 520, "b": 480}, tolerance_pp=5)
    assert ok.ok and [r.revision for r in ok.rows] == ["a", "b"]
    off = lf.compare_split({"a": 50, "b": 50}, {"a": 550, "b": 350, "c": 100}, tolerance_pp=5)
    assert not off.ok and {r.revision for r in off.off} == {"b", "c"}  # a: +5.0 is within ±5
    table = lf.split_table(off)
    assert "| c | 0 | 100 | 10.0 | +10.0 | OFF |" in table and "split check: FAIL" in table
    assert not lf.compare_split({}, {"a": 10}).ok
    assert not lf.compare_split({"a": 100}, {}).ok


def test_steady(fast: Flint, tmp_path: Path) -> None:
    fast.cli("service", "create", "steady", "--image", str(APPS / "echo"))
    r, totals = locust(fast, "steady", "steady", tmp_path)
    assert r.returncode == 0, _out(r)
    assert totals["requests"] > 0 and totals["failures"] == 0, (totals, _out(r))


def test_split_reports_both_revisions(fast: Flint, tmp_path: Path) -> None:
    fast.cli("service", "create", "split", "--image", str(SLEEPY), "--env", "SLEEPY_MS=0")
    fast.cli("service", "update", "split", "--env", "TARGET=v2")
    fast.cli("service", "update", "split", "--traffic", "split-00001=50", "--traffic", "split-00002=50")
    report = tmp_path / "split.json"
    # 10 pp: a few seconds give a few hundred answers, and the gateway picks at random per request.
    r, totals = locust(fast, "split", "split", tmp_path, "--split-tolerance", "10",
                       "--split-json", str(report), users=6)
    assert r.returncode == 0, _out(r)
    assert "| split-00001 | 50 |" in r.stdout and "| split-00002 | 50 |" in r.stdout, _out(r)
    assert "split check: PASS" in r.stdout, _out(r)
    data: dict[str, Any] = json.loads(report.read_text())
    assert data["ok"] and data["service"] == "default/split" and data["unrecognized"] == 0
    seen = {row["revision"]: row for row in data["revisions"]}
    assert set(seen) == {"split-00001", "split-00002"}
    assert all(row["answers"] > 0 and row["expected_pct"] == 50 for row in seen.values()), data
    assert data["answers"] == totals["requests"] and totals["failures"] == 0, (data, totals)

    # A split it cannot check (the API does not know the service) fails the run.
    r, _ = locust(fast, "split", "split", tmp_path, "--flint-service", "no-such-service",
                  users=2, seconds=2)
    assert r.returncode == 1, _out(r)
    assert "split check: FAIL" in r.stdout and "no-such-service" in r.stdout, _out(r)


def test_burst_from_zero(fast: Flint, tmp_path: Path) -> None:
    fast.cli("service", "create", "burst", "--image", str(SLEEPY), "--env", "SLEEPY_MS=20")
    poll(lambda: _replicas(fast, "burst-00001") == 0, 30, "burst-00001 to reach zero")
    poll(lambda: fast.get("rev", "burst-00001")["status"].get("actualReplicas") == 0, 15,
         "burst-00001's status to say zero replicas")
    report = tmp_path / "burst.json"
    r, totals = locust(fast, "burst", "burst", tmp_path, "--burst-json", str(report), users=20)
    assert r.returncode == 0, _out(r)
    assert "| users that got an answer | 20 |" in r.stdout, _out(r)
    data: dict[str, Any] = json.loads(report.read_text())
    assert data["replicas_at_start"] == 0, data
    assert data["users"] == data["users_answered"] == 20, data
    assert data["failed"] == 0 and data["problems"] == [] and totals["failures"] == 0, (data, totals)
    assert 0 < data["time_to_first_success_s"] <= data["time_to_every_user_s"] < RUN_S, data
    assert data["successes"] == totals["requests"] > 0, (data, totals)
