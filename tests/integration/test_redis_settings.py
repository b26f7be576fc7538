"""`flint up --redis URL --redis-password-file FILE` against a real redis-server that wants a
password: every process that needs Redis connects once and logs it, and the password is in no
command line, no environment and no log."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
from support.harness import BIN, Flint, poll, start_flint, stop_flint
from support.redis_server import RedisServer

PASSWORD = "redis-pw-7f3a9c-never-shown"


def _password_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "redis-password"
    path.write_text(PASSWORD + "\n")
    os.chmod(path, mode)
    return path


def _logged(f: Flint, line: str) -> Callable[[], bool]:
    return lambda: line in f.logs(None)


def _flint_pids(f: Flint) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if str(f.state_dir) in " ".join(p.info["cmdline"] or [])]


def test_flint_up_connects_and_never_shows_the_password(
        redis_servers: Callable[..., RedisServer], tmp_path: Path) -> None:
    server = redis_servers(password=PASSWORD)
    path = _password_file(tmp_path)
    f = start_flint(tmp_path / "flint", "--redis", server.url, "--redis-password-file", str(path))
    try:
        for role in ("controller", "gateway", "dispatcher"):
            line = f"event=redis_connected role={role} url={server.url} durable=True"
            poll(_logged(f, line), 30, f"the {role}'s redis_connected line")
        args = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True,
                              timeout=30).stdout
        assert PASSWORD not in args
        listed = [line for line in args.splitlines() if str(f.state_dir) in line]
        assert any("-m gateway" in line for line in listed), listed  # ps did list Flint
        pids = _flint_pids(f)
        assert len(pids) >= 4, pids  # flint up, the controller, the gateway (and a worker), the dispatcher
        for pid in pids:
            with open(f"/proc/{pid}/environ", "rb") as env:
                environ = env.read()
            assert PASSWORD.encode() not in environ, f"the password is in pid {pid}'s environment"
            if pid != f.proc.pid:
                assert f"FLINT_REDIS_PASSWORD_FILE={path}".encode() in environ, pid
    finally:
        stop_flint(f)
    logs = (f.log_path, *f.state_dir.rglob("*.log"))
    assert not [str(p) for p in logs if PASSWORD in p.read_text(errors="replace")]
    assert "redis_unreachable" not in f.logs(None)


def _refused(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "flint"), "up", "--state-dir", str(tmp_path / "state"), *args],
                          capture_output=True, text=True, timeout=30)


def test_flint_up_refuses_a_password_in_the_url(tmp_path: Path) -> None:
    done = _refused(tmp_path, "--redis", f"redis://:{PASSWORD}@127.0.0.1:6379/0")
    assert done.returncode == 2, done
    assert "--redis-password-file" in done.stderr and "redis://:***@127.0.0.1:6379/0" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
    assert not (tmp_path / "state").exists()  # refused before anything started


def test_flint_up_refuses_a_password_file_others_may_read(tmp_path: Path) -> None:
    path = _password_file(tmp_path, 0o644)
    done = _refused(tmp_path, "--redis", "rediss://127.0.0.1:6380/2", "--redis-password-file", str(path))
    assert done.returncode == 2, done
    assert "chmod 600" in done.stderr and PASSWORD not in done.stderr + done.stdout


def test_without_a_redis_url_nothing_connects(flint: Flint) -> None:
    assert "redis" not in f"{flint.logs(None)}".lower()
