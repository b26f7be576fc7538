"""nginx for the side-by-side benchmark: the `return 200` upstream and the reverse proxy.

Each nginx runs in the foreground (`daemon off`) from its own prefix directory inside the
benchmark's temporary directory, so its command line names that directory (the reaper finds it)
and its master's children are its workers. Config generation is pure (unit-tested).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from flint_common.lifetime import die_with_parent
from loadtests import procs

NGINX = "nginx"


def _common(prefix: Path, workers: int) -> str:
    return (
        "daemon off;\n"
        "master_process on;\n"
        f"worker_processes {workers};\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
    )


def _http_head(prefix: Path) -> str:
    temp = prefix / "tmp"
    return (
        "    access_log off;\n"
        f"    client_body_temp_path {temp / 'body'};\n"
        f"    proxy_temp_path {temp / 'proxy'};\n"
        f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
        f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
        f"    scgi_temp_path {temp / 'scgi'};\n"
        "    keepalive_requests 1000000;\n"
        "    keepalive_timeout 75s;\n"
    )


def upstream_config(prefix: Path, port: int) -> str:
    """nginx answering every request with an empty `200` (one worker): the upstream under test."""
    return (
        _common(prefix, 1)
        + "http {\n"
        + _http_head(prefix)
        + "    server {\n"
        f"        listen 127.0.0.1:{port} reuseport backlog=4096;\n"
        "        location / { return 200; }\n"
        "    }\n"
        "}\n"
    )


def proxy_config(prefix: Path, port: int, upstream_port: int, workers: int = 1) -> str:
    """nginx as a reverse proxy to `upstream_port` with upstream keep-alive (HTTP/1.1, no
    `Connection: close`), `workers` workers: the reference the gateway is compared with."""
    return (
        _common(prefix, workers)
        + "http {\n"
        + _http_head(prefix)
        + "    upstream backend {\n"
        f"        server 127.0.0.1:{upstream_port};\n"
        "        keepalive 64;\n"
        "        keepalive_requests 1000000;\n"
        "    }\n"
        "    server {\n"
        f"        listen 127.0.0.1:{port} reuseport backlog=4096;\n"
        "        location / {\n"
        "            proxy_pass http://backend;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_set_header Host $host;\n"
        "        }\n"
        "    }\n"
        "}\n"
    )


@dataclass
class Nginx:
    """One running nginx (master in the foreground; its children are the workers)."""

    proc: subprocess.Popen[bytes]
    prefix: Path
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def error_log(self) -> str:
        try:
            return (self.prefix / "error.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def available() -> bool:
    return shutil.which(NGINX) is not None


def start(prefix: Path, config: str, port: int) -> Nginx:
    """Write `config` under `prefix` and start nginx on it (the caller waits for the port)."""
    for sub in ("tmp", "logs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    log = (prefix / "stdout.log").open("wb")
    try:
        proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=die_with_parent)
    finally:
        log.close()
    return Nginx(proc, prefix, port)


def stop(n: Nginx) -> bool:
    """Fast shutdown (SIGTERM), SIGKILL of the group on timeout; True when it stopped cleanly."""
    return procs.stop(n.proc, sig=signal.SIGTERM, timeout_s=10)
