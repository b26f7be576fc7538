"""The gateway as real processes on loopback: link to a fake controller, workers, admin port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from support.harness import free_port, serving

from flint_common.delta import diff
from flint_common.secret import load_or_create_token
from flint_common.snapshot import Endpoint, RevisionTarget, RouteEntry, Snapshot, TagTarget, TrafficSplit
from flint_common.wire import LINK_PATH, NOT_LEADER, DeltaMessage
from gateway.config import GatewaySettings
from gateway.link import ControllerLink
from gateway.router import RouteMiss, Router
from gateway.snapshot_journal import SnapshotJournal, load_snapshot_file

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 20.0
SERVING = re.compile(
    rb"gateway: serving on ([\d.]+):(\d+)(?:, \S+)* with (\d+) workers \(admin [\d.]+:(\d+)\)"
)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], object], what: str, deadline_s: float = DEADLINE_S
) -> object:
    """Poll `check` (sync or async) until it returns something truthy, or fail at the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    delay = 0.01
    last: object = None
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            last = result
            if result:
                return result
        except (aiohttp.ClientError, OSError, AssertionError) as exc:
            last = exc
        if loop.time() > end:
            pytest.fail(f"timed out waiting for {what}; last: {last!r}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


def snapshot(version: int, upstream_port: int, hosts: tuple[str, ...]) -> Snapshot:
    return Snapshot(
        version=version,
        routes=(
            RouteEntry(
                namespace="default",
                name="hello",
                hosts=hosts,
                traffic=(TrafficSplit("hello-00001", 100),),
                tags=(),
            ),
        ),
        revisions=(
            RevisionTarget(
                namespace="default",
                name="hello-00001",
                service="hello",
                timeout_s=30.0,
                response_start_timeout_s=0.0,
                idle_timeout_s=0.0,
                container_concurrency=0,
                endpoints=(Endpoint("hello-00001-r1", "127.0.0.1", upstream_port),),
            ),
        ),
    )


@dataclass
class FakeController:
    """The controller's side of the link: sends its snapshot to every worker, records acks."""

    snapshot: Snapshot | None = None
    port: int = 0
    hellos: list[dict[str, object]] = field(default_factory=list)
    acks: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    ups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Other up messages (stats, pokes) per worker."""
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    runner: web.AppRunner | None = None
    closing: bool = False
    standby: bool = False
    """A standby controller: every link is closed with `NOT_LEADER` at once."""
    refused: int = 0
    """Links closed as a standby."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(LINK_PATH, self._link)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        self.closing = False
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        self.closing = True
        for ws in list(self.sockets):
            await ws.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def publish(self, snap: Snapshot) -> None:
        self.snapshot = snap
        for ws in list(self.sockets):
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(orjson.dumps({"type": "snapshot", "snapshot": snap}))

    async def publish_delta(self, snap: Snapshot) -> None:
        """Send `snap` as its delta to the last published snapshot (`DeltaMessage`)."""
        assert self.snapshot is not None
        text = DeltaMessage(diff(self.snapshot, snap)).encode()
        self.snapshot = snap
        for ws in list(self.sockets):
            with contextlib.suppress(ConnectionError):
                await ws.send_str(text)

    async def stand_by(self) -> None:
        """Stop leading: close every link with `NOT_LEADER`, refuse the next ones."""
        self.standby = True
        for ws in list(self.sockets):
            await ws.close(code=NOT_LEADER, message=b"not leader")

    def acked(self, worker: str) -> int:
        """Highest version `worker` acked (0 for none)."""
        return max((int(str(a["version"])) for a in self.acks.get(worker, [])), default=0)

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if self.closing:
            await ws.close()
            return ws
        if self.standby:
            self.refused += 1
            await ws.close(code=NOT_LEADER, message=b"not leader")
            return ws
        hello = orjson.loads((await ws.receive()).data)
        assert hello["type"] == "hello"
        self.hellos.append(hello)
        worker = str(hello["worker"])
        self.sockets.add(ws)
        try:
            if self.snapshot is not None:
                await ws.send_str(
                    orjson.dumps({"type": "snapshot", "snapshot": self.snapshot}).decode()
                )
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    up = orjson.loads(msg.data)
                    if up["type"] == "ack":
                        self.acks.setdefault(worker, []).append(up)
                    else:
                        self.ups.setdefault(worker, []).append(up)
        finally:
            self.sockets.discard(ws)
        return ws


@contextlib.asynccontextmanager
async def upstream_server() -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from upstream {request.path}")

    async with serving(hello) as port:
        yield port


@contextlib.asynccontextmanager
async def controller(snap: Snapshot | None, port: int = 0) -> AsyncIterator[FakeController]:
    c = FakeController(snapshot=snap, port=port)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@dataclass
class Gateway:
    proc: asyncio.subprocess.Process
    port: int
    admin_port: int
    workers: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def get(self, host: str, path: str = "/") -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{self.port}{path}", headers={"Host": host}
        ) as r:
            return r.status, await r.text()

    async def admin(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{self.admin_port}{path}"
        ) as r:
            return r.status, await r.text()

    async def metrics(self) -> dict[str, float]:
        status, text = await self.admin("/metrics")
        assert status == 200
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    async def ready(self) -> bool:
        status, _ = await self.admin("/readyz")
        return status == 200

    async def wait_ready(self) -> None:
        await eventually(self.ready, "/readyz to answer 200")


