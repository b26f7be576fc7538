"""`die_with_parent`: a child started with it is signalled when its parent dies, even by SIGKILL
(the redis-servers, gateways and apps the tests and benchmarks start rely on it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from support.harness import poll

PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from flint_common.lifetime import die_with_parent
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             preexec_fn=die_with_parent if sys.argv[1] == "yes" else None)
    print(child.pid, flush=True)
    time.sleep(120)
""")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def orphan_after_sigkill(die: bool) -> tuple[int, bool]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, "yes" if die else "no"],
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    if die:
        poll(lambda: not alive(child), 10, "the child to die with its parent")
    return child, alive(child)


def test_a_child_dies_with_its_parent_killed_by_sigkill() -> None:
    _, left = orphan_after_sigkill(die=True)
    assert not left


def test_without_it_the_child_outlives_its_parent() -> None:
    child, left = orphan_after_sigkill(die=False)
    try:
        assert left  # what the test above would see if die_with_parent did nothing
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
