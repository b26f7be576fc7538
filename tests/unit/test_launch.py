"""How a replica's process is launched: argv exactly as given, with or without a memory limit."""

from __future__ import annotations

import subprocess

from controller.runtime.process import launch


def _run(program: str, argv: list[str], limit: int | None) -> str:
    executable, args = launch(program, argv, limit)
    return subprocess.run(args, executable=executable, capture_output=True, text=True,
                          check=True, timeout=30).stdout


SHOW = 'tr "\\0" "|" < /proc/$$/cmdline; echo " $(ulimit -v)"'
"""Prints the shell's own argv (its /proc cmdline, `|`-separated) and its RLIMIT_AS in KiB."""


def test_argv_zero_is_kept_not_the_resolved_path() -> None:
    assert launch("/bin/sh", ["sh", "-c", "x"], None) == ("/bin/sh", ["sh", "-c", "x"])
    assert _run("/bin/sh", ["my-name", "-c", SHOW, "a b"], None).startswith(
        f"my-name|-c|{SHOW}|a b| ")


def test_a_memory_limit_keeps_argv_and_is_applied() -> None:
    out = _run("/bin/sh", ["my-name", "-c", SHOW, "a b"], 256 * 1024**2 + 5)
    assert out == f"my-name|-c|{SHOW}|a b| {256 * 1024}\n"
