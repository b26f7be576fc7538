"""CPU time of a process group from the process table, and the utilisation sampler."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from controller.autoscaling.cpu import CpuSampler, cpu_seconds_by_group, process_group_cpu_seconds
from flint_common import procinfo

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
            members = procinfo.groups([p.pid], zombies=True).get(p.pid, [])
            reading = process_group_cpu_seconds(p.pid)
            if members == [p.pid] and reading is not None and reading > 0.25:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"group {p.pid}: members {members}, reading {reading}")
    finally:
        _stop(p)


def test_zombies_count_and_groups_are_read_in_one_scan() -> None:
    # The leader forks a child that burns ~0.3 s and exits, and never reaps it: the zombie keeps
    # its time on its own line, which still counts for the group. Another group reads apart.
    code = (
        "import os, time\n"
        f"if os.fork() == 0:\n    exec({_BURN!r})\n    os._exit(0)\n"
        "time.sleep(60)\n"
    )
    p, other = _spawn(code), _spawn("import time; time.sleep(60)")
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            members = procinfo.groups([p.pid], zombies=True).get(p.pid, [])
            zombies = [m for m in members if m != p.pid and not procinfo.alive(m)]
            readings = cpu_seconds_by_group([p.pid, other.pid, 0, -1])
            if zombies and readings.get(p.pid, 0.0) > 0.25:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"group {p.pid}: members {members}, readings {readings}")
        assert procinfo.group_members(p.pid) == [p.pid]  # the zombie is no live member
        assert set(readings) == {p.pid, other.pid}
        assert readings[other.pid] < 0.25
        assert cpu_seconds_by_group([]) == {}
        assert process_group_cpu_seconds(2**22 + 1) is None  # above pid_max: no such group
    finally:
        _stop(p)
        _stop(other)