@contextlib.asynccontextmanager
async def gateway_process(
    state_dir: Path, controller_url: str, workers: int = 2, listen: tuple[str, ...] = (),
    log: list[str] | None = None,
) -> AsyncIterator[Gateway]:
    """`python -m gateway` on free ports (and `--listen` each of `listen`); always killed (with
    its workers) on the way out. With `log`, its stderr (the main process's and the workers'
    log lines) is appended to `log` as it comes, instead of going to the test's stderr."""
    await asyncio.to_thread(load_or_create_token, state_dir / "auth" / "token")  # as flint up does
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway",
        "--port", "0", "--admin-port", "0", "--workers", str(workers),
        "--controller", controller_url, "--state-dir", str(state_dir),
        "--domain", "localhost", "--gateway-id", "gw",
        *[arg for address in listen for arg in ("--listen", address)],
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        stderr=None if log is None else asyncio.subprocess.PIPE,
    )
    reading = None if log is None else asyncio.create_task(_collect_lines(proc, log))
    workers_seen: set[int] = set()
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE_S)
        m = SERVING.search(line)
        assert m, f"unexpected first line {line!r}"
        gw = Gateway(proc, int(m.group(2)), int(m.group(4)), int(m.group(3)))
        assert gw.workers == workers
        workers_seen.update(await child_pids(proc.pid))
        yield gw
    finally:
        if proc.returncode is None:
            workers_seen.update(await child_pids(proc.pid))
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for pid in workers_seen:  # orphans would get SIGTERM from PDEATHSIG; be sure anyway
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if reading is not None:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading


