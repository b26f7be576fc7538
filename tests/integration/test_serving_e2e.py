"""End to end on the embedded engine: `flint up`, the CLI, real replicas and real HTTP on loopback."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
from pathlib import Path

import yaml
from support.harness import APPS, Flint, Prober, fetch, pid_alive, poll

ECHO = str(APPS / "echo")


def _revision_of(body: bytes) -> str:
    return str(json.loads(body)["revision"])


def _ready(obj: dict) -> bool:  # type: ignore[type-arg]
    conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
    return bool(conds.get("Ready", {}).get("status") == "True")


def test_create_answers_at_once_with_the_runtime_contract(flint: Flint) -> None:
    out = flint.cli("service", "create", "echo", "--image", ECHO, "--env", "TARGET=one")
    assert f"http://echo.default.localhost:{flint.port}" in out.stdout
    status, _, body = asyncio.run(
        fetch(flint.port, flint.host("echo"), "/hi?x=1", headers={"X-User": "kept"})
    )
    assert status == 200, body
    data = json.loads(body)
    assert data["revision"] == "echo-00001"
    assert data["service"] == "echo" and data["configuration"] == "echo"
    assert data["env"]["TARGET"] == "one"
    assert data["path"] == "/hi?x=1"
    assert ".venv" not in data["env"]["PATH"]
    assert data["env"]["HOME"].startswith(str(flint.state_dir))
    assert data["env"]["TMPDIR"].startswith(str(flint.state_dir))
    got = {k.lower(): v for k, v in data["headers"]}
    assert got["host"] == flint.host("echo")
    assert got["x-user"] == "kept"
    assert got["x-forwarded-for"] == "127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == flint.host("echo")
    assert "for=" in got["forwarded"] and "proto=http" in got["forwarded"]
    assert len(got["traceparent"].split("-")) == 4
    # A traceparent from the client passes through unchanged.
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    _, _, body = asyncio.run(fetch(flint.port, flint.host("echo"), headers={"traceparent": tp}))
    assert dict((k.lower(), v) for k, v in json.loads(body)["headers"])["traceparent"] == tp


def test_get_prints_a_knative_shaped_service(flint: Flint) -> None:
    svc = yaml.safe_load(flint.cli("get", "ksvc", "echo", "-o", "yaml").stdout)
    assert svc["apiVersion"] == "serving.knative.dev/v1" and svc["kind"] == "Service"
    st = svc["status"]
    assert st["url"] == f"http://echo.default.localhost:{flint.port}"
    assert st["latestCreatedRevisionName"] == st["latestReadyRevisionName"] == "echo-00001"
    assert st["observedGeneration"] == svc["metadata"]["generation"]
    assert {c["type"] for c in st["conditions"]} >= {"Ready", "ConfigurationsReady", "RoutesReady"}
    assert st["traffic"] == [{"latestRevision": True, "percent": 100, "revisionName": "echo-00001"}]
    rev = flint.get("rev", "echo-00001")
    assert rev["status"]["containerStatuses"][0]["imageDigest"].startswith("sha256:")
    assert {c["type"] for c in rev["status"]["conditions"]} >= {
        "Ready", "ResourcesAvailable", "ContainerHealthy"}


def test_update_rolls_out_with_zero_failed_requests(flint: Flint) -> None:
    with Prober(flint.port, flint.host("echo")) as prober:
        flint.cli("service", "update", "echo", "--env", "TARGET=two")

        def new_revision_serves() -> bool:
            _, _, body = asyncio.run(fetch(flint.port, flint.host("echo")))
            return _revision_of(body) == "echo-00002"

        poll(new_revision_serves, 30, "echo-00002 to serve")
        # The old replica is drained and stopped once no gateway routes to it.
        poll(lambda: {r["revision_key"] for r in flint.replica_records()} == {"default/echo-00002"},
             30, "the old replica to stop")
        assert new_revision_serves()
    assert not prober.failures(), prober.seen
    assert prober.seen["echo-00002"] > 0


async def _count(port: int, host: str, n: int, headers: dict[str, str] | None = None,
                 concurrency: int = 16) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    import aiohttp

    async with aiohttp.ClientSession() as s:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem, s.get(f"http://127.0.0.1:{port}/",
                                  headers={"Host": host, **(headers or {})}) as r:
                counts[_revision_of(await r.read()) if r.status == 200 else str(r.status)] += 1

        await asyncio.gather(*(one() for _ in range(n)))
    return counts


def test_split_and_tags(flint: Flint) -> None:
    flint.cli("service", "update", "echo", "--traffic", "echo-00001=50",
              "--traffic", "echo-00002=50", "--tag", "echo-00001=blue",
              "--tag", "echo-00002=green")
    svc = flint.get("ksvc", "echo")
    urls = {t.get("tag"): t.get("url") for t in svc["status"]["traffic"]}
    assert urls["blue"] == f"http://blue-echo.default.localhost:{flint.port}"
    counts = asyncio.run(_count(flint.port, flint.host("echo"), 2000))
    assert set(counts) == {"echo-00001", "echo-00002"}, counts
    assert 900 <= counts["echo-00001"] <= 1100, counts
    blue = asyncio.run(_count(flint.port, "blue-echo.default.localhost", 200))
    green = asyncio.run(_count(flint.port, "green-echo.default.localhost", 200))
    assert blue == {"echo-00001": 200} and green == {"echo-00002": 200}
    by_header = asyncio.run(_count(flint.port, flint.host("echo"), 200,
                                   {"Knative-Serving-Tag": "green"}))
    assert by_header == {"echo-00002": 200}
    unknown = asyncio.run(_count(flint.port, flint.host("echo"), 200,
                                 {"Knative-Serving-Tag": "nope"}))
    assert set(unknown) == {"echo-00001", "echo-00002"}


def test_unknown_host_is_404_naming_it(flint: Flint) -> None:
    status, _, body = asyncio.run(fetch(flint.port, "nope.default.localhost"))
    assert status == 404 and b"nope.default.localhost" in body


def test_slow_first_byte_is_504(flint: Flint) -> None:
    manifest = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "slow"},
        "spec": {"template": {"spec": {
            "timeoutSeconds": 1,
            "containers": [{"image": ECHO}],
        }}},
    }
    flint.cli("apply", "-f", "-", input=yaml.safe_dump(manifest))
    flint.cli("service", "wait", "slow")
    status, _, _ = asyncio.run(fetch(flint.port, flint.host("slow"), "/?delay=0"))
    assert status == 200
    status, _, body = asyncio.run(fetch(flint.port, flint.host("slow"), "/?delay=3"))
    assert status == 504, body


def test_invalid_manifests_are_refused_with_the_field_path(flint: Flint) -> None:
    bad = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "bad"},
        "spec": {"template": {"spec": {"containers": [{"image": ECHO}]}},
                 "traffic": [{"latestRevision": True, "percent": 90}]},
    }
    out = flint.cli("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert out.returncode != 0
    assert "Traffic targets sum to 90, want 100" in out.stderr and "spec.traffic" in out.stderr
    bad["spec"] = {"template": {"spec": {"containerConcurrency": 5000,
                                         "containers": [{"image": ECHO}]}}}
    out = flint.cli("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert out.returncode != 0 and "spec.template.spec.containerConcurrency" in out.stderr
    unknown = {"apiVersion": "serving.knative.dev/v1", "kind": "Nope", "metadata": {"name": "x"}}
    out = flint.cli("apply", "-f", "-", input=yaml.safe_dump(unknown), check=False)
    assert out.returncode != 0 and "Nope" in out.stderr


def test_registry_image_gets_a_message(flint: Flint) -> None:
    out = flint.cli("service", "create", "reg", "--image", "nginx:1.25", check=False)
    assert out.returncode != 0
    rev = flint.get("rev", "reg-00001")
    ready = next(c for c in rev["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and "local director" in ready["message"]
    flint.cli("service", "delete", "reg")


def test_controller_killed_gateway_keeps_serving_and_replicas_are_readopted(flint: Flint) -> None:
    before = {r["id"]: r["pid"] for r in flint.replica_records()}
    assert before
    pid = int((flint.state_dir / "controller.pid").read_text())
    with Prober(flint.port, flint.host("echo")) as prober:
        os.kill(pid, signal.SIGKILL)
        poll(lambda: not pid_alive(pid), 10, "the controller to die")

        def restarted() -> bool:
            new = int((flint.state_dir / "controller.pid").read_text())
            return new != pid and _ready(flint.get("ksvc", "echo"))

        poll(restarted, 60, "the supervisor to restart the controller")
    assert prober.seen and not prober.failures(), prober.seen
    after = {r["id"]: r["pid"] for r in flint.replica_records()}
    assert after == before  # re-adopted: same processes, no duplicates


def test_delete_stops_the_replicas(flint: Flint) -> None:
    pids = [r["pid"] for r in flint.replica_records() if r["revision_key"] == "default/slow-00001"]
    assert pids and all(pid_alive(p) for p in pids)
    flint.cli("service", "delete", "slow")

    def gone() -> bool:
        return flint.cli("get", "rev", "slow-00001", check=False).returncode != 0 and not any(
            pid_alive(p) for p in pids
        )

    poll(gone, 30, "slow's revision and replicas to go")


def test_examples_hello_manifest_applies(flint: Flint) -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "hello" / "service.yaml"
    flint.cli("apply", "-f", str(path))
    flint.cli("service", "wait", "hello")
    status, _, body = asyncio.run(fetch(flint.port, flint.host("hello")))
    assert status == 200 and b"Hello World! (revision hello-00001)" in body
