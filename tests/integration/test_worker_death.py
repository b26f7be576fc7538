"""A gateway worker SIGKILLed under load refuses no connection (issue 10 §3).

The main process owns each worker slot's listening sockets, so the kernel queues that slot's
connections while its worker is dead and the next incarnation accepts them. A prober opening a
new connection per request runs through the kill; only requests in flight on the dead worker
may fail, every later one succeeds, and the restarted worker (a new pid) serves.

The flip side, with more than one worker: a worker in a crash loop has its slot's TCP listeners
closed between its deaths, so that slot's share of new connections goes to the live workers
instead of waiting in a queue no one accepts from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from integration.test_gateway_process import (
    DEADLINE_S,
    HOST,
    Gateway,
    alive,
    controller,
    eventually,
    gateway_process,
    limited_snapshot,
    snapshot,
    terminate,
    upstream_server,
)
from support.harness import serving

from flint_common.snapshot import BrokerEntry, Snapshot
from gateway.admin import WorkerClient, worker_socket_path
from gateway.home import home_index
from gateway.ingress import home_key

CLIENTS = 4
"""The prober's concurrency: at most this many requests are in flight when the worker dies."""
AFTER_RESPAWN = 20
"""Requests that must succeed once the new incarnation is up."""
BROKER = BrokerEntry("default", "b", "uid-b", "eventing/logs/uid-b.db")
REVISION = "default/hello-00001"


@dataclass(frozen=True)
class Outcome:
    started: float
    """Loop time at which the request's connect began."""
    result: str
    """`ok`, `connect failed: ...`, `dropped: ...` (accepted, then closed without an answer),
    `status N` or `timeout`."""


@dataclass
class NewConnectionProber:
    """`CLIENTS` clients sending `request` on a new connection each (`Connection: close`)."""

    port: int
    request: bytes
    ok_status: int
    outcomes: list[Outcome] = field(default_factory=list)
    stopping: bool = False

    async def run(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(CLIENTS)))

    async def _client(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            started = loop.time()
            self.outcomes.append(Outcome(started, await self.one()))

    async def one(self) -> str:
        """Send `request` once, on a new connection: the result as in `Outcome.result`."""
        try:
            async with asyncio.timeout(DEADLINE_S):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError as exc:
                    return f"connect failed: {exc!r}"
                try:
                    writer.write(self.request)
                    data = await reader.read()  # to the end: the gateway closes after answering
                except OSError as exc:
                    return f"dropped: {exc!r}"
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError:
            return "timeout"
        head, sep, _ = data.partition(b"\r\n")
        parts = head.split(b" ", 2)
        if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            return f"dropped: {data[:80]!r}"
        status = int(parts[1])
        return "ok" if status == self.ok_status else f"status {status}"

    def succeeded_since(self, t: float) -> int:
        return sum(1 for o in self.outcomes if o.result == "ok" and o.started >= t)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result != "ok"]


