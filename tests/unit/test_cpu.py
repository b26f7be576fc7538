"""CPU time of a process group from /proc, and the utilisation sampler."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.autoscaling import cpu
from controller.autoscaling.cpu import CpuSampler, cpu_seconds_by_group, process_group_cpu_seconds

# ---------------------------------------------------------------------------- the sampler


def test_sampler_utilisation() -> None:
    s = CpuSampler()
    assert s.update(0.0, {"a": 1.0, "b": 2.0}) == {}  # first readings: baselines only
    # a: (2.0 - 1.0) / 2 s = 50 % of a core; b: 0.5 / 2 = 25 %.
    assert s.update(2.0, {"a": 2.0, "b": 2.5}) == {"a": 50.0, "b": 25.0}
    # b is not sampled any more: forgotten. a used 4 s of CPU in 2 s: two cores, 200 %.
    assert s.update(4.0, {"a": 6.0}) == {"a": 200.0}
    assert s.keys() == ["a"]
    # b is back: a new baseline, no value yet. a idle: 0 %.
    assert s.update(6.0, {"a": 6.0, "b": 3.0}) == {"a": 0.0}
    assert s.update(7.0, {"a": 6.25, "b": 3.5}) == {"a": 25.0, "b": 50.0}


def test_sampler_counter_reset_gone_and_no_time() -> None:
    s = CpuSampler()
    s.update(0.0, {"a": 5.0, "b": 1.0})
    # a's counter went backwards (a restarted process): new baseline, no value. b's group is gone.
    assert s.update(2.0, {"a": 1.0, "b": None}) == {}
    assert s.keys() == ["a"]
    assert s.update(4.0, {"a": 2.0}) == {"a": 50.0}
    # The clock did not advance: no value, and the baseline of t=4 stays.
    assert s.update(4.0, {"a": 9.0}) == {}
    assert s.update(6.0, {"a": 3.0}) == {"a": 50.0}
    s.forget("a")
    assert s.keys() == []


# ---------------------------------------------------------------------------- /proc parsing


def _stat(pid: int, comm: str, state: str, pgid: int, utime: int, stime: int, cu: int, cs: int) -> str:
    # Fields 1..17 of /proc/<pid>/stat, then a few more.
    # pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority ...
    return (
        f"{pid} ({comm}) {state} 1 {pgid} {pgid} 0 -1 4194304 10 0 0 0 "
        f"{utime} {stime} {cu} {cs} 20 0 1 0 12345 0 0\n"
    )


def test_fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    procs = {
        100: _stat(100, "python3", "S", 100, 150, 50, 30, 20),  # 250 ticks
        101: _stat(101, "odd ) (name) x", "R", 100, 10, 0, 0, 0),  # comm with ') (': 10 ticks
        102: _stat(102, "zombie", "Z", 100, 5, 5, 0, 0),  # zombies count: 10 ticks
        200: _stat(200, "other", "S", 200, 1000, 0, 0, 0),
    }
    for pid, text in procs.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(text)
    (tmp_path / "self").mkdir()
    (tmp_path / "999").mkdir()  # a process that went away between listdir and open
    monkeypatch.setattr(cpu, "_PROC", str(tmp_path))
    monkeypatch.setattr(cpu, "_TICKS", 100)
    assert process_group_cpu_seconds(100) == pytest.approx(2.7)  # (250 + 10 + 10) / 100
    assert process_group_cpu_seconds(200) == pytest.approx(10.0)
    assert process_group_cpu_seconds(300) is None
    assert cpu_seconds_by_group([100, 200, 300]) == {100: pytest.approx(2.7), 200: pytest.approx(10.0)}
    assert cpu_seconds_by_group([]) == {}


# ---------------------------------------------------------------------------- a real process

_BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"


def _spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own session: pgid = pid
    )


def _stop(p: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)


def _poll(pgid: int, above: float, deadline_s: float = 10.0) -> float | None:
    deadline = time.monotonic() + deadline_s
    reading = process_group_cpu_seconds(pgid)
    while (reading is None or reading <= above) and time.monotonic() < deadline:
        time.sleep(0.05)
        reading = process_group_cpu_seconds(pgid)
    return reading


def test_busy_process_group() -> None:
    p = _spawn(_BURN + "time.sleep(60)\n")
    try:
        reading = _poll(p.pid, 0.1)
        assert reading is not None and reading > 0.1
        assert reading < 30.0  # sanity: seconds, not ticks
    finally:
        _stop(p)
    assert process_group_cpu_seconds(p.pid) is None  # reaped: no process has the group


def test_reaped_children_count() -> None:
    # The group leader runs a child that burns ~0.3 s and exits; the leader reaps it, so the
    # child's time moves to the leader's cutime/cstime and still counts for the group.
    code = (
        f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {_BURN!r}])\ntime.sleep(60)\n"
    )
    p = _spawn(code)
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            members = [n for n in os.listdir("/proc") if n.isdigit() and _pgid(int(n)) == p.pid]
            reading = process_group_cpu_seconds(p.pid)
            if members == [str(p.pid)] and reading is not None and reading > 0.25:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"group {p.pid}: members {members}, reading {reading}")
    finally:
        _stop(p)


def _pgid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return int(raw[raw.rfind(b")") + 2 :].split()[2])
