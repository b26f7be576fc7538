"""The local runtime with real processes on loopback: readiness, crashes, probes, limits,
process-group hygiene and re-adoption after the runtime dies."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import aiohttp
import psutil
import pytest
import uvloop

from controller.runtime import process, records
from controller.runtime.base import Probe, ReplicaSpec, ReplicaStatus
from controller.runtime.local import LocalRuntime, StateDirBusy
from controller.runtime.local_settings import LocalRuntimeSettings
from controller.runtime.process import find_by_replica_id

APPS = Path(__file__).resolve().parent.parent / "apps"
REPO = APPS.parent.parent

FAST = LocalRuntimeSettings(
    backoff_initial_s=0.05,
    backoff_max_s=0.4,
    ready_probe_period_s=0.05,
    listen_timeout_s=0.3,
    stop_grace_s=2.0,
)


async def wait_for(
    pred: Callable[[], object], within_s: float = 10.0, what: str = "", *, in_thread: bool = False
) -> None:
    """Poll `pred` until true, failing after `within_s` seconds; `in_thread`: `pred` blocks (it
    calls the runtime's /proc helpers), so it runs in a thread."""
    deadline = time.monotonic() + within_s
    while not (await asyncio.to_thread(pred) if in_thread else pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.01)


def alive(pid: int | None) -> bool:
    # psutil directly, not the runtime's `is_alive` (nor flint_common.procinfo under it): an
    # independent oracle, and test code may read /proc on the loop (the runtime may not).
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def spec(
    control: Path,
    *args: str,
    revision: str = "hello-00001",
    readiness: Probe | None = None,
    liveness: Probe | None = None,
    memory_limit_bytes: int | None = None,
) -> ReplicaSpec:
    return ReplicaSpec(
        namespace="default",
        revision=revision,
        service="hello",
        configuration="hello",
        image_dir=APPS,
        command=(sys.executable, "httpapp.py", *args),
        env={"CONTROL_DIR": str(control), "GREETING": "hi"},
        readiness=readiness or Probe(),
        liveness=liveness,
        memory_limit_bytes=memory_limit_bytes,
    )


class Harness:
    def __init__(self, rt: LocalRuntime, control: Path) -> None:
        self.rt = rt
        self.control = control
        self.events: list[ReplicaStatus] = []
        rt.subscribe(self.events.append)

    def status(self, rid: str) -> ReplicaStatus:
        st = self.rt.replica(rid)
        assert st is not None
        return st

    async def wait_state(self, rid: str, state: str, within_s: float = 10.0) -> ReplicaStatus:
        await wait_for(lambda: self.status(rid).state == state, within_s, f"{rid} {state}")
        return self.status(rid)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    control = tmp_path / "control"
    control.mkdir()
    rt = LocalRuntime(tmp_path / "state", settings=FAST)
    await rt.start()
    harness = Harness(rt, control)
    try:
        yield harness
    finally:
        await rt.close(stop_replicas=True)


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


# ---------------------------------------------------------------------------- basics


def check_private_dirs_and_path(env: dict[str, str], state: Path, venv_bin: str) -> None:
    assert os.path.isdir(env["HOME"]) and Path(env["HOME"]).is_relative_to(state)
    assert os.path.isdir(env["TMPDIR"]) and Path(env["TMPDIR"]).is_relative_to(state)
    assert env["HOME"] != env["TMPDIR"]
    path_entries = env["PATH"].split(os.pathsep)
    assert venv_bin not in path_entries
    venv = os.path.realpath(sys.prefix)
    assert not any(os.path.realpath(p).startswith(venv + os.sep) for p in path_entries)


async def test_ready_env_and_logs(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = str(Path(sys.prefix) / "bin")
    monkeypatch.setenv("PATH", venv_bin + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("FLINT_SECRET", "must-not-leak")
    st = await h.rt.start_replica(spec(h.control))
    assert st.state == "starting" and st.pid is not None
    assert FAST.port_min <= st.port <= FAST.port_max
    st = await h.wait_state(st.id, "ready")
    assert [e.state for e in h.events if e.id == st.id][-1] == "ready"
    assert "starting" in [e.state for e in h.events if e.id == st.id]

    code, body = await get(st.port, "/env")
    assert code == 200
    env = json.loads(body)
    assert env["PORT"] == str(st.port)
    assert env["K_SERVICE"] == "hello"
    assert env["K_CONFIGURATION"] == "hello"
    assert env["K_REVISION"] == "hello-00001"
    assert env["GREETING"] == "hi"
    assert env["LANG"] == env["LC_ALL"] == "C.UTF-8"
    assert env["FLINT_REPLICA_ID"] == st.id
    assert "FLINT_SECRET" not in env and "VIRTUAL_ENV" not in env
    state = h.rt.state_dir
    check_private_dirs_and_path(env, state, venv_bin)

    # The process runs in its own session / process group.
    assert st.pid is not None
    assert os.getpgid(st.pid) == st.pid
    assert os.getsid(st.pid) == st.pid

    logs = await asyncio.to_thread(h.rt.log_paths, "default/hello-00001")
    assert logs == [state / "logs" / "default" / "hello-00001" / f"{st.id}.log"]
    assert await h.rt.alog_paths("default/hello-00001") == logs
    assert await h.rt.alog_paths("default/no-such-revision") == []
    await wait_for(lambda: "listening on" in logs[0].read_text(), what="log line")
    record = json.loads((state / "replicas" / f"{st.id}.json").read_text())
    assert record["pid"] == st.pid and record["port"] == st.port
    assert record["start_time"] > 0 and record["revision_key"] == "default/hello-00001"
    assert record["state"] == "running"
    assert h.rt.replicas("default/hello-00001")[0].id == st.id
    assert h.rt.replicas("default/other") == []

    await h.rt.stop_replica(st.id, grace_s=2)
    assert not alive(st.pid)
    assert h.rt.replicas() == []
    assert not (state / "replicas" / f"{st.id}.json").exists()
    assert not (state / "sandbox" / st.id).exists()
    assert h.events[-1].state == "stopped"
    assert logs[0].exists()  # logs outlive the replica


async def test_working_dir_and_relative_program(h: Harness, tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "bin").mkdir(parents=True)
    script = image / "bin" / "serve.sh"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} {APPS / "httpapp.py"} "$@"\n')
    script.chmod(0o755)
    s = ReplicaSpec(
        namespace="default",
        revision="wd-00001",
        service="wd",
        configuration="wd",
        image_dir=image,
        command=("./serve.sh",),
        working_dir="bin",
        env={"CONTROL_DIR": str(h.control)},
    )
    st = await h.rt.start_replica(s)
    await h.wait_state(st.id, "ready")


async def test_missing_executable_fails(h: Harness) -> None:
    s = dataclasses.replace(spec(h.control), command=("no-such-program-flint",))
    st = await h.rt.start_replica(s)
    assert st.state == "failed"
    assert "not found" in st.message


# ---------------------------------------------------------------------------- failures


async def test_crash_restarts_with_backoff_and_log_tail(h: Harness) -> None:
    st = await h.rt.start_replica(spec(h.control, "--exit-code", "3"))
    crashed = await h.wait_state(st.id, "crashed")
    assert crashed.last_exit_code == 3
    assert crashed.message.startswith("exit code 3")
    assert "boom: giving up" in crashed.message
    assert "log line 29" in crashed.message
    assert "log line 9\n" not in crashed.message  # only the last 20 lines
    assert crashed.pid is None
    await wait_for(lambda: h.status(st.id).restarts >= 3, what="restarts")
    # Backoff doubles: the gaps between consecutive spawns grow.
    starts = [e.started_at for e in h.events if e.id == st.id and e.state == "starting"]
    starts = sorted(set(starts))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) >= 2 and gaps[1] > gaps[0]
    assert all(g >= FAST.backoff_initial_s * 0.9 for g in gaps)


async def test_never_listening_app_gets_a_message(h: Harness) -> None:
    st = await h.rt.start_replica(spec(h.control, "--no-listen"))
    await wait_for(lambda: "has not listened" in h.status(st.id).message, what="message")
    s = h.status(st.id)
    assert s.state == "starting"
    assert f"$PORT ({s.port})" in s.message
    assert "it must listen on the port in the PORT environment variable" in s.message


async def test_http_readiness(h: Harness) -> None:
    (h.control / "unready").touch()
    probe = Probe(kind="http", path="/ready", failure_threshold=2)
    st = await h.rt.start_replica(spec(h.control, readiness=probe))
    await wait_for(lambda: "readiness probe has not passed" in h.status(st.id).message)
    assert "returned 503" in h.status(st.id).message
    assert h.status(st.id).state == "starting"
    (h.control / "unready").unlink()
    await h.wait_state(st.id, "ready")
    assert h.status(st.id).message == ""
    (h.control / "unready").touch()
    unhealthy = await h.wait_state(st.id, "unhealthy")
    assert "503" in unhealthy.message
    (h.control / "unready").unlink()
    await h.wait_state(st.id, "ready")
    assert h.status(st.id).restarts == 0


async def test_liveness_failure_restarts(h: Harness) -> None:
    probe = Probe(kind="http", path="/live", failure_threshold=2)
    st = await h.rt.start_replica(spec(h.control, liveness=probe))
    st = await h.wait_state(st.id, "ready")
    first_pid = st.pid
    assert first_pid is not None
    (h.control / "dead").touch()
    await wait_for(lambda: h.status(st.id).restarts >= 1, what="restart")
    crash = next(e for e in h.events if e.id == st.id and e.state == "crashed")
    assert "liveness probe failed" in crash.message
    assert crash.last_exit_code == 137
    assert not alive(first_pid)
    (h.control / "dead").unlink()
    await h.wait_state(st.id, "ready")
    assert h.status(st.id).pid != first_pid


async def test_memory_limit_enforced(h: Harness) -> None:
    limit = 256 * 1024 * 1024
    st = await h.rt.start_replica(
        spec(h.control, "--alloc", str(2 * limit), memory_limit_bytes=limit)
    )
    crashed = await h.wait_state(st.id, "crashed")
    assert "MemoryError" in crashed.message
    assert "memory limit" in crashed.message
    assert crashed.last_exit_code == 1
    # Within the limit, the same allocation works.
    ok = await h.rt.start_replica(
        spec(h.control, "--alloc", str(limit // 4), memory_limit_bytes=limit)
    )
    await h.wait_state(ok.id, "ready")


async def test_stop_in_any_state_leaves_no_record(h: Harness) -> None:
    crashing = await h.rt.start_replica(spec(h.control, "--exit-code", "2"))
    await h.wait_state(crashing.id, "crashed")
    await h.rt.stop_replica(crashing.id)  # during the backoff: no process
    starting = await h.rt.start_replica(spec(h.control, "--no-listen"))
    await h.rt.stop_replica(starting.id, grace_s=1)  # right after the spawn
    await h.rt.stop_replica("no-such-replica")  # unknown ids are ignored
    assert not alive(starting.pid)
    assert h.rt.replicas() == []
    assert list((h.rt.state_dir / "replicas").iterdir()) == []
    assert {e.state for e in h.events if e.id == starting.id} >= {"stopping", "stopped"}


# ---------------------------------------------------------------------------- process groups


async def test_stop_kills_grandchildren(h: Harness) -> None:
    st = await h.rt.start_replica(spec(h.control, "--fork", "--ignore-term"))
    st = await h.wait_state(st.id, "ready")
    gc_file = h.control / "grandchild.pid"
    await wait_for(gc_file.exists, what="grandchild pid")
    grandchild = int(gc_file.read_text())
    assert alive(grandchild) and os.getpgid(grandchild) == st.pid
    await h.rt.stop_replica(st.id, grace_s=0.3)
    # Both ignore SIGTERM: after the grace the group got SIGKILL (exit code 128 + 9).
    [stopped] = [e for e in h.events if e.id == st.id and e.state == "stopped"]
    assert stopped.last_exit_code == 128 + signal.SIGKILL
    assert not alive(grandchild)
    assert not alive(st.pid)


async def test_close_leaves_nothing_behind(tmp_path: Path) -> None:
    control = tmp_path / "control"
    control.mkdir()
    rt = LocalRuntime(tmp_path / "state", settings=FAST)
    h = Harness(rt, control)
    sts = [await rt.start_replica(spec(control, "--fork")) for _ in range(2)]
    sts.append(await rt.start_replica(spec(control, revision="other-00001")))
    for st in sts:
        await h.wait_state(st.id, "ready")
    grandchild = int((control / "grandchild.pid").read_text())
    pids = [st.pid for st in sts]
    await rt.close(stop_replicas=True)
    assert not any(alive(p) for p in pids if p is not None)
    assert not alive(grandchild)
    assert list((tmp_path / "state" / "replicas").iterdir()) == []
    assert rt.replicas() == []


# ---------------------------------------------------------------------------- re-adoption


def app_pids(tag: str) -> list[int]:
    """Live processes whose command line carries `tag`."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if tag.encode() in cmd and alive(int(name)):
            out.append(int(name))
    return out


async def test_readopt_after_close_without_stopping(tmp_path: Path) -> None:
    control = tmp_path / "control"
    control.mkdir()
    state = tmp_path / "state"
    tag = uuid.uuid4().hex
    rt1 = LocalRuntime(state, settings=FAST)
    h1 = Harness(rt1, control)
    st = await rt1.start_replica(spec(control, "--tag", tag))
    st = await h1.wait_state(st.id, "ready")
    rt_busy = LocalRuntime(state, settings=FAST)
    with pytest.raises(StateDirBusy):
        await rt_busy.start()
    await rt1.close(stop_replicas=False)
    assert alive(st.pid)
    assert (await get(st.port, "/"))[0] == 200

    rt2 = LocalRuntime(state, settings=FAST)
    h2 = Harness(rt2, control)
    try:
        await rt2.start()
        again = await h2.wait_state(st.id, "ready")
        assert again.pid == st.pid and again.port == st.port and again.restarts == 0
        assert app_pids(tag) == [st.pid]
        # The adopted process is supervised: killing it restarts it (crash semantics).
        assert st.pid is not None
        os.kill(st.pid, signal.SIGKILL)
        await wait_for(lambda: h2.status(st.id).restarts == 1, what="restart")
        await h2.wait_state(st.id, "ready")
        assert len(app_pids(tag)) == 1
    finally:
        await rt2.close(stop_replicas=True)
    assert app_pids(tag) == []


def _host_runtime(state: Path, tag: str) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """Run a runtime in a child process; return it once its replica is ready (blocking)."""
    host = subprocess.Popen(
        [
            sys.executable,
            str(APPS / "runtime_host.py"),
            str(state),
            str(APPS),
            sys.executable,
            "httpapp.py",
            "--tag",
            tag,
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert host.stdout is not None
    line = host.stdout.readline()
    host.stdout.close()
    assert line, "the runtime host died"
    result: dict[str, int] = json.loads(line)
    return host, result


async def test_readopt_after_runtime_sigkill_no_duplicates(tmp_path: Path) -> None:
    state = tmp_path / "state"
    tag = uuid.uuid4().hex
    host, info = await asyncio.to_thread(_host_runtime, state, tag)
    host.kill()  # the runtime dies without any cleanup
    host.wait()
    assert alive(info["pid"])
    assert app_pids(tag) == [info["pid"]]

    rt = LocalRuntime(state, settings=FAST)
    h = Harness(rt, tmp_path)
    try:
        await rt.start()
        st = await h.wait_state(str(info["id"]), "ready")
        assert st.pid == info["pid"] and st.restarts == 0
        # A second start is a no-op; nothing was spawned.
        await rt.start()
        assert app_pids(tag) == [info["pid"]]
        assert len(rt.replicas()) == 1
    finally:
        await rt.close(stop_replicas=True)
    assert app_pids(tag) == []


async def test_dead_replica_is_restarted_on_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    tag = uuid.uuid4().hex
    host, info = await asyncio.to_thread(_host_runtime, state, tag)
    host.kill()
    host.wait()
    os.kill(info["pid"], signal.SIGKILL)
    await wait_for(lambda: not alive(info["pid"]), what="replica death")

    rt = LocalRuntime(state, settings=FAST)
    h = Harness(rt, tmp_path)
    try:
        await rt.start()
        st = await h.wait_state(str(info["id"]), "ready")
        assert st.pid != info["pid"] and st.restarts == 1
        crashed = [e for e in h.events if e.state == "crashed"]
        assert crashed and "not running" in crashed[0].message
        assert app_pids(tag) == [st.pid]
    finally:
        await rt.close(stop_replicas=True)
    assert app_pids(tag) == []


# ---------------------------------------------------------------------------- spawn window


async def test_record_is_written_before_the_spawn(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[dict[str, object], str | None]] = []
    real_spawn = process.spawn

    def checking_spawn(
        argv: Sequence[str], cwd: Path, env: Mapping[str, str], log_path: Path,
        executable: str | None = None,
    ) -> process.ProcessHandle:
        rid = log_path.stem
        doc = json.loads((h.rt.records_dir / f"{rid}.json").read_text())
        seen.append((doc, env.get("FLINT_REPLICA_ID")))
        return real_spawn(argv, cwd, env, log_path, executable)

    monkeypatch.setattr(process, "spawn", checking_spawn)
    st = await h.rt.start_replica(spec(h.control))
    (doc, env_id), = seen
    assert doc["state"] == "spawning" and doc["pid"] is None and doc["pgid"] is None
    assert doc["port"] == st.port and doc["id"] == st.id
    assert env_id == st.id
    after = json.loads((h.rt.records_dir / f"{st.id}.json").read_text())
    assert after["state"] == "running" and after["pid"] == st.pid and after["pgid"] == st.pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawning_record(state: Path, control: Path, tag: str, *args: str) -> records.ReplicaRecord:
    """The record a runtime writes just before spawning (as if it was SIGKILLed right after)."""
    rid = f"hello-00001-{uuid.uuid4().hex[:8]}"
    rec = records.ReplicaRecord(
        id=rid,
        spec=spec(control, "--tag", tag, *args),
        host="127.0.0.1",
        port=free_port(),
        log_path=state / "logs" / "default" / "hello-00001" / f"{rid}.log",
        cwd=APPS,
        state="spawning",
    )
    records.write(state / "replicas", rec)
    return rec


def spawn_by_hand(rec: records.ReplicaRecord) -> subprocess.Popen[bytes]:
    """The process that runtime spawned but did not live to record."""
    rec.log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        **rec.spec.env,
        "PORT": str(rec.port),
        "FLINT_REPLICA_ID": rec.id,
    }
    with open(rec.log_path, "ab") as out:
        return subprocess.Popen(
            list(rec.spec.command),
            cwd=rec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


async def test_unrecorded_spawn_is_adopted_not_duplicated(tmp_path: Path) -> None:
    state = tmp_path / "state"
    control = tmp_path / "control"
    control.mkdir()
    tag = uuid.uuid4().hex
    rec = await asyncio.to_thread(spawning_record, state, control, tag)
    assert json.loads((state / "replicas" / f"{rec.id}.json").read_text())["pid"] is None
    proc = spawn_by_hand(rec)
    try:
        await wait_for(lambda: find_by_replica_id(rec.id) == proc.pid, what="env lookup", in_thread=True)
        assert await asyncio.to_thread(find_by_replica_id, "no-such-replica") is None
        rt = LocalRuntime(state, settings=FAST)
        h = Harness(rt, control)
        try:
            await rt.start()
            st = await h.wait_state(rec.id, "ready")
            assert st.pid == proc.pid and st.port == rec.port and st.restarts == 0
            assert app_pids(tag) == [proc.pid]
            assert len(rt.replicas()) == 1
            doc = json.loads((state / "replicas" / f"{rec.id}.json").read_text())
            assert doc["state"] == "running"
            assert doc["pid"] == doc["pgid"] == proc.pid and doc["start_time"] > 0
            assert (await get(st.port, "/"))[0] == 200
        finally:
            await rt.close(stop_replicas=True)
        assert app_pids(tag) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


async def test_unrecorded_spawn_that_never_happened_is_restarted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    control = tmp_path / "control"
    control.mkdir()
    tag = uuid.uuid4().hex
    rec = await asyncio.to_thread(spawning_record, state, control, tag)
    rt = LocalRuntime(state, settings=FAST)
    h = Harness(rt, control)
    try:
        await rt.start()
        st = await h.wait_state(rec.id, "ready")
        crashed = [e for e in h.events if e.state == "crashed"]
        assert crashed and "while starting" in crashed[0].message
        assert app_pids(tag) == [st.pid]
        assert st.restarts == 1
    finally:
        await rt.close(stop_replicas=True)
    assert app_pids(tag) == []


async def test_unrecorded_spawn_whose_main_process_died_leaves_no_orphans(tmp_path: Path) -> None:
    state = tmp_path / "state"
    control = tmp_path / "control"
    control.mkdir()
    tag = uuid.uuid4().hex
    rec = await asyncio.to_thread(spawning_record, state, control, tag, "--fork")
    proc = spawn_by_hand(rec)
    gc_file = control / "grandchild.pid"
    await wait_for(gc_file.exists, what="grandchild pid")
    grandchild = int(gc_file.read_text())
    proc.kill()
    proc.wait(5)
    assert alive(grandchild)
    # Only a child is left, not the main process.
    assert await asyncio.to_thread(find_by_replica_id, rec.id) is None
    gc_file.unlink()
    rt = LocalRuntime(state, settings=FAST)
    h = Harness(rt, control)
    try:
        await rt.start()
        st = await h.wait_state(rec.id, "ready")
        await wait_for(lambda: not alive(grandchild), what="orphan killed")
        assert app_pids(tag) == [st.pid]
    finally:
        await rt.close(stop_replicas=True)
    assert app_pids(tag) == []


# ---------------------------------------------------------------------------- the event loop


async def test_port_allocation_is_off_the_loop_and_unique(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = h.rt._bindable

    def bindable(port: int) -> bool:
        threads.append(threading.current_thread().name)
        time.sleep(0.005)  # widen the window for two allocations to overlap
        return real(port)

    monkeypatch.setattr(h.rt, "_bindable", bindable)
    sts = await asyncio.gather(*(h.rt.start_replica(spec(h.control)) for _ in range(4)))
    assert threads and threading.main_thread().name not in threads
    assert len({st.port for st in sts}) == 4
    for st in sts:
        await h.wait_state(st.id, "ready")


# ---------------------------------------------------------------------------- uvloop


def test_on_uvloop(tmp_path: Path) -> None:
    async def scenario() -> None:
        control = tmp_path / "control"
        control.mkdir()
        rt = LocalRuntime(tmp_path / "state", settings=FAST)
        h = Harness(rt, control)
        ok = await rt.start_replica(spec(control, "--fork"))
        bad = await rt.start_replica(spec(control, "--exit-code", "4"))
        await h.wait_state(ok.id, "ready")
        crashed = await h.wait_state(bad.id, "crashed")
        assert crashed.last_exit_code == 4
        await wait_for(lambda: h.status(bad.id).restarts >= 1, what="restart")
        grandchild = int((control / "grandchild.pid").read_text())
        await rt.close(stop_replicas=True)
        assert not alive(ok.pid) and not alive(grandchild)

    uvloop.run(scenario())