def _worker_pids(parent: int) -> dict[int, int]:
    """Worker index → pid of the live (not zombie) workers of the gateway main process `parent`."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) != parent or fields[0] == b"Z" or b"--worker" not in argv:
            continue
        out[int(argv[argv.index(b"--worker") + 1])] = int(entry)
    return out


async def worker_pids(parent: int) -> dict[int, int]:
    return await asyncio.to_thread(_worker_pids, parent)


async def snapshot_persisted(state: Path) -> None:
    """Wait for the snapshot file, which the next incarnation of a worker serves from its start
    (before its link is up)."""
    path = state / "gateway" / "snapshot.json"
    await eventually(lambda: asyncio.to_thread(path.exists), "the persisted snapshot")


@dataclass(frozen=True)
class Target:
    """What the prober sends, what answers it, and which worker to kill."""

    snapshot: Snapshot
    request: bytes
    ok_status: int
    home_key: str | None
    """The key whose home worker takes the requests (None: any worker answers)."""


def _target(kind: str, upstream_port: int) -> Target:
    if kind == "cc0":
        get = f"GET /p HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        return Target(snapshot(1, upstream_port, (HOST,)), get, 200, None)
    if kind == "cc1":
        get = f"GET /p HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        return Target(limited_snapshot(1, upstream_port, cc=1), get, 200, REVISION)
    body = b'{"n": 1}'
    post = (
        b"POST /default/b HTTP/1.1\r\nHost: broker-ingress.localhost\r\nConnection: close\r\n"
        b"ce-specversion: 1.0\r\nce-id: e\r\nce-source: /t\r\nce-type: t\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    snap = dataclasses.replace(snapshot(1, upstream_port, ("unused.default.localhost",)),
                               brokers=(BROKER,))
    return Target(snap, post, 202, home_key(BROKER))


@contextlib.asynccontextmanager
async def probing(prober: NewConnectionProber) -> AsyncIterator[NewConnectionProber]:
    task = asyncio.create_task(prober.run())
    try:
        yield prober
    finally:
        prober.stopping = True
        await asyncio.wait_for(task, DEADLINE_S * 2)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind", ["cc0", "cc1", "broker"])
async def test_sigkilled_worker_refuses_no_connection(
    tmp_path: Path, workers: int, kind: str
) -> None:
    loop = asyncio.get_running_loop()
    async with upstream_server() as up:
        target = _target(kind, up)
        async with (
            controller(target.snapshot) as c,
            gateway_process(tmp_path / "state", c.url, workers=workers) as gw,
        ):
            await gw.wait_ready()
            await eventually(lambda: all(c.acked(f"gw/{i}") == 1 for i in range(workers)), "acks")
            await snapshot_persisted(tmp_path / "state")
            victim_index = 0 if target.home_key is None else home_index(target.home_key, workers)
            victim = (await worker_pids(gw.pid))[victim_index]
            prober = NewConnectionProber(gw.port, target.request, target.ok_status)
            async with probing(prober):
                await eventually(lambda: prober.succeeded_since(0.0) >= AFTER_RESPAWN,
                                 "the prober's first answers")
                os.kill(victim, signal.SIGKILL)
                await eventually(lambda: _dead(victim), f"worker {victim} to die")
                dead_at = loop.time()
                pids = await eventually(lambda: _respawned(gw.pid, victim_index, victim),
                                        f"worker {victim_index} to be restarted")
                assert isinstance(pids, dict) and len(pids) == workers
                respawned_at = loop.time()
                await eventually(lambda: prober.succeeded_since(respawned_at) >= AFTER_RESPAWN,
                                 "answers after the restart")
            await eventually(lambda: _restarts_counted(gw), "the restart counted")

            failures = prober.failures()
            refused = [o for o in failures if o.result.startswith("connect failed")]
            assert not refused, f"{len(refused)} connections refused, e.g. {refused[0]}"
            # Only a request in flight on the dead worker may fail: one per client at most,
            # every one begun before the worker was gone.
            late = [o for o in failures if o.started >= dead_at]
            assert not late, f"{len(late)} requests begun after the death failed: {late[:3]}"
            assert len(failures) <= CLIENTS, failures
            assert all(o.result.startswith(("dropped", "status 50")) for o in failures), failures
            await terminate(gw)


async def _restarts_counted(gw: Gateway) -> bool:
    return (await gw.metrics())["flint_gateway_worker_restarts_total"] == 1


async def _dead(pid: int) -> bool:
    return not await alive(pid)


async def _respawned(parent: int, index: int, old: int) -> dict[int, int] | None:
    """The workers' pids once worker `index` runs again under a pid other than `old`."""
    pids = await worker_pids(parent)
    return pids if pids.get(index, old) != old else None


# ---------------------------------------------------------------------------------------------
# A request forwarded on a pooled connection to a home worker that dies under it
# ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def holding_server() -> AsyncIterator[tuple[int, collections.Counter[str]]]:
    """An app counting requests by path that never answers the first request to `/hold`
    (until it stops); it answers `<path> #<n>`."""
    seen: collections.Counter[str] = collections.Counter()
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        seen[request.path] += 1
        n = seen[request.path]
        if request.path == "/hold" and n == 1:
            await release.wait()
        return web.Response(text=f"{request.path} #{n}")

    try:
        async with serving(handle) as port:
            yield port, seen
    finally:
        release.set()


