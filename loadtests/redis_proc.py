"""A private `redis-server` for the benchmarks: a free loopback port, its data in a directory of
ours, in the foreground (no daemonize), with its append-only file on (`appendonly yes`,
`appendfsync everysec`: Redis's default and what a durable Flint deployment runs), stopped and
reaped by `stop`. Blocking: call it from plain threads."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from flint_common.lifetime import die_with_parent
from loadtests import procs
from loadtests.flint_process import FlintError, free_port

START_TIMEOUT_S = 15.0


@dataclass
class RedisProc:
    proc: subprocess.Popen[bytes]
    port: int
    dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def logs(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "redis.log").read_text(errors="replace")[-3000:]
        return ""


def available() -> bool:
    return shutil.which("redis-server") is not None


def start(workdir: Path, *, appendonly: bool = True) -> RedisProc:
    """Start it on a free loopback port with its data in `workdir`; return once it answers PING."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise FlintError("redis-server is not installed (Debian: apt-get install redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no",
            "--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec",
            "--save", "", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    server = RedisProc(proc, port, workdir)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    end = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                raise FlintError(f"redis-server exited {proc.returncode}:\n{server.logs()}")
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if client.ping():
                    return server
            if time.monotonic() >= end:
                raise FlintError(f"redis-server did not answer PING within {START_TIMEOUT_S:g} s")
            time.sleep(0.02)
    except BaseException:
        stop(server)
        raise
    finally:
        client.close()


def stop(server: RedisProc, timeout_s: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout_s`; reaped either way. True when it stopped on SIGTERM."""
    import signal

    return procs.stop(server.proc, sig=signal.SIGTERM, timeout_s=timeout_s)
