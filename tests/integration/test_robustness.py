"""Review probes: behaviour the issue asks for, checked against real processes on loopback.

Each test starts its own `flint up` (no ordering between tests) and checks /proc, not only the
replica records, for processes left behind."""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from support.harness import (
    APPS,
    BIN,
    Flint,
    fetch,
    pid_alive,
    poll,
    procs_mentioning,
    start_flint,
    stop_flint,
)

from flint_common import procinfo

ECHO = str(APPS / "echo")


def _replica_pids(state_dir: Path) -> dict[int, str]:
    """Replica process groups (their HOME is in the state dir's sandbox), found in the process
    table: pgid → revision (a Procfile replica is `sh -c` plus its child, one group)."""
    out: dict[int, str] = {}
    sandbox = f"{state_dir}/sandbox/"
    for pid, seen in procinfo.with_env("K_REVISION").items():
        pgid = procinfo.pgid(pid)
        if seen.environ.get("HOME", "").startswith(sandbox) and pgid is not None:
            out[pgid] = seen.environ["K_REVISION"]
    return out


@pytest.fixture
def own_flint(tmp_path: Path) -> Iterator[Flint]:
    f = start_flint(tmp_path)
    try:
        yield f
    finally:
        stop_flint(f)
        poll(lambda: not procs_mentioning(str(f.state_dir)), 15, "no process left behind")


class LoadProber:
    """`clients` concurrent keep-alive clients, a third of them on slow (0.5 s) requests."""

    def __init__(self, port: int, host: str, clients: int = 24) -> None:
        self.port, self.host, self.clients = port, host, clients
        self.seen: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as s:

            async def client(i: int) -> None:
                path = "/?delay=0.5" if i % 3 == 0 else "/"
                while not self._stop.is_set():
                    try:
                        async with s.get(f"http://127.0.0.1:{self.port}{path}",
                                         headers={"Host": self.host},
                                         timeout=aiohttp.ClientTimeout(total=15)) as r:
                            body = await r.read()
                            key = (json.loads(body)["revision"] if r.status == 200
                                   else f"status {r.status} {body[:120]!r}")
                    except Exception as exc:
                        key = f"error {exc!r}"
                    self.seen[key] += 1

            await asyncio.gather(*(client(i) for i in range(self.clients)))

    def failures(self) -> dict[str, int]:
        return {k: v for k, v in self.seen.items() if k.startswith(("status", "error"))}

    def __enter__(self) -> LoadProber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def _revision_serves(f: Flint, host: str, rev: str) -> bool:
    _, _, body = asyncio.run(fetch(f.port, host))
    return bool(json.loads(body)["revision"] == rev)


def test_rollouts_under_concurrent_load_fail_no_request(own_flint: Flint) -> None:
    f = own_flint
    f.cli("service", "create", "load", "--image", ECHO, "--env", "TARGET=1")
    host = f.host("load")
    with LoadProber(f.port, host) as prober:
        for n in (2, 3, 4):
            f.cli("service", "update", "load", "--env", f"TARGET={n}")
            poll(functools.partial(_revision_serves, f, host, f"load-{n:05d}"), 30, f"load-{n:05d}")
        poll(lambda: set(_replica_pids(f.state_dir).values()) == {"load-00004"}, 40,
             "only load-00004's replica to run")
    assert prober.seen["load-00004"] > 0
    assert not prober.failures(), dict(prober.seen)


def test_sigkill_controller_readopts_without_duplicate_processes(own_flint: Flint) -> None:
    f = own_flint
    f.cli("service", "create", "adopt", "--image", ECHO)
    before = _replica_pids(f.state_dir)
    assert list(before.values()) == ["adopt-00001"]
    for _ in range(3):
        pid = int((f.state_dir / "controller.pid").read_text())
        with LoadProber(f.port, f.host("adopt"), clients=8) as prober:
            os.kill(pid, signal.SIGKILL)

            def readopted(pid: int = pid) -> bool:
                return int((f.state_dir / "controller.pid").read_text()) != pid and f.cli(
                    "service", "wait", "adopt", "--wait-timeout", "5", check=False
                ).returncode == 0

            poll(readopted, 60, "a new controller")
        assert not prober.failures(), dict(prober.seen)
        assert _replica_pids(f.state_dir) == before  # same processes, none started


