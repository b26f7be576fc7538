"""Test harness that runs the real thing: `flint up` on free loopback ports with a private state dir."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flint_common import guards
from loadtests.scale_from_zero import free_ports

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "apps"


def free_port() -> int:
    return free_ports(1)[0]


def poll(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Wait for `check()` with a deadline; fail the test naming `what` when it never holds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def procs_mentioning(needle: str) -> dict[int, str]:
    """pid → cmdline of every live process whose cmdline or environment mentions `needle`."""
    out: dict[int, str] = {}
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (d / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if (needle in cmd or needle in env) and pid_alive(int(d.name)):
            out[int(d.name)] = cmd
    return out



@dataclass
class Flint:
    proc: subprocess.Popen[bytes]
    state_dir: Path
    port: int
    api_port: int
    admin_port: int
    log_path: Path
    dispatcher_port: int = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def cli(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, FLINT_API=self.api)
        result = subprocess.run(
            [str(BIN / "flint"), *args], input=input, capture_output=True, text=True,
            env=env, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"flint {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def get(self, kind: str, name: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self.cli("get", kind, name, "-o", "json").stdout)  # type: ignore[no-any-return]

    def replica_records(self) -> list[dict]:  # type: ignore[type-arg]
        out = []
        for p in sorted((self.state_dir / "replicas").glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(p.read_text()))
        return out

    def host(self, service: str, namespace: str = "default") -> str:
        return f"{service}.{namespace}.localhost"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


def start_flint(tmp: Path, *extra: str) -> Flint:
    port, api_port, admin_port, dispatcher_port = free_ports(4)
    state_dir = tmp / "state"
    log_path = tmp / "flint-up.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(BIN / "flint"), "up", "--state-dir", str(state_dir), "--port", str(port),
         "--api-port", str(api_port), "--admin-port", str(admin_port),
         "--dispatcher-port", str(dispatcher_port), *extra],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, guards.ENV_VAR: "1"},  # every process of it guards its event loop
    )
    f = Flint(proc, state_dir, port, api_port, admin_port, log_path, dispatcher_port)

    def ready() -> bool:
        assert proc.poll() is None, f"flint up exited: {f.logs()}"
        return "Flint is up" in f.logs()

    try:
        poll(ready, 60, "flint up to start")
        poll(lambda: _http_ok(f"http://127.0.0.1:{admin_port}/readyz"), 30, "gateway /readyz")
    except BaseException:
        stop_flint(f)
        raise
    return f


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)


def stop_flint(f: Flint) -> None:
    """SIGTERM `flint up`, then check that every process it started is gone."""
    pids = [r["pid"] for r in f.replica_records() if isinstance(r.get("pid"), int)]
    if f.proc.poll() is None:
        f.proc.send_signal(signal.SIGINT)
        try:
            f.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            f.proc.kill()
            f.proc.wait()
            raise AssertionError(f"flint up did not stop on SIGINT: {f.logs()}") from None
    poll(lambda: not any(pid_alive(p) for p in pids), 10, "every replica to be gone")
    # Not only what the records say: nothing whose command line or environment names the state
    # directory (controller, gateway workers, replicas, their children) may survive.
    poll(lambda: not procs_mentioning(str(f.state_dir)), 15, "no process left behind")
    check_no_blocking_calls(f)


def check_no_blocking_calls(f: Flint) -> None:
    """Fail when a process of `flint up` reported a blocking call on its event loop."""
    reports = guards.blocking_reports(f.log_path.read_text(errors="replace"))
    if reports:
        raise AssertionError(
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


def run(coro):  # type: ignore[no-untyped-def]
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
