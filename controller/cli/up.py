"""`flint up`: run the embedded engine in the foreground and supervise its processes.

It starts the controller, the gateway and the event dispatcher, restarts any that dies,
optionally applies manifests and prints their URLs once Ready, and on Ctrl-C or SIGTERM stops
everything, replicas included: no process is left behind."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvloop
import yaml

from controller.cli.apply import apply_one
from controller.cli.client import ApiClient
from controller.cli.endpoint import Endpoint, flint_kubeconfig
from controller.cli.errors import CliError
from controller.cli.kinds import ResourceInfo
from controller.cli.manifests import load as load_manifests
from controller.cli.wait import generation_of, wait_ready
from controller.credentials import (
    Credentials,
    api_kubeconfig,
    ensure_credentials,
    https_url,
    kubeconfig_path,
    token_path,
)
from controller.domains import parse_config_domain
from controller.runtime.process import find_by_replica_id
from controller.settings import default_state_dir
from flint_common import guards, kubeconfig, redis_config
from flint_common.addresses import format_hostport, parse_listen
from flint_common.backoff import backoff_delay
from flint_common.lifetime import die_with_parent
from flint_common.private import UnsafeStateDir, ensure_private_dir, private_umask
from flint_common.redis_config import RedisConfigError, RedisSettings

RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
"""Delay before restarting a child that exited: `RESTART_FIRST_S` after a stable run, doubling
with each quick exit in a row (the first quick exit already waits twice that), up to this."""
STABLE_S = 60.0
"""A child up longer than this before exiting is restarted after `RESTART_FIRST_S` again."""


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started: float = 0.0
    quick_exits: int = 0
    """Exits in a row after less than `STABLE_S` up; the restart delay doubles with each."""


CHILD_ENV_DROPPED = ("FLINT_TOKEN", redis_config.ENV_URL, redis_config.ENV_PASSWORD_FILE,
                     redis_config.ENV_MIN_REPLICAS)
"""Variables of `flint up`'s environment its children do not inherit as they are: the token
(they read its file) and the Redis settings (passed on as resolved, `RedisSettings.env`)."""


class Supervisor:
    def __init__(self, children: list[Child], state_dir: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.children = children
        self.state_dir = state_dir
        self.stopping = False
        self.env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROPPED}
        self.env.update(env or {})

    async def spawn(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            # The children read the token from its 0600 file; a FLINT_TOKEN the owner exported
            # for the CLI stays out of their environment. The Redis settings are the resolved
            # ones: a URL without password and the password file's path.
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        child.started = time.monotonic()

    async def watch(self, child: Child) -> None:
        """Restart `child` whenever it exits, with backoff (reset after a minute of uptime)."""
        while not self.stopping:
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping:
                return
            uptime = time.monotonic() - child.started
            child.quick_exits = 0 if uptime > STABLE_S else child.quick_exits + 1
            delay = backoff_delay(RESTART_FIRST_S, RESTART_MAX_S, child.quick_exits)
            child.restarts += 1
            print(
                f"flint up: {child.name} exited with code {code}; restarting in "
                f"{delay:.1f}s (restart {child.restarts})",
                file=sys.stderr, flush=True,
            )
            await asyncio.sleep(delay)
            if not self.stopping:
                await self.spawn(child)

    async def stop(self, grace_s: float = 20.0) -> None:
        self.stopping = True
        for child in self.children:
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in self.children:
            if child.proc is None:
                continue
            try:
                await asyncio.wait_for(child.proc.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                await child.proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)  # stragglers of its group
        await asyncio.to_thread(kill_recorded_replicas, self.state_dir)


def kill_recorded_replicas(state_dir: Path) -> int:
    """Backstop: SIGKILL the process group of every replica still recorded in the state dir."""
    killed = 0
    records = state_dir / "replicas"
    if not records.is_dir():
        return 0
    for path in records.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pgid = data.get("pgid") or data.get("pid")
        if not pgid and isinstance(data.get("id"), str):
            # Recorded just before its spawn: find it by the FLINT_REPLICA_ID in its environment.
            pgid = find_by_replica_id(data["id"])
        if isinstance(pgid, int) and pgid > 1:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
                killed += 1
        with contextlib.suppress(OSError):
            path.unlink()
    return killed


async def wait_http(url: str, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < end:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return True
            await asyncio.sleep(0.05)
    return False


async def apply_and_report(api: Endpoint, files: list[str], timeout_s: float) -> int:
    """Apply manifests as `flint apply` does, then wait for each Service and print its URL."""
    manifests = await asyncio.to_thread(load_manifests, files, sys.stdin)
    failed = 0
    async with ApiClient(api) as client:
        client.on_warning = lambda text: print(f"Warning: {text}", file=sys.stderr, flush=True)
        services: list[tuple[ResourceInfo, str, str, int]] = []
        for m in manifests:
            try:
                done = await apply_one(client, m, "default")
            except CliError as e:
                failed += 1
                print(f"flint up: applying {m.source} failed:\n{e.message}", file=sys.stderr,
                      flush=True)
                continue
            print(done.line(), flush=True)
            if done.info.kind == "Service" and done.info.group == "serving.knative.dev":
                services.append((done.info, done.namespace, done.name, generation_of(done.obj)))
        for info, ns, name, generation in services:
            try:
                svc = await wait_ready(client, info, ns, name, generation, timeout_s,
                                       echo=lambda line: print(" " + line, flush=True))
            except CliError as e:
                print(f"flint up: {e.message}", file=sys.stderr, flush=True)
                failed += 1
                continue
            url = (svc.get("status") or {}).get("url", "")
            print(f"Service '{name}' is available at URL:\n{url}", flush=True)
    return 1 if failed else 0


def kubectl_kubeconfig(env: Mapping[str, str]) -> Path:
    """The file kubectl writes a new context to: `$KUBECONFIG`'s first existing file, else its
    last one (client-go's rule), else `~/.kube/config`."""
    listed = [Path(p).expanduser() for p in (env.get("KUBECONFIG") or "").split(os.pathsep) if p]
    if listed:
        return next((p for p in listed if p.exists()), listed[-1])
    return Path(env.get("HOME") or Path.home()) / ".kube" / "config"


def write_kubeconfigs(a: argparse.Namespace, state_dir: Path, creds: Credentials) -> list[Path]:
    """`<state-dir>/kubeconfig`, and the merges asked for; returns what was written. A merge into
    a file that is no kubeconfig is skipped with a message (Flint still starts). Blocking."""
    config = api_kubeconfig(creds, https_url(a.api_tls_port))
    written = [kubeconfig_path(state_dir)]
    kubeconfig.write(written[0], config)
    targets = []
    if a.write_config or state_dir == default_state_dir().resolve():
        targets.append(flint_kubeconfig(os.environ))
    if a.merge_kubeconfig:
        targets.append(kubectl_kubeconfig(os.environ))
    for target in targets:
        try:
            kubeconfig.merge_into(target, config)
        except (OSError, ValueError, yaml.YAMLError) as e:
            print(f"flint up: not merging the context `flint` into {target}: {e}",
                  file=sys.stderr, flush=True)
            continue
        written.append(target)
    return written


async def run(a: argparse.Namespace) -> int:
    state_dir: Path = await asyncio.to_thread(a.state_dir.resolve)
    try:
        tightened = await asyncio.to_thread(ensure_private_dir, state_dir)
    except UnsafeStateDir as e:
        print(f"flint up: {e}", file=sys.stderr, flush=True)
        return 2
    if tightened:
        print(f"flint up: the state dir {state_dir} was readable by other users; tightened "
              f"{tightened} paths to owner-only (0700 directories, 0600 files)",
              file=sys.stderr, flush=True)
    creds, reason = await asyncio.to_thread(
        ensure_credentials, state_dir, [h for h, _ in a.api_listen]
    )
    if reason is not None:
        print(f"flint up: issued the API's TLS certificate ({reason})", file=sys.stderr, flush=True)
    kubeconfigs = await asyncio.to_thread(write_kubeconfigs, a, state_dir, creds)
    token_file = str(token_path(state_dir))
    py = sys.executable
    api = f"http://127.0.0.1:{a.api_port}"
    https = https_url(a.api_tls_port)
    dispatcher_url = f"http://127.0.0.1:{a.dispatcher_port}"
    # status.url names the port users reach: the first --listen address's, else the loopback one.
    url_port = a.listen[0][1] if a.listen else a.port
    controller = Child("controller", [
        py, "-m", "controller", "--state-dir", str(state_dir), "--api-port", str(a.api_port),
        "--api-tls-port", str(a.api_tls_port),
        *[arg for h, p in a.api_listen for arg in ("--api-listen", format_hostport(h, p))],
        "--gateway-port", str(url_port), "--domain", a.domain, "--dispatcher-url", dispatcher_url,
        "--progress-deadline", str(a.progress_deadline),
        *(["--config", a.config] if a.config else []),
        *[arg for kv in a.autoscaler for arg in ("--autoscaler", kv)],
        *[arg for kv in a.gc for arg in ("--gc", kv)],
        *[arg for kv in a.network for arg in ("--network", kv)],
    ])
    gateway = Child("gateway", [
        py, "-m", "gateway", "--port", str(a.port), "--admin-port", str(a.admin_port),
        *[arg for h, p in a.listen for arg in ("--listen", format_hostport(h, p))],
        "--workers", str(a.workers), "--controller", api, "--state-dir", str(state_dir),
        "--domain", a.domain, "--token-file", token_file,
    ])
    dispatcher = Child("dispatcher", [
        py, "-m", "controller.eventing", "--state-dir", str(state_dir), "--controller", api,
        "--gateway", f"http://127.0.0.1:{a.port}",
        *[arg for d in getattr(a, "route_domains", (a.domain,)) for arg in ("--domain", d)],
        "--admin-port", str(a.dispatcher_port), "--token-file", token_file,
    ])
    redis: RedisSettings | None = a.redis_settings
    sup = Supervisor([controller, gateway, dispatcher], state_dir,
                     env=redis.env() if redis is not None else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchers: list[asyncio.Task[None]] = []
    try:
        for child in sup.children:
            await sup.spawn(child)
            watchers.append(asyncio.create_task(sup.watch(child)))
        ok = (
            await wait_http(api + "/healthz", 30)
            and await wait_http(f"http://127.0.0.1:{a.admin_port}/healthz", 30)
            and await wait_http(dispatcher_url + "/healthz", 30)
        )
        if not ok:
            print("flint up: the controller, the gateway or the dispatcher did not start", file=sys.stderr)
            return 1
        public = "".join(f", {format_hostport(h, p)}" for h, p in a.listen)
        print(
            f"Flint is up: gateway http://127.0.0.1:{a.port}{public} (routes at "
            f"http://{{service}}.{{namespace}}.{a.domain}:{url_port}, brokers at "
            f"http://broker-ingress.{a.domain}:{url_port}/{{namespace}}/{{broker}}), API {api} "
            f"and {https}, admin http://127.0.0.1:{a.admin_port}, dispatcher {dispatcher_url}, "
            f"state {state_dir}",
            flush=True,
        )
        print(f"kubeconfig: {', '.join(map(str, kubeconfigs))} (context flint; e.g. kubectl "
              f"--kubeconfig {kubeconfigs[0]} get ksvc)", flush=True)
        if a.apply:
            endpoint = Endpoint(api, creds.token, source="flint up")
            code = await apply_and_report(endpoint, a.apply, a.wait_timeout)
            if code != 0:
                print("flint up: applying the manifests failed (Flint keeps running)",
                      file=sys.stderr, flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        await stop.wait()
        return 0
    finally:
        print("flint up: stopping", file=sys.stderr, flush=True)
        for w in watchers:
            w.cancel()
        await sup.stop()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flint up", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", type=Path, default=default_state_dir(),
                   help="state directory (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    p.add_argument("--listen", action="append", default=[], metavar="ADDR[:PORT]",
                   help="also serve routes and the broker ingress on this address, e.g. "
                   "0.0.0.0:80 or [::]:8080 (repeatable; the port defaults to --port; status.url "
                   "carries the first one's port). The loopback listener on --port stays")
    p.add_argument("--api-port", type=int, default=8081,
                   help="plain-HTTP API port, on 127.0.0.1 only (default 8081)")
    p.add_argument("--api-tls-port", type=int, default=8443,
                   help="HTTPS API port, the kubeconfig's (default 8443)")
    p.add_argument("--api-listen", action="append", default=[], metavar="ADDR[:PORT]",
                   help="also serve the API over HTTPS on this address (repeatable; the port "
                   "defaults to --api-tls-port; the certificate names it)")
    p.add_argument("--write-config", action="store_true",
                   help="merge this state dir's context `flint` into ${FLINT_KUBECONFIG:-~/.config/"
                   "flint/kubeconfig} (done anyway for the default state dir)")
    p.add_argument("--merge-kubeconfig", action="store_true",
                   help="also merge the context `flint` into kubectl's own kubeconfig "
                   "($KUBECONFIG's first file or ~/.kube/config) and make it current")
    p.add_argument("--admin-port", type=int, default=8082, help="gateway admin port (default 8082)")
    p.add_argument("--dispatcher-port", type=int, default=8083,
                   help="event dispatcher admin port: /metrics, dead letters (default 8083)")
    p.add_argument("--domain", default="localhost", help="route domain (default localhost)")
    p.add_argument("--workers", type=int, default=1, help="gateway worker processes (default 1)")
    p.add_argument("--progress-deadline", type=float, default=600.0,
                   help="seconds a new revision may take to become ready (default 600)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML settings file (an `autoscaler:` map of Knative config-autoscaler keys)")
    p.add_argument("--autoscaler", action="append", default=[], metavar="KEY=VALUE",
                   help="an autoscaler setting, e.g. stable-window=6s or scale-to-zero-grace-period=0s; "
                   "may go below Knative's minimums for tests and benchmarks (repeatable)")
    p.add_argument("--gc", action="append", default=[], metavar="KEY=VALUE",
                   help="a revision GC setting (Knative config-gc), e.g. max-non-active-revisions=5")
    p.add_argument("--network", action="append", default=[], metavar="KEY=VALUE",
                   help="a Knative config-network setting: rollout-duration=120s moves latestRevision "
                   "traffic to a new revision gradually over that time (default 0s: at once)")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="the Redis for shared brokers and channels (coming): redis://[user@]host"
                   "[:port][/db] or rediss://… (TLS); never with a password (ps shows command "
                   f"lines): use --redis-password-file. Default: ${redis_config.ENV_URL}, else "
                   "the settings file's `redis: {url: …}`")
    p.add_argument(redis_config.PASSWORD_FLAG, default=None, metavar="FILE",
                   help="a file only you can read (0600) holding the Redis password")
    p.add_argument("--apply", action="append", default=[], metavar="FILE",
                   help="apply this manifest once up and print the URLs of its services")
    p.add_argument("--wait-timeout", type=float, default=300.0,
                   help="seconds to wait for applied services to become Ready")
    cluster = p.add_argument_group("a cluster (refused: flint up runs Flint on this machine)")
    cluster.add_argument("--kubeconfig", default=None, metavar="PATH", help=argparse.SUPPRESS)
    cluster.add_argument("--context", default=None, metavar="NAME", help=argparse.SUPPRESS)
    cluster.add_argument("--engine", default="embedded", metavar="ENGINE", help=argparse.SUPPRESS)
    return p


ON_A_CLUSTER = (
    "flint up runs Flint on this machine (the embedded engine); it does not run against a "
    "cluster. To run Flint on Kubernetes, install it there with `kubectl apply -k deploy/` "
    "(README: Install on Kubernetes), then use the other flint commands with --kubeconfig/"
    "--context, and `flint export` to move what you made here")


def cluster_refusal(a: argparse.Namespace) -> str | None:
    """Why `flint up` will not run with these flags (a kubeconfig, a context, another engine)."""
    given = [f"--{name}" for name in ("kubeconfig", "context") if getattr(a, name)]
    if a.engine != "embedded":
        given.append(f"--engine {a.engine}")
    return f"{', '.join(given)}: {ON_A_CLUSTER}" if given else None


def redis_settings(a: argparse.Namespace, env: Mapping[str, str]) -> RedisSettings | None:
    """The Redis settings: `--redis`/`--redis-password-file`, else `FLINT_REDIS_*`, else the
    settings file's `redis:` map; the password file read and checked. Blocking: file I/O."""
    config: object = None
    if a.config:
        with open(a.config, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    return redis_config.resolve(
        url=a.redis, password_file=a.redis_password_file, env=env,
        config=config if isinstance(config, dict) else None,
        base_dir=Path(a.config).parent if a.config else None)


def route_domains(a: argparse.Namespace) -> tuple[str, ...]:
    """Every route domain: `--domain` and the settings file's `domain:` section (Knative's
    config-domain), for the dispatcher, which sends their URLs through the gateway. Blocking."""
    config: object = None
    if a.config:
        with open(a.config, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    section = config.get("domain") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        return (a.domain,)
    return parse_config_domain(section, a.domain).domains


def main(argv: list[str]) -> int:
    # FLINT_BLOCKBUSTER=1 (its children inherit it): blocking calls on the loop are logged and raise.
    guards.enable_from_env()
    private_umask()
    p = parser()
    a = p.parse_args(argv)
    if (refused := cluster_refusal(a)) is not None:
        p.error(refused)
    try:
        a.listen = list(dict.fromkeys(parse_listen(v, a.port) for v in a.listen))
        a.api_listen = list(dict.fromkeys(parse_listen(v, a.api_tls_port) for v in a.api_listen))
    except ValueError as exc:
        p.error(str(exc))
    if a.config:
        a.config = os.path.abspath(a.config)  # the controller runs with another working directory
    try:
        a.redis_settings = redis_settings(a, os.environ)
        a.route_domains = route_domains(a)
    except (RedisConfigError, OSError, ValueError, yaml.YAMLError) as exc:
        p.error(str(exc))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(a))