async def _collect_lines(proc: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        lines.append(line.decode(errors="replace"))


def _child_pids(parent: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(b")", 1)[1].split()[1]) == parent:
            out.append(int(entry))
    return out


async def child_pids(parent: int) -> list[int]:
    return await asyncio.to_thread(_child_pids, parent)


def _alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


async def alive(pid: int) -> bool:
    return await asyncio.to_thread(_alive, pid)


async def terminate(gw: Gateway) -> list[int]:
    """SIGTERM the gateway, expect exit 0, and return its former worker pids."""
    workers = await child_pids(gw.pid)
    assert len(workers) == gw.workers
    gw.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(gw.proc.wait(), DEADLINE_S) == 0
    for pid in workers:
        await eventually(functools.partial(_not_alive, pid), f"worker {pid} to exit")
    return workers


async def _not_alive(pid: int) -> bool:
    return not await alive(pid)


# ---------------------------------------------------------------------------------------------
# The link on its own (in this process, against the fake controller)
# ---------------------------------------------------------------------------------------------


async def test_link_hellos_applies_persists_and_acks(tmp_path: Path) -> None:
    async with upstream_server() as up, controller(snapshot(1, up, ("a.default.localhost",))) as c:
        settings = GatewaySettings(controller_url=c.url, state_dir=tmp_path)
        router = Router()
        link = ControllerLink(settings, router, "gw/0")
        task = asyncio.create_task(link.run())
        try:
            await eventually(lambda: c.acked("gw/0") == 1, "ack of version 1")
            assert c.hellos == [{"type": "hello", "worker": "gw/0", "version": 0, "deltas": 1}]
            assert link.connected and link.last_version == 1 and router.version == 1
            assert await asyncio.to_thread(load_snapshot_file, settings.snapshot_path) == c.snapshot
            assert c.acks["gw/0"][-1]["draining"] == {}

            await c.publish(snapshot(2, up, ("b.default.localhost",)))
            await eventually(lambda: c.acked("gw/0") == 2, "ack of version 2")
            # version 2 routes b (and no longer a) to the revision
            rev = router.resolve("b.default.localhost")
            assert isinstance(rev, RevisionTarget) and rev.key == "default/hello-00001", rev
            assert router.resolve("a.default.localhost") == RouteMiss("unknown-host", "a.default.localhost")
            assert await asyncio.to_thread(load_snapshot_file, settings.snapshot_path) == snapshot(
                2, up, ("b.default.localhost",)
            )
            # an older version is not applied (but acked with what is served)
            await c.publish(snapshot(1, up, ("a.default.localhost",)))
            await eventually(lambda: len(c.acks["gw/0"]) >= 3, "third ack")
            assert router.version == 2 and c.acks["gw/0"][-1]["version"] == 2
            assert isinstance(router.resolve("b.default.localhost"), RevisionTarget)
            assert isinstance(router.resolve("a.default.localhost"), RouteMiss)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def acked(c: FakeController, version: int) -> bool:
    return c.acked("gw/0") == version


async def test_link_journals_each_delta_before_its_ack_and_a_new_link_serves_it(
    tmp_path: Path,
) -> None:
    hosts = [(f"h{k}.default.localhost",) for k in range(5)]
    async with upstream_server() as up:
        async with controller(snapshot(1, up, hosts[0])) as c:
            settings = GatewaySettings(controller_url=c.url, state_dir=tmp_path)
            journal = SnapshotJournal(settings.snapshot_path)
            router = Router()
            task = asyncio.create_task(ControllerLink(settings, router, "gw/0").run())
            try:
                await eventually(lambda: c.acked("gw/0") == 1, "ack of version 1")
                full = settings.snapshot_path.read_bytes()
                for version in (2, 3, 4):
                    await c.publish_delta(snapshot(version, up, hosts[version - 1]))
                    await eventually(functools.partial(acked, c, version), f"ack of {version}")
                    # persisted before the ack: nothing waits for a timer
                    assert await asyncio.to_thread(load_snapshot_file, settings.snapshot_path) == (
                        snapshot(version, up, hosts[version - 1]))
                persisted = await asyncio.to_thread(journal.persisted)
                assert (persisted.snapshot_version, persisted.version, persisted.journal_lines) == (
                    1, 4, 3)
                assert settings.snapshot_path.read_bytes() == full  # only the journal grew
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        # controller down: a new link serves the snapshot with the journal replayed
        router = Router()
        link = ControllerLink(settings, router, "gw/0")
        assert await link.load_persisted()
        assert router.version == 4 and router.received == snapshot(4, up, hosts[3])
        assert isinstance(router.resolve(hosts[3][0]), RevisionTarget)


async def test_link_finds_the_leader_among_several_controllers_and_follows_it(tmp_path: Path) -> None:
    async with upstream_server() as up, controller(None) as first, controller(None) as second:
        first.standby = True  # the second leads
        await second.publish(snapshot(1, up, ("a.default.localhost",)))
        settings = GatewaySettings(controller_url=f"{first.url},{second.url}", state_dir=tmp_path)
        router = Router()
        link = ControllerLink(settings, router, "gw/0", rnd=lambda: 0.0)
        task = asyncio.create_task(link.run())
        try:
            await eventually(lambda: second.acked("gw/0") == 1, "the leader's snapshot acked")
            assert first.refused == 1 and first.hellos == []
            # The leadership moves: the old leader closes its links as a standby, the link looks
            # for the new one and serves what it sends; the snapshot was kept meanwhile.
            await first.publish(snapshot(2, up, ("b.default.localhost",)))
            first.standby = False
            await second.stand_by()
            await eventually(lambda: first.acked("gw/0") == 2, "the new leader's snapshot acked")
            assert router.version == 2
            assert isinstance(router.resolve("b.default.localhost"), RevisionTarget)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_link_reports_draining_endpoints_until_they_drain(tmp_path: Path) -> None:
    async with upstream_server() as up, controller(snapshot(1, up, ("a.default.localhost",))) as c:
        settings = GatewaySettings(controller_url=c.url, state_dir=tmp_path)
        router = Router(on_drained=lambda: link.endpoint_drained())
        link = ControllerLink(settings, router, "gw/0", persist=False)
        task = asyncio.create_task(link.run())
        try:
            await eventually(lambda: c.acked("gw/0") == 1, "ack of version 1")
            rev = router.resolve("a.default.localhost")
            assert isinstance(rev, RevisionTarget)
            ep = router.acquire(rev)
            assert ep is not None and ep.id == "hello-00001-r1"

            moved = snapshot(2, up, ("a.default.localhost",))
            rev2 = replace(moved.revisions[0], endpoints=(Endpoint("r2", "127.0.0.1", up),))
            moved = replace(moved, revisions=(rev2,))
            await c.publish(moved)
            await eventually(lambda: c.acked("gw/0") == 2, "ack of version 2")
            assert c.acks["gw/0"][-1]["draining"] == {"hello-00001-r1": 1}

            n = len(c.acks["gw/0"])
            router.release(ep.id)
            await eventually(lambda: len(c.acks["gw/0"]) > n, "ack after draining")
            assert c.acks["gw/0"][-1] == {"type": "ack", "version": 2, "draining": {}}
            assert not settings.snapshot_path.exists()  # persist=False
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_link_serves_persisted_snapshot_and_reconnects(tmp_path: Path) -> None:
    async with upstream_server() as up:
        async with controller(snapshot(3, up, ("a.default.localhost",))) as c:
            port = c.port
            settings = GatewaySettings(controller_url=c.url, state_dir=tmp_path)
            first = Router()
            task = asyncio.create_task(ControllerLink(settings, first, "gw/0").run())
            try:
                await eventually(lambda: c.acked("gw/0") == 3, "ack of version 3")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        # controller down: a new link serves the persisted snapshot and keeps retrying
        router = Router()
        link = ControllerLink(settings, router, "gw/0")
        task = asyncio.create_task(link.run())
        try:
            await eventually(lambda: router.version == 3, "persisted snapshot applied")
            assert not link.connected
            async with controller(snapshot(4, up, ("b.default.localhost",)), port=port) as c2:
                await eventually(lambda: c2.acked("gw/0") == 4, "ack of version 4")
                assert c2.hellos[0]["version"] == 3
                assert link.connected
                # the controller goes away and comes back: the link reconnects by itself
                await c2.stop()
                await eventually(lambda: not link.connected, "link to notice")
                n = len(c2.hellos)
                await c2.start()
                await eventually(lambda: link.connected and len(c2.hellos) > n, "reconnect")
                assert c2.hellos[-1]["version"] == 4
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# ---------------------------------------------------------------------------------------------
# The gateway process
# ---------------------------------------------------------------------------------------------

HOST = "hello.default.localhost"


async def test_gateway_serves_acks_aggregates_and_survives_controller_loss(
    tmp_path: Path,
) -> None:
    async with upstream_server() as up, controller(snapshot(1, up, (HOST,))) as c:
        async with gateway_process(tmp_path / "state", c.url, workers=2) as gw:
            status, _ = await gw.admin("/healthz")
            assert status == 200
            await gw.wait_ready()
            await eventually(lambda: c.acked("gw/0") == 1 and c.acked("gw/1") == 1,
                             "both workers to ack version 1")
            assert sorted(str(h["worker"]) for h in c.hellos) == ["gw/0", "gw/1"]

            for i in range(20):
                assert await gw.get(HOST, f"/p{i}") == (200, f"hello from upstream /p{i}")
            status, _ = await gw.get("nope.default.localhost")
            assert status == 404

            m = await gw.metrics()
            assert m['flint_gateway_requests_total{code="2xx"}'] == 20
            assert m['flint_gateway_requests_total{code="4xx"}'] == 1
            assert m["flint_gateway_workers_up"] == 2
            assert m["flint_gateway_snapshot_version"] == 1
            assert m["flint_gateway_link_connected_workers"] == 2

            # a new version reaches both workers
            await c.publish(snapshot(2, up, (HOST, "hi.default.localhost")))
            await eventually(lambda: c.acked("gw/0") == 2 and c.acked("gw/1") == 2,
                             "both workers to ack version 2")
            for _ in range(4):
                assert (await gw.get("hi.default.localhost"))[0] == 200

            # the controller goes away: the data plane keeps serving, and stays ready
            await c.stop()
            await eventually(
                lambda: _metric(gw, "flint_gateway_link_connected_workers", 0.0),
                "workers to notice the controller is gone",
            )
            for _ in range(4):
                assert (await gw.get(HOST))[0] == 200
            assert await gw.ready()

            sockets = tmp_path / "state" / "gateway"
            assert sorted(p.name for p in sockets.glob("*.sock")) == [
                "worker-0.proxy.sock", "worker-0.sock", "worker-1.proxy.sock", "worker-1.sock"
            ]
            await terminate(gw)
        assert not list(sockets.glob("*.sock"))  # removed on the way out


async def _metric(gw: Gateway, name: str, value: float) -> bool:
    return (await gw.metrics()).get(name) == value


async def test_restarted_gateway_serves_persisted_snapshot_without_controller(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    async with upstream_server() as up:
        async with controller(snapshot(5, up, (HOST,))) as c:
            port = c.port
            async with gateway_process(state, c.url) as gw:
                await gw.wait_ready()
                await eventually(lambda: c.acked("gw/0") == 5 and c.acked("gw/1") == 5, "acks")
                await terminate(gw)
        persisted = await asyncio.to_thread(load_snapshot_file, state / "gateway" / "snapshot.json")
        assert persisted == snapshot(5, up, (HOST,))

        # controller down; a fresh gateway serves the persisted snapshot
        url = f"http://127.0.0.1:{port}"
        async with gateway_process(state, url) as gw:
            await gw.wait_ready()
            assert (await gw.get(HOST))[0] == 200
            m = await gw.metrics()
            assert m["flint_gateway_snapshot_version"] == 5
            assert m["flint_gateway_link_connected_workers"] == 0

            # the controller comes back with a newer version: applied and acked by both
            async with controller(snapshot(6, up, ("new.default.localhost",)), port=port) as c2:
                await eventually(lambda: c2.acked("gw/0") == 6 and c2.acked("gw/1") == 6,
                                 "both workers to ack version 6")
                assert sorted(int(str(h["version"])) for h in c2.hellos) == [5, 5]
                assert (await gw.get("new.default.localhost"))[0] == 200
                assert (await gw.get(HOST))[0] == 404
                await terminate(gw)


async def test_dead_worker_is_restarted(tmp_path: Path) -> None:
    async with (
        upstream_server() as up,
        controller(snapshot(1, up, (HOST,))) as c,
        gateway_process(tmp_path / "state", c.url) as gw,
    ):
        await gw.wait_ready()
        victim, other = sorted(await child_pids(gw.pid))
        os.kill(victim, signal.SIGKILL)
        await eventually(
            lambda: _metric(gw, "flint_gateway_worker_restarts_total", 1.0), "a restart"
        )
        await gw.wait_ready()
        pids = await child_pids(gw.pid)
        assert other in pids and victim not in pids and len(pids) == 2
        for _ in range(4):
            assert (await gw.get(HOST))[0] == 200
        await terminate(gw)


async def test_workers_die_with_the_main_process(tmp_path: Path) -> None:
    async with (
        upstream_server() as up,
        controller(snapshot(1, up, (HOST,))) as c,
        gateway_process(tmp_path / "state", c.url) as gw,
    ):
        await gw.wait_ready()
        workers = await child_pids(gw.pid)
        assert len(workers) == 2
        gw.proc.kill()
        await gw.proc.wait()
        for pid in workers:
            await eventually(functools.partial(_not_alive, pid), f"orphan {pid} to exit")


async def test_port_in_use_fails_fast(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        await asyncio.to_thread(load_or_create_token, tmp_path / "auth" / "token")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "--port", str(port), "--admin-port", "0",
            "--state-dir", str(tmp_path), "--controller", "http://127.0.0.1:9",
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), DEADLINE_S)
            assert proc.returncode == 1
            assert b"listen_failed" in err
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


# ---------------------------------------------------------------------------------------------
# Activator, stats and exact limits across workers (issue 3)
# ---------------------------------------------------------------------------------------------


def limited_snapshot(version: int, port: int | None, cc: int = 1) -> Snapshot:
    base = snapshot(version, port or 9, (HOST,))
    rev = replace(
        base.revisions[0],
        container_concurrency=cc,
        endpoints=() if port is None else base.revisions[0].endpoints,
    )
    return replace(base, revisions=(rev,))


@contextlib.asynccontextmanager
async def overlap_server() -> AsyncIterator[tuple[int, dict[str, int]]]:
    """An app answering 500 whenever it sees two requests at once."""
    state = {"active": 0, "overlaps": 0, "served": 0}

    async def handle(request: web.Request) -> web.Response:
        state["active"] += 1
        try:
            if state["active"] > 1:
                state["overlaps"] += 1
                return web.Response(status=500, text="overlap")
            await asyncio.sleep(0.002)
            state["served"] += 1
            return web.Response(text="ok")
        finally:
            state["active"] -= 1

    async with serving(handle) as port:
        yield port, state


async def test_two_workers_enforce_container_concurrency_1_exactly(tmp_path: Path) -> None:
    async with (
        overlap_server() as (port, state),
        controller(limited_snapshot(1, port)) as c,
        gateway_process(tmp_path / "state", c.url, workers=2) as gw,
    ):
        await gw.wait_ready()
        await eventually(lambda: c.acked("gw/0") == 1 and c.acked("gw/1") == 1, "acks")
        codes: list[int] = []

        async def client() -> None:
            # a fresh connection per request, so that both workers receive requests
            for _ in range(60):
                async with aiohttp.ClientSession() as s, s.get(
                    f"http://127.0.0.1:{gw.port}/x", headers={"Host": HOST},
                    timeout=aiohttp.ClientTimeout(total=DEADLINE_S),
                ) as r:
                    await r.read()
                    codes.append(r.status)

        await asyncio.gather(*(client() for _ in range(5)))  # bounded: 300 requests
        assert len(codes) == 300 and all(code == 200 for code in codes), sorted(set(codes))
        assert state["overlaps"] == 0 and state["served"] == len(codes)
        m = await gw.metrics()
        # both workers answered clients; only the home worker forwarded to the replica
        assert m['flint_gateway_requests_total{code="2xx"}'] == len(codes)
        assert 0 < m["flint_gateway_home_forwards_total"] < len(codes)  # both workers took some
        assert (
            m['flint_gateway_routed_requests_total{code="2xx",revision="default/hello-00001",'
              'route="default/hello"}'] == len(codes)
        )
        # stats come from the home worker only
        await eventually(
            lambda: any(u["type"] == "stats" for ups in c.ups.values() for u in ups), "stats"
        )
        reporting = {
            w for w, ups in c.ups.items()
            for u in ups
            if u["type"] == "stats" and "default/hello-00001" in u["revisions"]
        }
        assert len(reporting) == 1
        total = sum(
            int(u["revisions"]["default/hello-00001"]["requests"])
            for ups in c.ups.values() for u in ups if u["type"] == "stats"
            and "default/hello-00001" in u["revisions"]
        )
        assert total <= len(codes)
        await terminate(gw)


async def test_scale_from_zero_pokes_reports_stats_and_answers(tmp_path: Path) -> None:
    async with (
        upstream_server() as up,
        controller(limited_snapshot(1, None, cc=0)) as c,
        gateway_process(tmp_path / "state", c.url, workers=1) as gw,
    ):
        await gw.wait_ready()
        await eventually(lambda: c.acked("gw/0") == 1, "ack")
        await eventually(lambda: len(c.sockets) == 1, "the link")
        reqs = [asyncio.create_task(gw.get(HOST, f"/z{i}")) for i in range(3)]
        await eventually(
            lambda: [u for u in c.ups.get("gw/0", []) if u["type"] == "poke"], "a poke"
        )
        await eventually(
            lambda: [
                u for u in c.ups.get("gw/0", [])
                if u["type"] == "stats"
                and u["revisions"].get("default/hello-00001", {}).get("concurrency", 0) >= 2.5
            ],
            "a stats bucket with the 3 queued requests",
        )
        depth = 'flint_gateway_queue_depth_requests{revision="default/hello-00001"}'
        await eventually(lambda: _metric(gw, depth, 3.0), "the queue depth gauge at 3")
        pokes = [u for u in c.ups["gw/0"] if u["type"] == "poke"]
        assert pokes[0] == {"type": "poke", "revision": "default/hello-00001", "waiting": 1}
        assert len(pokes) == 1  # one per revision, not one per request
        await c.publish(snapshot(2, up, (HOST,)))
        results = await asyncio.gather(*reqs)
        assert [r[0] for r in results] == [200, 200, 200]
        m = await gw.metrics()
        assert m['flint_gateway_cold_starts_total{revision="default/hello-00001"}'] == 3
        assert m.get(depth, 0) == 0  # an empty queue is no longer reported
        assert m['flint_gateway_cold_start_wait_seconds_count{revision="default/hello-00001"}'] == 3
        # idle afterwards: zeros are still reported
        await eventually(
            lambda: [
                u for u in c.ups["gw/0"][-2:]
                if u["type"] == "stats"
                and u["revisions"].get("default/hello-00001") == {"concurrency": 0.0, "requests": 0}
            ],
            "a zero stats bucket",
        )
        await terminate(gw)


async def test_two_workers_write_a_brokers_log_from_one_home_worker(tmp_path: Path) -> None:
    """Events reach a broker through both workers; only its home worker writes the log, once each."""
    from flint_common.channellog.format import CHANNEL
    from flint_common.channellog.sqlite_reader import SqliteLogReader
    from flint_common.cloudevents.codec import Event
    from flint_common.snapshot import BrokerEntry

    entry = BrokerEntry("default", "b", "uid-b", "eventing/logs/uid-b.db")
    snap = dataclasses.replace(snapshot(1, 1, ("unused.default.localhost",)), brokers=(entry,))
    async with (
        controller(snap) as c,
        gateway_process(tmp_path / "state", c.url, workers=2) as gw,
    ):
        await gw.wait_ready()
        await eventually(lambda: c.acked("gw/0") == 1 and c.acked("gw/1") == 1, "acks")
        codes: list[int] = []
        for i in range(40):  # a fresh connection each: both workers take some
            async with aiohttp.ClientSession() as s, s.post(
                f"http://127.0.0.1:{gw.port}/default/b", data=b'{"n": 1}',
                headers={"Host": "broker-ingress.localhost", "ce-specversion": "1.0", "ce-id": f"e-{i}",
                         "ce-source": "/t", "ce-type": "t", "Content-Type": "application/json"},
            ) as r:
                codes.append(r.status)
        assert codes == [202] * 40
        base = {"Host": "broker-ingress.localhost", "ce-specversion": "1.0", "ce-source": "/t",
                "ce-type": "t"}
        async with aiohttp.ClientSession() as s:
            # An event without data is stored once; a client that waits for 100 Continue gets it.
            async with s.post(f"http://127.0.0.1:{gw.port}/default/b", data=b"",
                              headers={**base, "ce-id": "empty"}) as r:
                assert r.status == 202
            async with s.post(f"http://127.0.0.1:{gw.port}/default/b", data=b'{"n": 2}', expect100=True,
                              headers={**base, "ce-id": "expect", "Content-Type": "application/json"},
                              timeout=aiohttp.ClientTimeout(total=5)) as r:
                assert r.status == 202
        m = await gw.metrics()
        assert 0 < m["flint_gateway_home_forwards_total"] < 42
        assert m['flint_gateway_broker_events_total{broker="default/b",outcome="accepted",reason=""}'] == 42
        reader = SqliteLogReader(tmp_path / "state" / entry.log)
        try:
            records = await reader.read(CHANNEL, 0, 100)
        finally:
            await reader.close()
        ids = sorted(Event.from_log(raw).id for _, raw in records)
        assert ids == sorted([*(f"e-{i}" for i in range(40)), "empty", "expect"])
        await terminate(gw)


# ---------------------------------------------------------------------------------------------
# Cluster-local routes: the worker that accepted the client decides, before any forwarding
# ---------------------------------------------------------------------------------------------


def visibility_snapshot(version: int, port: int) -> Snapshot:
    """`internal` (cluster-local) and `hello`, both limited: requests go to their home worker."""
    base = limited_snapshot(version, port, cc=100)
    hello_rev = base.revisions[0]
    internal_rev = replace(hello_rev, name="internal-00001", service="internal",
                           endpoints=(Endpoint("internal-00001-r1", "127.0.0.1", port),))
    internal = RouteEntry(
        namespace="default", name="internal", hosts=("internal.default.localhost",),
        traffic=(TrafficSplit("internal-00001", 100),),
        tags=(TagTarget("canary", "internal-00001", ("canary-internal.default.localhost",)),),
        cluster_local=True,
    )
    return replace(base, routes=(*base.routes, internal), revisions=(hello_rev, internal_rev))


async def test_two_workers_serve_cluster_local_routes_on_loopback_only(tmp_path: Path) -> None:
    public_port = await asyncio.to_thread(free_port)
    async with (
        upstream_server() as up,
        controller(visibility_snapshot(1, up)) as c,
        gateway_process(tmp_path / "state", c.url, workers=2,
                        listen=(f"127.0.0.2:{public_port}",)) as gw,
    ):
        await gw.wait_ready()
        await eventually(lambda: c.acked("gw/0") == 1 and c.acked("gw/1") == 1, "acks")

        async def statuses(address: str, host: str) -> set[int]:
            out = set()
            for _ in range(16):  # a fresh connection each: both workers take some
                async with aiohttp.ClientSession() as s, s.get(
                    f"http://{address}/v", headers={"Host": host},
                    timeout=aiohttp.ClientTimeout(total=DEADLINE_S),
                ) as r:
                    out.add(r.status)
                    if r.status == 404:
                        assert await r.text() == f"no route for host {host!r}\n"
            return out

        loopback, public = f"127.0.0.1:{gw.port}", f"127.0.0.2:{public_port}"
        hidden = ("internal.default.localhost", "canary-internal.default.localhost")
        for host in hidden:
            assert await statuses(loopback, host) == {200}, host
        assert await statuses(loopback, HOST) == {200}
        assert await statuses(public, HOST) == {200}
        forwards = (await gw.metrics())["flint_gateway_home_forwards_total"]
        assert forwards > 0  # both workers answered: half of it through the home worker
        for host in hidden:
            assert await statuses(public, host) == {404}, host
        # Refused where the client came in: nothing went to a home worker.
        assert (await gw.metrics())["flint_gateway_home_forwards_total"] == forwards
        await terminate(gw)

