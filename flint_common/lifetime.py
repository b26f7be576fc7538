"""Children that die with their parent: a process Flint (or a test, or a benchmark) starts gets
SIGTERM from the kernel when its parent dies, even by SIGKILL, so nothing is left behind."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

__all__ = ["PR_SET_PDEATHSIG", "die_with_parent"]

PR_SET_PDEATHSIG = 1
"""prctl(2)'s option number (linux/prctl.h)."""


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask the kernel for SIGTERM when this process's parent dies. Use it as a `preexec_fn`
    (it runs in the child between fork and exec, and the setting survives exec) or call it first
    thing in a child; with `parent_pid`, exit at once if that parent already died before the
    request was made. Without prctl (not Linux) nothing happens.

    The kernel sends the signal when the *thread* that started the child ends: start such
    children from a thread that lives as long as they should (the main thread, an event loop's)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent_pid is not None and os.getppid() != parent_pid:
        sys.exit(0)