async def keep_alive_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, method: str = "GET"
) -> tuple[int, bytes]:
    """GET (or `method`, with an empty body) `path` on an open keep-alive connection: the
    status and body of the answer."""
    body = "Content-Length: 0\r\n" if method != "GET" else ""
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{body}\r\n".encode())
    async with asyncio.timeout(DEADLINE_S):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
                      if k.lower() == b"content-length")
        return int(lines[0].split(b" ", 2)[1]), await reader.readexactly(length)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_request_forwarded_on_a_pooled_connection_outlives_its_home_worker(
    tmp_path: Path, method: str,
) -> None:
    """A CC=1 request that the other worker forwarded on a pooled (reused) connection, in flight
    on the home worker when it is SIGKILLed: a GET is sent again on a fresh connection, which
    waits in the home slot's queue until the home worker's next incarnation answers it; a POST,
    which the replica may have run already, is not (a 502: never run twice)."""
    async with (
        holding_server() as (port, seen),
        controller(limited_snapshot(1, port, cc=1)) as c,
        gateway_process(tmp_path / "state", c.url, workers=2) as gw,
    ):
        await gw.wait_ready()
        await eventually(lambda: c.acked("gw/0") == 1 and c.acked("gw/1") == 1, "acks")
        await snapshot_persisted(tmp_path / "state")
        home = home_index(REVISION, 2)
        victim = (await worker_pids(gw.pid))[home]
        forwards = "flint_gateway_home_forwards_total"
        for attempt in range(40):  # the kernel picks the worker: until the other one has it
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            before = (await gw.metrics())[forwards]
            # This request leaves the forwarding worker's connection to the home in its pool.
            assert await keep_alive_get(reader, writer, f"/warm{attempt}") == (
                200, f"/warm{attempt} #1".encode())
            if (await gw.metrics())[forwards] > before:
                break
            writer.close()
        else:
            pytest.fail("40 connections in a row reached the home worker")
        held = asyncio.create_task(keep_alive_get(reader, writer, "/hold", method))
        try:
            await eventually(lambda: seen["/hold"] == 1, "the request to reach the replica")
            os.kill(victim, signal.SIGKILL)
            if method == "GET":
                assert await held == (200, b"/hold #2")  # answered through the next incarnation
            else:
                status, _ = await held
                assert status == 502 and seen["/hold"] == 1
        finally:
            held.cancel()
            writer.close()
        await eventually(lambda: _respawned(gw.pid, home, victim), "the home worker back")
        pids = await worker_pids(gw.pid)
        assert victim not in pids.values() and home in pids
        retries = (await gw.metrics())["flint_gateway_upstream_retries_total"]
        assert retries == (1 if method == "GET" else 0)
        await terminate(gw)


# ---------------------------------------------------------------------------------------------
# A crash-looping worker's slot is closed, so the other worker takes its connections
# ---------------------------------------------------------------------------------------------

CRASH_LOOP_REQUESTS = 40
"""Requests sent, each on a new connection, while the crash-looping worker's slot is closed."""
CONCLUSIVE_ATTEMPTS = 5
"""Tries at sending them all while the slot stays closed (the next spawn may reopen it)."""


@dataclass
class CrashLoop:
    """SIGKILLs every incarnation of worker `index` of the gateway `parent` as soon as its pid
    appears, while running."""

    parent: int
    index: int
    killed: list[int] = field(default_factory=list)
    stopping: bool = False

    async def run(self) -> None:
        while not self.stopping:
            pid = (await worker_pids(self.parent)).get(self.index)
            if pid is not None and pid not in self.killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
            await asyncio.sleep(0.005)  # polling /proc, not waiting for something to happen


@contextlib.asynccontextmanager
async def crash_looping(loop_: CrashLoop) -> AsyncIterator[CrashLoop]:
    task = asyncio.create_task(loop_.run())
    try:
        yield loop_
    finally:
        loop_.stopping = True
        await asyncio.wait_for(task, DEADLINE_S)


