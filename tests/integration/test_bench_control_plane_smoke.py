"""`python -m loadtests.bench_control_plane` at a small N produces its report (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_control_plane_benchmark_reports_every_part(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_control_plane", "--services", "200",
         "--changes", "5", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "control plane at 200 services: 200 routes" in run.stdout
    assert "one change → every worker (2 workers, 5 changes)" in run.stdout
    report = json.loads(out.read_text())
    assert report["routes"] == 200 and report["revisions"] == 240 and report["changes"] == 5
    for key in ("build_ms", "decode_apply_cpu_ms", "bytes_per_route", "change_p99_ms",
                "worker_cpu_ms_per_change", "gateway_rss_mib"):
        assert isinstance(report[key], float) and report[key] >= 0, key
