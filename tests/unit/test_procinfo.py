"""flint_common.procinfo, the one reader of the process table, on real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flint_common import procinfo

# Sets its comm (the name in /proc/PID/stat, in parentheses) to one with spaces and parentheses,
# then says so and sleeps.
_AWKWARD = (
    "import sys, time\n"
    "open('/proc/self/comm', 'w').write('we ird) (x')\n"
    "print('ok', flush=True)\n"
    "time.sleep(60)\n"
)


def _spawn(code: str, env: dict[str, str] | None = None, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        env=env, start_new_session=True,  # its own session: pgid = pid
    )


def _until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def awkward() -> Iterator[subprocess.Popen[bytes]]:
    p = _spawn(_AWKWARD)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"ok\n"
        yield p
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def test_a_process_with_an_awkward_name(awkward: subprocess.Popen[bytes]) -> None:
    st = procinfo.info(awkward.pid)
    assert st is not None
    assert (st.pid, st.pgid, st.zombie) == (awkward.pid, awkward.pid, False)
    assert st.start_ticks > 0 and procinfo.start_ticks(awkward.pid) == st.start_ticks
    assert procinfo.pgid(awkward.pid) == awkward.pid
    assert procinfo.group_members(awkward.pid) == [awkward.pid]
    assert procinfo.cmdline(awkward.pid)[:2] == [sys.executable, "-c"]
    assert awkward.pid in procinfo.children(os.getpid())
    seconds = procinfo.cpu_seconds(awkward.pid)
    assert seconds is not None and 0 <= seconds < 30  # seconds, not ticks


def test_start_ticks_are_field_22_of_proc_stat(awkward: subprocess.Popen[bytes]) -> None:
    # What replica records written before psutil hold: they must still name their process.
    raw = Path(f"/proc/{awkward.pid}/stat").read_bytes()
    field_22 = int(raw[raw.rindex(b")") + 2 :].split()[19])
    assert procinfo.start_ticks(awkward.pid) == field_22


def test_the_start_time_guards_against_pid_reuse(awkward: subprocess.Popen[bytes]) -> None:
    start = procinfo.start_ticks(awkward.pid)
    assert start is not None
    assert procinfo.alive(awkward.pid) and procinfo.alive(awkward.pid, start)
    assert not procinfo.alive(awkward.pid, start + 1)  # a later process with the same pid
    assert not procinfo.alive(awkward.pid, start - 1)


def test_a_zombie_is_not_alive_but_keeps_its_group_and_time() -> None:
    p = _spawn("import sys; sys.exit(3)")
    try:
        # Not reaped yet: a zombie until p.wait().
        _until(lambda: not procinfo.alive(p.pid), "the child to exit")
        st = procinfo.info(p.pid)
        assert st is not None and st.zombie and st.pgid == p.pid
        assert procinfo.cpu_seconds(p.pid) is not None
        assert procinfo.group_members(p.pid) == []
        assert procinfo.groups([p.pid], zombies=True) == {p.pid: [p.pid]}
        assert procinfo.cmdline(p.pid) == []
        assert p.pid not in procinfo.mentioning(sys.executable)
    finally:
        assert p.wait(10) == 3
    assert procinfo.info(p.pid) is None and procinfo.start_ticks(p.pid) is None
    assert not procinfo.alive(p.pid) and procinfo.pgid(p.pid) is None
    assert procinfo.cpu_seconds(p.pid) is None and procinfo.memory(p.pid) is None
    for bad in (0, -1):
        assert procinfo.info(bad) is None and not procinfo.alive(bad) and procinfo.pgid(bad) is None


def test_scans_of_environments_and_command_lines(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    env = dict(os.environ, K_REVISION="scan-00001", MARKER=marker)
    in_env = _spawn("import time; print('ok', flush=True); time.sleep(60)", env)
    in_argv = _spawn("import time; print('ok', flush=True); time.sleep(60)", None, marker)
    try:
        for p in (in_env, in_argv):
            assert p.stdout is not None and p.stdout.readline() == b"ok\n"
        assert set(procinfo.mentioning(marker)) == {in_env.pid, in_argv.pid}
        assert marker in procinfo.mentioning(marker)[in_argv.pid]  # the command line
        assert set(procinfo.with_env("K_REVISION", {"scan-00001"})) == {in_env.pid}
        assert procinfo.with_env("K_REVISION", {"scan-0000"}) == {}  # a prefix is no match
        seen = procinfo.with_env("MARKER", {marker})[in_env.pid]
        assert seen.environ["K_REVISION"] == "scan-00001" and seen.in_environ("K_REVISION=scan")
        assert os.getpid() not in procinfo.mentioning(marker)  # never this process
    finally:
        for p in (in_env, in_argv):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    assert procinfo.mentioning(marker) == {}


def test_memory_now_and_at_its_peak() -> None:
    mem = procinfo.memory(os.getpid())
    assert mem is not None and mem.hwm_kib >= mem.rss_kib > 1000  # a Python process: > 1 MiB
