"""The pytest side of the harness that runs the real thing: `flint up` on free loopback ports
with a private state dir (`loadtests.flint_process`, which the benchmarks share), plus what only
tests want: `poll`, a `stop_flint` that fails the test when it had to kill something, and the
request helpers below."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from flint_common import guards, procinfo
from loadtests import flint_process
from loadtests.flint_process import BIN, Flint, FlintError, Joined, free_port, free_ports

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "apps"

__all__ = [
    "APPS",
    "BIN",
    "REPO",
    "Flint",
    "FlintError",
    "Joined",
    "Prober",
    "check_no_blocking_calls",
    "fetch",
    "free_port",
    "free_ports",
    "pid_alive",
    "poll",
    "procs_mentioning",
    "run",
    "start_flint",
    "stop_flint",
    "until",
]


def poll(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    """Wait for `check()` with a deadline; fail the test naming `what` when it never holds."""
    flint_process.wait_for(check, timeout, what, interval)


async def until(check: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 10.0,
                interval: float = 0.02) -> None:
    """`poll` for a coroutine check, on the running loop: fail naming `what` after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {deadline_s:g} s")
        await asyncio.sleep(interval)


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie is dead for our purposes)."""
    return procinfo.alive(pid)


def procs_mentioning(needle: str) -> dict[int, str]:
    """pid → cmdline of every live process whose cmdline or environment mentions `needle`."""
    return procinfo.mentioning(needle)


def start_flint(workdir: Path, *extra_args: str, env: dict[str, str] | None = None,
                **kw: Any) -> Flint:
    """`flint_process.start_flint`, with the blocking-call guard on in every process of it
    (`FLINT_BLOCKBUSTER=1`: a blocking call on an event loop is logged, and `stop_flint` fails
    the test). The benchmarks start Flint without it: they measure speed."""
    return flint_process.start_flint(
        workdir, *extra_args, env={guards.ENV_VAR: "1", **(env or {})}, **kw)


def stop_flint(f: Flint) -> None:
    """Stop `flint up` and what joined it, and check that every process they started is gone
    (not only what the records say: nothing whose command line or environment names the state
    directory may survive). What had to be killed is killed, and fails the test; so does a
    blocking call any of them reported."""
    problems = flint_process.stop_flint(f)
    if problems:
        raise FlintError("stopping flint up was not clean:\n" + "\n".join(problems))
    check_no_blocking_calls(f)


def check_no_blocking_calls(f: Flint) -> None:
    """Fail when a process of `flint up` (or one that joined it) reported a blocking call on its
    event loop."""
    reports = guards.blocking_reports(f.logs(None))
    for j in f.joined:
        reports += guards.blocking_reports(j.logs(None))
    if reports:
        raise FlintError(
            f"{len(reports)} blocking call(s) on an event loop in flint up's processes "
            f"({f.log_path}):\n\n" + "\n\n".join(reports[:5])
        )


async def fetch(port: int, host: str, path: str = "/", *, headers: dict[str, str] | None = None,
                method: str = "GET", data: bytes | None = None,
                deadline_s: float = 30) -> tuple[int, dict[str, str], bytes]:
    """One request to the gateway with the Host header set (Python does not resolve *.localhost)."""
    import aiohttp

    h = {"Host": host, **(headers or {})}
    async with aiohttp.ClientSession() as s, s.request(
        method, f"http://127.0.0.1:{port}{path}", headers=h, data=data,
        timeout=aiohttp.ClientTimeout(total=deadline_s),
    ) as r:
        return r.status, dict(r.headers), await r.read()


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Prober:
    """Clients sending requests to one host through the gateway from a background thread, until
    the `with` block ends; `seen` counts answers by revision (or `status N` for failures)."""

    def __init__(self, port: int, host: str, clients: int = 4) -> None:
        import collections
        import threading

        self.port, self.host, self.clients = port, host, clients
        self.seen: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async def client() -> None:
            while not self._stop.is_set():
                try:
                    status, _, body = await fetch(self.port, self.host, deadline_s=10)
                except Exception as exc:
                    self.seen[f"error {exc!r}"] += 1
                    continue
                if status == 200:
                    self.seen[str(json.loads(body)["revision"])] += 1
                else:
                    self.seen[f"status {status}"] += 1

        await asyncio.gather(*(client() for _ in range(self.clients)))

    def failures(self) -> dict[str, int]:
        return {k: v for k, v in self.seen.items() if k.startswith(("status", "error"))}

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


@contextlib.asynccontextmanager
async def serving(handle: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[int]:
    """An aiohttp app answering every method and path with `handle`, on a free loopback port
    (yielded) until the block ends."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
