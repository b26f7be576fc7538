"""Run Flint in a temporary directory: the one harness of the integration tests and the benchmarks.

`start_flint(workdir)` runs the real `flint up` on free loopback ports with a private state dir
under `workdir` and waits until it is up and its gateway ready. The `Flint` handle runs the CLI
against it, reads its replica records and its log, and starts extra gateways and dispatchers
that join its controller (`start_gateway`, `start_dispatcher`), as several machines would: they
get `flint up`'s Redis settings (`Flint.redis_env`) in their environment, as its own processes
do; `Joined.kill()` crashes one (SIGKILL), `stop_joined` stops one and checks it left nothing.
`stop_flint(f)` stops the extras and `flint up`, then makes sure that no process mentioning
the state dir (or an extra's) survives: it kills what is left and reports what it had to kill.

Every failure is a `FlintError`, an AssertionError, so that a test that meets one fails with its
message; the benchmarks catch it as "could not run". `wait_for` polls with a deadline, naming
what it waited for.

Blocking throughout (subprocesses, polling, process-table scans): call it from a plain thread,
never from an event loop. Linux only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from controller.cli.endpoint import resolve
from controller.eventing.plan import dispatcher_id
from flint_common import procinfo, redis_config
from flint_common.lifetime import die_with_parent
from flint_common.secret import Secret
from loadtests import procs

BIN = Path(sys.executable).parent
"""The virtualenv's bin directory: its `flint` is the one under test."""

T = TypeVar("T")


class FlintError(AssertionError):
    """Flint did not do what was expected of it: it did not start, a command failed, a wait
    timed out, a stop had to kill. An AssertionError, so a test fails (not errors) with it."""


class FlintExited(FlintError):
    """A process of this Flint exited while we waited for it: waiting longer cannot help, so
    `wait_for` gives up at once."""