def _count(log: list[str], event: str, worker: int) -> int:
    """How many of the gateway's log lines are `event=<event> worker=<worker> ...`."""
    want = [f"event={event}", f"worker={worker}"]
    return sum(1 for line in log if (words := line.split()) and want in (
        words[i:i + 2] for i in range(len(words) - 1)))


async def _worker_answered(state: Path, index: int) -> int:
    """Requests worker `index` has answered to clients (per its own stats socket)."""
    client = WorkerClient(index, worker_socket_path(state, index))
    try:
        stats = await client.fetch()
    finally:
        await client.close()
    return 0 if stats is None else sum(count for *_, count in stats.requests)


async def test_a_crash_looping_workers_slot_is_closed_and_the_other_worker_takes_its_connections(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    log: list[str] = []
    async with upstream_server() as up:
        target = _target("cc0", up)  # any worker answers: nothing is forwarded to worker 1
        async with (
            controller(target.snapshot) as c,
            gateway_process(state, c.url, workers=2, log=log) as gw,
        ):
            await gw.wait_ready()
            await eventually(lambda: c.acked("gw/0") == 1 and c.acked("gw/1") == 1, "acks")
            await snapshot_persisted(state)
            prober = NewConnectionProber(gw.port, target.request, target.ok_status)

            async def slot_closed_and_worker_dead() -> bool:
                # Closed since its last reopening (each but the first close follows one).
                closed = _count(log, "slot_closed", 1) == _count(log, "slot_reopened", 1) + 1
                return closed and 1 not in await worker_pids(gw.pid)

            async with crash_looping(CrashLoop(gw.pid, 1)) as killer:
                await eventually(lambda: _count(log, "slot_closed", 1) >= 1,
                                 "the main process to close worker 1's slot", DEADLINE_S * 2)
                for _ in range(CONCLUSIVE_ATTEMPTS):
                    await eventually(slot_closed_and_worker_dead,
                                     "worker 1 dead with its slot closed")
                    kills = len(killer.killed)
                    reopened = _count(log, "slot_reopened", 1)
                    results = await asyncio.gather(
                        *(prober.one() for _ in range(CRASH_LOOP_REQUESTS)))
                    # Conclusive only if worker 1 stayed dead and closed all along: a request
                    # that its slot took after a reopening ends only once that incarnation
                    # was killed (counted) and the slot closed again.
                    if (len(killer.killed) == kills and _count(log, "slot_reopened", 1) == reopened
                            and await slot_closed_and_worker_dead()):
                        failed = [r for r in results if r != "ok"]
                        assert not failed, (
                            f"{len(failed)} of {CRASH_LOOP_REQUESTS} failed, e.g. {failed[:3]}")
                        break
                else:
                    pytest.fail(f"worker 1 was respawned during each of {CONCLUSIVE_ATTEMPTS} "
                                f"attempts; last results {collections.Counter(results)}")
                reopened = _count(log, "slot_reopened", 1)
            assert _count(log, "slot_closed", 0) == 0, "worker 0 never died"

            # No more kills: the next incarnation gets its slot back, and serves.
            pids = await eventually(lambda: _respawned_beyond(gw.pid, 1, killer.killed),
                                    "worker 1 to be restarted", DEADLINE_S * 2)
            assert isinstance(pids, dict) and len(pids) == 2
            assert _count(log, "slot_reopened", 1) > reopened

            async def worker_1_answers() -> bool:
                await asyncio.gather(*(prober.one() for _ in range(10)))
                return await _worker_answered(state, 1) > 0

            await eventually(worker_1_answers, "worker 1 to answer on its reopened slot")
            assert all(line.count("event=slot_reopen_failed") == 0 for line in log)
            await terminate(gw)


async def _respawned_beyond(parent: int, index: int, killed: list[int]) -> dict[int, int] | None:
    """The workers' pids once worker `index` runs under a pid not in `killed`."""
    pids = await worker_pids(parent)
    return pids if pids.get(index, killed[-1]) not in killed else None