def test_restarted_gateway_serves_its_snapshot_while_the_controller_is_down(
    own_flint: Flint,
) -> None:
    f = own_flint
    f.cli("service", "create", "snap", "--image", ECHO)
    controller = int((f.state_dir / "controller.pid").read_text())
    gateways = {p: c for p, c in procs_mentioning(str(f.state_dir)).items()
                if "-m gateway" in c and "--parent-pid" not in c}
    assert len(gateways) == 1, gateways
    gw = next(iter(gateways))
    os.kill(controller, signal.SIGSTOP)  # down, from the gateway's point of view
    try:
        os.killpg(os.getpgid(gw), signal.SIGKILL)  # the gateway main and its workers
        poll(lambda: not pid_alive(gw), 10, "the gateway to die")

        def serves() -> bool:
            status, _, body = asyncio.run(fetch(f.port, f.host("snap"), deadline_s=3))
            return status == 200 and json.loads(body)["revision"] == "snap-00001"

        poll(serves, 30, "the restarted gateway to serve from its persisted snapshot")
        for _ in range(50):
            assert serves()
    finally:
        os.kill(controller, signal.SIGCONT)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_flint_up_stop_leaves_no_process(tmp_path: Path, how: signal.Signals) -> None:
    f = start_flint(tmp_path)
    try:
        f.cli("service", "create", "bye", "--image", ECHO)
        f.cli("service", "create", "bye2", "--image", ECHO)
        assert len(_replica_pids(f.state_dir)) == 2
        f.proc.send_signal(how)
        f.proc.wait(timeout=40)
        poll(lambda: not procs_mentioning(str(f.state_dir)), 30,
             f"every process of flint up to be gone after {how.name}")
    finally:
        if f.proc.poll() is None:
            stop_flint(f)
        for pid in procs_mentioning(str(f.state_dir)):
            os.kill(pid, signal.SIGKILL)


def test_snapshot_of_a_folder_holding_the_state_dir_does_not_copy_the_store(tmp_path: Path) -> None:
    """`cd ~ && flint service create x --image .` with the default state dir under ~."""
    app = tmp_path / "app"
    app.mkdir()
    for p in (APPS / "echo").iterdir():
        (app / p.name).write_bytes(p.read_bytes())
    (app / ".flint").mkdir()
    f = start_flint(app / ".flint")  # the state dir lives inside the image folder
    try:
        f.cli("service", "create", "inside", "--image", str(app), "--no-wait")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # The folder's own files (.flint/flint-up.log) may be copied; the state dir may not.
            nested = [d for d, _, _ in os.walk(f.state_dir / "artifacts") if d.endswith("/.flint/state")]
            assert not nested, f"the artifact store is copying itself: {nested[0][:300]}..."
            rev = json.loads(f.cli("get", "rev", "inside-00001", "-o", "json", check=False).stdout
                             or "{}")
            if any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in rev.get("status", {}).get("conditions", [])):
                return
            time.sleep(0.2)
        raise AssertionError("inside-00001 never became Ready")
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(app)], check=False)
        stop_flint(f)


_ = BIN


def test_a_colliding_tag_does_not_take_the_routes_default_host_offline(own_flint: Flint) -> None:
    """Adding tag `blue` to `hello` while a route `blue-hello` exists must not 404 `hello`."""
    f = own_flint
    f.cli("service", "create", "blue-hello", "--image", ECHO)
    f.cli("service", "create", "hello", "--image", ECHO)
    assert asyncio.run(fetch(f.port, f.host("hello")))[0] == 200
    f.cli("service", "update", "hello", "--tag", "hello-00001=blue", check=False)
    poll(lambda: any(c["type"] == "IngressReady" and c.get("reason") == "HostConflict"
                     for c in f.get("route", "hello")["status"]["conditions"]),
         20, "the HostConflict condition")
    codes = collections.Counter(asyncio.run(fetch(f.port, f.host("hello")))[0] for _ in range(20))
    assert codes == {200: 20}, codes
