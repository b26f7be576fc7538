"""Autoscaling end to end with a short test profile: zero and back, exact limits, fail fast, GC."""

from __future__ import annotations

import asyncio
import collections
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from support.harness import APPS, Flint, fetch, poll, start_flint, stop_flint

PROFILE = (
    "--autoscaler", "stable-window=2s",
    "--autoscaler", "scale-to-zero-grace-period=0s",
    "--autoscaler", "tick-interval=0.5s",
    "--gc", "retain-since-create-time=disabled",
    "--gc", "retain-since-last-active-time=disabled",
    "--gc", "min-non-active-revisions=0",
    "--gc", "max-non-active-revisions=1",
)


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flint]:
    f = start_flint(tmp_path_factory.mktemp("autoscale"), *PROFILE)
    try:
        yield f
    finally:
        stop_flint(f)


def _cond(obj: dict, type_: str) -> dict:  # type: ignore[type-arg]
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def _replicas(f: Flint, revision: str) -> int:
    return sum(1 for r in f.replica_records() if r["revision_key"] == f"default/{revision}")


def test_idle_revision_goes_to_zero_and_the_first_request_wakes_it(fast: Flint) -> None:
    fast.cli("service", "create", "sleepy", "--image", str(APPS / "echo"))
    poll(lambda: _replicas(fast, "sleepy-00001") == 0, 30, "the idle revision to reach zero")
    rev = fast.get("rev", "sleepy-00001")
    assert _cond(rev, "Active")["status"] == "False" and _cond(rev, "Active")["reason"] == "NoTraffic"
    assert _cond(rev, "Ready")["status"] == "True"  # at zero and still Ready, as in Knative
    status, _, body = asyncio.run(fetch(fast.port, fast.host("sleepy")))
    assert status == 200, body
    assert _replicas(fast, "sleepy-00001") == 1
    described = fast.cli("describe", "rev", "sleepy-00001").stdout
    assert "Autoscaler:" in described and "Desired scale:" in described and "Mode:" in described
    with urllib.request.urlopen(f"{fast.api}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'flint_controller_desired_replicas{revision="default/sleepy-00001"}' in metrics
    with urllib.request.urlopen(f"http://127.0.0.1:{fast.admin_port}/metrics", timeout=5) as r:
        gateway_metrics = r.read().decode()
    assert 'flint_gateway_cold_starts_total{revision="default/sleepy-00001"}' in gateway_metrics


async def _hammer(
    port: int, host: str, clients: int, requests: int, cap_s: float
) -> collections.Counter[int]:
    """`requests` requests from `clients` concurrent clients; the run stops early (short of
    `requests`) only if `cap_s` seconds pass first, a safety stop."""
    codes: collections.Counter[int] = collections.Counter()
    issued = 0
    end = time.monotonic() + cap_s

    async def client() -> None:
        nonlocal issued
        # A fresh connection per request, so the kernel spreads them over the gateway workers.
        while issued < requests and time.monotonic() < end:
            issued += 1
            async with aiohttp.ClientSession() as s, s.get(
                f"http://127.0.0.1:{port}/", headers={"Host": host},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as r:
                await r.read()
                codes[r.status] += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return codes


@pytest.mark.parametrize("workers", [1, 2])
def test_container_concurrency_one_is_exact(tmp_path: Path, workers: int) -> None:
    f = start_flint(tmp_path, "--workers", str(workers), *PROFILE)
    try:
        f.cli("service", "create", "excl", "--image", str(APPS / "exclusive"),
              "--concurrency-limit", "1", "--annotation", "autoscaling.knative.dev/max-scale=1")
        # 5 clients on one replica that takes 20 ms a request: ~5 s; the cap only stops a hang.
        codes = asyncio.run(_hammer(f.port, f.host("excl"), clients=5, requests=250, cap_s=60))
        assert set(codes) == {200}, codes  # the app answers 500 whenever two requests overlap
        assert sum(codes.values()) == 250, f"only {sum(codes.values())} of 250 requests before the cap"
    finally:
        stop_flint(f)


def test_replica_crashing_while_requests_wait_fails_fast(fast: Flint, tmp_path: Path) -> None:
    marker = tmp_path / "oneshot-lived"
    fast.cli("service", "create", "oneshot", "--image", str(APPS / "oneshot"),
             "--env", f"MARKER={marker}")
    poll(lambda: _replicas(fast, "oneshot-00001") == 0, 30, "oneshot to reach zero")
    # The waiting request would time out (504) only after the revision's 300 s, far past the
    # client's 60 s: a 503 naming the replica's exit is the fail-fast path.
    assert fast.get("rev", "oneshot-00001")["spec"]["timeoutSeconds"] == 300
    status, _, body = asyncio.run(fetch(fast.port, fast.host("oneshot"), deadline_s=60))
    assert status == 503, body
    assert b"cannot serve" in body, body
    assert b"exited before becoming ready" in body or b"exit code 4" in body, body
    fast.cli("service", "delete", "oneshot")


def test_scale_down_with_requests_in_flight_drops_none(fast: Flint) -> None:
    manifest = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "burst"},
        "spec": {"template": {
            "metadata": {"annotations": {
                "autoscaling.knative.dev/target": "1",
                "autoscaling.knative.dev/max-scale": "3",
            }},
            "spec": {"containers": [{"image": str(APPS / "echo")}]},
        }},
    }
    fast.cli("apply", "-f", "-", input=yaml.safe_dump(manifest))
    fast.cli("service", "wait", "burst")

    async def load() -> collections.Counter[int]:
        codes: collections.Counter[int] = collections.Counter()

        async def one(delay: float) -> None:
            status, _, _ = await fetch(fast.port, fast.host("burst"), f"/?delay={delay}", deadline_s=60)
            codes[status] += 1

        # A burst scales up; then long requests stay in flight while the burst ends and the
        # autoscaler scales back down.
        await asyncio.gather(*(one(0.5) for _ in range(24)), *(one(4.0) for _ in range(3)))
        return codes

    peak = 0
    codes: collections.Counter[int] = collections.Counter()

    async def run_and_watch() -> None:
        nonlocal peak, codes
        task = asyncio.ensure_future(load())
        while not task.done():
            peak = max(peak, _replicas(fast, "burst-00001"))
            await asyncio.sleep(0.1)
        codes = await task

    asyncio.run(run_and_watch())
    assert codes == {200: 27}, codes
    assert peak >= 2, "the burst never scaled the revision up"
    poll(lambda: _replicas(fast, "burst-00001") <= 1, 30, "the scale-down")


