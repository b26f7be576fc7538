"""A real `redis-server` for the tests: on a free loopback port, its data in a temp dir, in the
foreground (no daemonize, no systemd), answered PING before the test starts, stopped and reaped
after it.

Fixtures (tests/integration/conftest.py imports them):

- `redis_server`: one per module, append-only file on (`appendonly yes`, `save ""`);
- `redis_servers`: a factory for others, e.g. `redis_servers(appendonly=False)` or
  `redis_servers(password="…")`, each stopped when the test ends;
- `redis_client`: a `redis.asyncio` client of `redis_server` (Flint's `redis_conn.client`), whose
  database is flushed after the test.

`kill_redis(server)` SIGKILLs one (a crash: what its append-only file holds survives) and
`restart_redis(server)` starts it again in place: the same port, config and data dir (it loads
its AOF), waiting for PING; the fixtures stop the restarted process at the end.

Without `redis-server` installed the tests that need it skip, saying so, except in CI
(`CI=true`), where they fail: `.ci/run` installs it (Debian's `redis-server` package).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from flint_common import redis_conn
from flint_common.lifetime import die_with_parent
from flint_common.redis_config import RedisSettings
from loadtests.flint_process import free_port

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


@dataclass
class RedisServer:
    proc: subprocess.Popen[bytes]
    port: int
    dir: Path
    appendonly: bool
    password: str | None = None
    log_path: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        """The URL Flint is given: never with the password (that goes in a file)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=5, decode_responses=True)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def redis_server_binary() -> str:
    """The path of `redis-server`; skips the test when it is missing, but fails it in CI."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("redis-server is not installed; in CI it must be (.ci/run installs Debian's "
                    "redis-server package)", pytrace=False)
    pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")


def start_redis(workdir: Path, *, appendonly: bool = True, password: str | None = None,
                timeout_s: float = START_TIMEOUT_S, port: int | None = None) -> RedisServer:
    """Start `redis-server` on a free loopback port (or `port`: a restart of a stopped one) with
    its data in `workdir`; return once it answers PING. A password goes in its 0600 config
    file, never on its command line."""
    binary = redis_server_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "redis.conf"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        if password is not None:
            f.write(f"requirepass {password}\n")
    log_path = workdir / "redis.log"
    port = free_port() if port is None else port
    argv = [binary, str(config), "--port", str(port), "--bind", "127.0.0.1",
            "--daemonize", "no", "--appendonly", "yes" if appendonly else "no", "--save", "",
            "--dir", str(workdir), "--logfile", str(log_path)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    server = RedisServer(proc, port, workdir, appendonly, password, log_path)
    client = server.client()
    end = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"redis-server exited {proc.returncode}:\n{server.logs()}")
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if client.ping():
                    return server
            if time.monotonic() >= end:
                raise AssertionError(f"redis-server did not answer PING within {timeout_s:g} s:\n"
                                     f"{server.logs()}")
            time.sleep(0.02)
    except BaseException:
        stop_redis(server)
        raise
    finally:
        client.close()


def stop_redis(server: RedisServer) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; reaped either way."""
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def kill_redis(server: RedisServer) -> None:
    """SIGKILL it, as a crash would, and reap it."""
    if server.proc.poll() is None:
        server.proc.kill()
    server.proc.wait()


def restart_redis(server: RedisServer, *, timeout_s: float = START_TIMEOUT_S) -> RedisServer:
    """Start a stopped or killed `server` again, in place (`server.proc` is the new process): the
    same port, password and data dir, so it loads its append-only file; return it once it
    answers PING. Another process may take the port meanwhile: tried again until `timeout_s`."""
    if server.proc.poll() is None:
        raise AssertionError(f"redis-server on port {server.port} is still running")
    end = time.monotonic() + timeout_s
    while True:
        try:
            again = start_redis(server.dir, appendonly=server.appendonly, password=server.password,
                                timeout_s=max(1.0, end - time.monotonic()), port=server.port)
        except AssertionError:
            if time.monotonic() >= end:
                raise
            time.sleep(0.2)
            continue
        server.proc = again.proc
        return server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server with its append-only file on, for the module."""
    with tempfile.TemporaryDirectory(prefix="flint-redis-") as tmp:
        server = start_redis(Path(tmp))
        try:
            yield server
        finally:
            stop_redis(server)


@pytest.fixture
def redis_servers() -> Iterator[Callable[..., RedisServer]]:
    """`redis_servers(appendonly=False, password=None)` starts another one, stopped at the end."""
    started: list[RedisServer] = []
    with tempfile.TemporaryDirectory(prefix="flint-redis-") as tmp:

        def start(*, appendonly: bool = True, password: str | None = None) -> RedisServer:
            server = start_redis(Path(tmp) / str(len(started)), appendonly=appendonly,
                                 password=password)
            started.append(server)
            return server

        try:
            yield start
        finally:
            for server in started:
                stop_redis(server)


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the module's redis-server; its database is flushed after the test."""
    made = redis_conn.client(RedisSettings(url=redis_server.url))
    try:
        yield made
    finally:
        await made.flushdb()
        await made.aclose()