# --- small pieces --------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports (all held open while they are picked, so no two are the
    same; another process may still take one before it is used)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def wait_for(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Call `check()` every `interval_s` until it returns something truthy, and return that. An
    exception from `check` counts as "not yet" (the last one is named if the wait times out),
    except `FlintExited`, which ends the wait at once. Raises `FlintError` after `timeout_s`."""
    end = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except FlintExited:
            raise
        except Exception as exc:
            last = exc
        if time.monotonic() >= end:
            raise FlintError(f"timed out after {timeout_s:g} s waiting for {what}"
                             + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval_s)


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a GET of `url` answers 200."""
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return bool(r.status == 200)


def _tail(path: Path, last: int | None) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace")
        return text if last is None else text[-last:]
    return ""


# --- processes that join a running Flint ---------------------------------------------------------


@dataclass
class Joined:
    """An extra gateway or dispatcher started against a running Flint's controller, with a state
    dir of its own (a gateway) or of the gateway it pairs with (a dispatcher)."""

    kind: str
    """`gateway` or `dispatcher`."""
    name: str
    proc: subprocess.Popen[bytes]
    state_dir: Path
    log_path: Path
    admin_port: int
    port: int = 0
    """A gateway's proxy port (0 for a dispatcher)."""
    gateway_id: str = ""
    """A gateway's id: the controller knows its workers as `<gateway_id>/<index>`."""
    argv: list[str] = field(default_factory=list)
    killed: bool = False
    """`kill()` ended it on purpose: `stop_flint` does not count it as a problem."""

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def url(self) -> str:
        """A gateway's proxy (the data plane) over loopback."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dispatcher_id(self) -> str:
        """The id a dispatcher polls the plan with (`<hostname>/<hash of its state dir>`)."""
        return dispatcher_id(self.state_dir.resolve(), socket.gethostname())

    def logs(self, last: int | None = 5000) -> str:
        return _tail(self.log_path, last)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL it and its process group (a gateway's workers too), as a crash would, and
        reap it. Blocking."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # it leads its own session (`_spawn`)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()


def _spawn(argv: Sequence[str], log_path: Path,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        # Its own session: we decide when it stops, and a SIGKILL of the group reaches its
        # children (a gateway's workers) if it ignores the polite signal.
        return subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
                                env={**os.environ, **(env or {})})


def kubeconfig_token(path: Path) -> Secret:
    """The owner's token from the kubeconfig `flint up` wrote, read as the CLI reads it."""
    import asyncio

    endpoint = asyncio.run(resolve(None, str(path), None, env={}))
    if endpoint.token is None:
        raise FlintError(f"{path} holds no token")
    return endpoint.token


# --- flint up ------------------------------------------------------------------------------------


@dataclass
class Flint:
    """A running `flint up` and what was started to join it."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    state_dir: Path
    log_path: Path
    port: int
    api_port: int
    admin_port: int
    dispatcher_port: int
    api_tls_port: int = 0
    domain: str = "localhost"
    argv: list[str] = field(default_factory=list)
    joined: list[Joined] = field(default_factory=list)
    """Extra gateways and dispatchers, in start order; `stop_flint` stops them first."""
    token: Secret | None = None
    """The owner's token, read from the state dir's kubeconfig once `flint up` is up."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables set for `flint up` over the caller's environment; processes that join it get
    them too."""
    redis_env: dict[str, str] = field(default_factory=dict)
    """The Redis settings `flint up` was given (`--redis URL`, `--redis-password-file FILE` or
    `FLINT_REDIS_*` in `env`) as the `FLINT_REDIS_*` variables it hands its own processes (a
    password file's path, never the password): processes that join it get them too."""

    @property
    def api(self) -> str:
        """The API over loopback HTTP."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        """The kubeconfig `flint up` wrote: context `flint`, the HTTPS URL, the CA, the token."""
        return self.state_dir / "kubeconfig"

    @property
    def token_file(self) -> Path:
        return self.state_dir / "auth" / "token"

    def api_headers(self) -> dict[str, str]:
        """The credential of a raw HTTP request to the API (or the dispatcher's admin port)."""
        if self.token is None:
            raise FlintError("flint up has not written its kubeconfig yet")
        return {"Authorization": f"Bearer {self.token.reveal()}"}

    # The two places that say how to reach this Flint.

    def cli_env(self) -> dict[str, str]:
        """The environment of a `flint` command run against this Flint: the API over loopback
        HTTP with the kubeconfig's token, and none of the caller's own FLINT_* or KUBECONFIG."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("FLINT_") and k != "KUBECONFIG"}
        env["FLINT_API"] = self.api
        if self.token is not None:
            env["FLINT_TOKEN"] = self.token.reveal()
        return env

    def joining_args(self) -> list[str]:
        """The arguments of an internal process (a gateway, a dispatcher) that joins this Flint's
        controller; `flint up` gives its own the same (the token by a 0600 file, never argv)."""
        return ["--controller", self.api, "--domain", self.domain,
                "--token-file", str(self.token_file)]

    # The CLI.

    def cli(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `flint ARGS...` against this Flint; with `check`, a non-zero exit is a FlintError."""
        result = subprocess.run([str(BIN / "flint"), *args], input=input, capture_output=True,
                                text=True, env=self.cli_env(), timeout=timeout)
        if check and result.returncode != 0:
            raise FlintError(f"flint {' '.join(args)} exited {result.returncode}\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def get(self, kind: str, name: str) -> dict[str, Any]:
        data = json.loads(self.cli("get", kind, name, "-o", "json").stdout)
        if not isinstance(data, dict):
            raise FlintError(f"flint get {kind} {name}: not an object")
        return data

    # What it is doing.

    def host(self, service: str, namespace: str = "default") -> str:
        """The Host header of a service's route."""
        return f"{service}.{namespace}.{self.domain}"

    def logs(self, last: int | None = 5000) -> str:
        """The end of `flint up`'s log (all of it with `last=None`)."""
        return _tail(self.log_path, last)

    def replica_records(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted((self.state_dir / "replicas").glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(p.read_text()))
        return out

    def gateway_pid(self) -> int | None:
        """The main process of the gateway `flint up` runs (not its workers, not a joined one)."""
        return procs.find_child(self.proc.pid, "-m gateway")

    def dispatcher_pid(self) -> int | None:
        """The embedded dispatcher `flint up` runs (not a joined one)."""
        return procs.find_child(self.proc.pid, "-m controller.eventing")

    @property
    def dispatcher_id(self) -> str:
        """The embedded dispatcher's id: the one the controller computes for its state dir."""
        return dispatcher_id(self.state_dir.resolve(), socket.gethostname())

    def joined_env(self) -> dict[str, str]:
        """What a process that joins this Flint gets over the caller's environment: `env`, then
        the Redis settings `flint up` was given (`redis_env`)."""
        return {**self.env, **self.redis_env}

    # Processes that join it.

    def start_gateway(self, *, workers: int = 1, name: str | None = None,
                      gateway_id: str | None = None, timeout_s: float = 30) -> Joined:
        """Start another gateway against this Flint's controller, on ports and a state dir of its
        own, and wait until it is ready (every worker has a routing snapshot). The controller
        counts its workers with the others: a route is Ready only once they serve it too.
        `gateway_id` (default `<name>-<our pid>`) must differ from every connected gateway's."""
        name = name or f"gateway-{sum(j.kind == 'gateway' for j in self.joined) + 2}"
        port, admin_port = free_ports(2)
        state_dir = self.workdir / name
        # Not the default id (the host name): `flint up`'s gateway has that one, and a worker
        # that says hello under a connected worker's id replaces it at the controller.
        gateway_id = gateway_id or f"{name}-{os.getpid()}"
        argv = [sys.executable, "-m", "gateway", *self.joining_args(),
                "--state-dir", str(state_dir), "--port", str(port), "--admin-port", str(admin_port),
                "--workers", str(workers), "--gateway-id", gateway_id]
        log_path = self.workdir / f"{name}.log"
        j = Joined("gateway", name, _spawn(argv, log_path, self.joined_env()), state_dir, log_path,
                   admin_port, port, gateway_id, argv)
        self.joined.append(j)
        _wait_joined(j, j.admin + "/readyz", timeout_s)
        return j

    def start_dispatcher(self, *, gateway: Joined | None = None, name: str | None = None,
                         timeout_s: float = 30) -> Joined:
        """Start another event dispatcher against this Flint's controller and wait for its
        /healthz. It pairs with `gateway` (a joined one: it reads that gateway's broker logs,
        in that gateway's state dir, and posts through it) or, without one, with `flint up`'s
        gateway, with a state dir of its own."""
        name = name or f"dispatcher-{sum(j.kind == 'dispatcher' for j in self.joined) + 2}"
        (admin_port,) = free_ports(1)
        state_dir = gateway.state_dir if gateway is not None else self.workdir / name
        gateway_port = gateway.port if gateway is not None else self.port
        argv = [sys.executable, "-m", "controller.eventing", *self.joining_args(),
                "--state-dir", str(state_dir), "--gateway", f"http://127.0.0.1:{gateway_port}",
                "--admin-port", str(admin_port)]
        log_path = self.workdir / f"{name}.log"
        j = Joined("dispatcher", name, _spawn(argv, log_path, self.joined_env()), state_dir,
                   log_path, admin_port, argv=argv)
        self.joined.append(j)
        _wait_joined(j, j.admin + "/healthz", timeout_s)
        return j


def stop_joined(f: Flint, j: Joined, timeout_s: float = 20) -> list[str]:
    """Stop one joined process (SIGTERM, then SIGKILL of its process group after `timeout_s`),
    forget it, and make sure nothing mentioning its own state dir survives (a dispatcher paired
    with a joined gateway shares that gateway's dir: checked once both are gone). Returns what
    had to be killed, as sentences (empty for a clean stop, or for one `kill()` ended)."""
    problems: list[str] = []
    if not procs.stop(j.proc, sig=signal.SIGTERM, timeout_s=timeout_s) and not j.killed:
        problems.append(f"the {j.kind} {j.name} did not stop within {timeout_s:g} s of SIGTERM; "
                        f"killed it (and its process group):\n{j.logs(2000)}")
    with contextlib.suppress(ValueError):
        f.joined.remove(j)
    if j.state_dir != f.state_dir and not any(o.state_dir == j.state_dir for o in f.joined):
        left = procs.reap_mentioning(str(j.state_dir), timeout_s=15)
        if left:
            problems.append(f"killed processes left behind mentioning {j.state_dir}: "
                            + "; ".join(f"{p} {c[:160]}" for p, c in sorted(left.items())))
    return problems


def redis_env_of(extra_args: Sequence[str], env: dict[str, str]) -> dict[str, str]:
    """The `FLINT_REDIS_*` variables that hand `flint up`'s Redis settings (from its arguments,
    else from `env`) to a process that joins it; empty without Redis. Never a password: the URL
    carries none (`flint up` refuses one) and the password stays in its file."""
    args = list(extra_args)

    def flag(name: str) -> str | None:
        for i, a in enumerate(args):
            if a == name and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(name + "="):
                return a.partition("=")[2]
        return None

    url = flag("--redis") or env.get(redis_config.ENV_URL)
    if not url:
        return {}
    out = {redis_config.ENV_URL: url}
    password_file = flag(redis_config.PASSWORD_FLAG) or env.get(redis_config.ENV_PASSWORD_FILE)
    if password_file:
        out[redis_config.ENV_PASSWORD_FILE] = str(Path(password_file).resolve())
    if redis_config.ENV_MIN_REPLICAS in env:
        out[redis_config.ENV_MIN_REPLICAS] = env[redis_config.ENV_MIN_REPLICAS]
    return out


def _wait_joined(j: Joined, url: str, timeout_s: float) -> None:
    def ready() -> bool:
        if j.proc.poll() is not None:
            raise FlintExited(f"the {j.kind} {j.name} exited {j.proc.returncode}:\n{j.logs()}")
        return http_ok(url)

    wait_for(ready, timeout_s, f"the {j.kind} {j.name} ({url})")


def flint_up_argv(state_dir: Path, port: int, api_port: int, admin_port: int, dispatcher_port: int,
                  api_tls_port: int, domain: str, extra_args: Sequence[str]) -> list[str]:
    """The command line of `flint up` (the one place it is built)."""
    return [str(BIN / "flint"), "up", "--state-dir", str(state_dir), "--port", str(port),
            "--api-port", str(api_port), "--admin-port", str(admin_port),
            "--dispatcher-port", str(dispatcher_port), "--api-tls-port", str(api_tls_port),
            "--domain", domain, *extra_args]


def start_flint(workdir: Path, *extra_args: str, workers: int | None = None,
                domain: str = "localhost", timeout_s: float = 60, state_dir: Path | None = None,
                env: dict[str, str] | None = None) -> Flint:
    """Run `flint up` (with `extra_args`, e.g. `--autoscaler stable-window=6s`) on free loopback
    ports, its state in `workdir/state` (or `state_dir`) and its log in `workdir/flint-up.log`,
    with `env` over the caller's environment; return once it is up and its gateway ready, the
    token read from the kubeconfig it wrote. A failed start stops everything it started, then
    raises."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, api_port, admin_port, dispatcher_port, api_tls_port = free_ports(5)
    state_dir = state_dir or workdir / "state"
    log_path = workdir / "flint-up.log"
    args = [*extra_args, *(["--workers", str(workers)] if workers is not None else [])]
    argv = flint_up_argv(state_dir, port, api_port, admin_port, dispatcher_port, api_tls_port,
                         domain, args)
    f = Flint(_spawn(argv, log_path, env), workdir, state_dir, log_path, port, api_port,
              admin_port, dispatcher_port, api_tls_port, domain, argv, env=dict(env or {}),
              redis_env=redis_env_of(extra_args, {**os.environ, **(env or {})}))

    def up() -> bool:
        if f.proc.poll() is not None:
            raise FlintExited(f"flint up exited {f.proc.returncode}:\n{f.logs()}")
        return "Flint is up" in f.logs(None)

    try:
        wait_for(up, timeout_s, "flint up to start")
        f.token = kubeconfig_token(f.kubeconfig)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{admin_port}/readyz"), 30, "the gateway's /readyz")
    except BaseException:
        stop_flint(f)  # nothing it started may outlive a failed start
        raise
    return f


def stop_flint(f: Flint, timeout_s: float = 40, joined_timeout_s: float = 20) -> list[str]:
    """Stop what joined `f` (SIGTERM, `joined_timeout_s` each), then `flint up` (SIGINT,
    `timeout_s`), each killed with its process group if it does not stop in time; then make
    sure that no recorded replica and no process whose command line or environment names the
    state dir (or a joined process's) survives: what is still there after a grace period is
    killed. Returns what had to be killed, as sentences (empty for a clean stop). Safe to call
    again."""
    problems: list[str] = []
    for j in reversed(f.joined):
        if not procs.stop(j.proc, sig=signal.SIGTERM, timeout_s=joined_timeout_s) and not j.killed:
            problems.append(f"the {j.kind} {j.name} did not stop within {joined_timeout_s:g} s of "
                            f"SIGTERM; killed it (and its process group):\n{j.logs(2000)}")
    replicas = [(r["pid"], r.get("pgid") or r["pid"], r.get("start_time"))
                for r in f.replica_records() if isinstance(r.get("pid"), int)]
    if not procs.stop(f.proc, sig=signal.SIGINT, timeout_s=timeout_s):
        problems.append(f"flint up did not stop within {timeout_s:g} s of SIGINT; killed it:\n"
                        f"{f.logs(2000)}")
    # A recorded replica is checked by its start time, so a reused pid is never killed.
    def replicas_left() -> list[tuple[int, int]]:
        return [(pid, pgid) for pid, pgid, start in replicas if procinfo.alive(pid, start)]

    with contextlib.suppress(FlintError):
        wait_for(lambda: not replicas_left(), 10, "every recorded replica to be gone")
    for pid, pgid in replicas_left():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # a replica leads its own process group
        problems.append(f"killed the recorded replica {pid} (and its process group {pgid})")
    for d in dict.fromkeys([f.state_dir, *(j.state_dir for j in f.joined)]):
        left = procs.reap_mentioning(str(d), timeout_s=15)
        if left:
            problems.append(f"killed processes left behind mentioning {d}: "
                            + "; ".join(f"{p} {c[:160]}" for p, c in sorted(left.items())))
    return problems