def test_gc_removes_old_revisions_but_never_a_routed_one(fast: Flint) -> None:
    fast.cli("service", "create", "gc", "--image", str(APPS / "echo"), "--env", "V=1")
    fast.cli("service", "update", "gc", "--env", "V=2")
    # Pin 00001 with a tag: it stays routed whatever its age.
    fast.cli("service", "update", "gc", "--traffic", "@latest=100", "--tag", "gc-00001=old")
    fast.cli("service", "update", "gc", "--env", "V=3")
    fast.cli("service", "update", "gc", "--env", "V=4")

    def names() -> set[str]:
        items = json.loads(fast.cli("get", "rev", "-o", "json").stdout)["items"]
        return {i["metadata"]["name"] for i in items if i["metadata"]["name"].startswith("gc-")}

    # max-non-active-revisions=1: of 00002 and 00003 (not routed, not latest) the older goes.
    poll(lambda: names() == {"gc-00001", "gc-00003", "gc-00004"}, 30, "GC of gc-00002")
    logs = fast.state_dir / "logs" / "default"
    poll(lambda: not (logs / "gc-00002").exists(), 30, "gc-00002's logs to go")
    assert (logs / "gc-00004").exists()


def test_hpa_class_scales_on_cpu(fast: Flint) -> None:
    manifest = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "cpu"},
        "spec": {"template": {
            "metadata": {"annotations": {
                "autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
                "autoscaling.knative.dev/metric": "cpu",
                "autoscaling.knative.dev/target": "20",
                "autoscaling.knative.dev/max-scale": "2",
            }},
            "spec": {"containers": [{"image": str(APPS / "burner")}]},
        }},
    }
    fast.cli("apply", "-f", "-", input=yaml.safe_dump(manifest))
    fast.cli("service", "wait", "cpu")

    async def burn(seconds: float) -> collections.Counter[int]:
        codes: collections.Counter[int] = collections.Counter()
        end = time.monotonic() + seconds

        async def client() -> None:
            while time.monotonic() < end and _replicas(fast, "cpu-00001") < 2:
                status, _, _ = await fetch(fast.port, fast.host("cpu"), "/?ms=100", deadline_s=30)
                codes[status] += 1

        await asyncio.gather(*(client() for _ in range(2)))
        return codes

    codes = asyncio.run(burn(40))  # bounded; ends as soon as the second replica exists
    assert set(codes) == {200}, codes
    assert _replicas(fast, "cpu-00001") == 2, "a replica burning a core never scaled out at 20 %"
    request = urllib.request.Request(f"{fast.api}/internal/autoscaler/default/cpu-00001",
                                     headers=fast.api_headers())
    view = json.loads(urllib.request.urlopen(request).read())
    assert view["class"] == "hpa.autoscaling.knative.dev" and view["metric"] == "cpu"
    fast.cli("service", "delete", "cpu")
