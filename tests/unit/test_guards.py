"""The event-loop guards (`flint_common.guards`): blockbuster through Flint's code, the SQLite
guard, the tests' autouse fixture, and FLINT_BLOCKBUSTER=1 in Flint's processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from blockbuster import BlockingError
from support.harness import check_no_blocking_calls

from controller.cli.up import kill_recorded_replicas
from flint_common import guards

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


def blocks(state_dir: Path) -> int:
    """Flint code that does file-system work (an `is_dir` first): meant for a thread."""
    return kill_recorded_replicas(state_dir)


# -- blockbuster, under the autouse fixture ------------------------------------------------------


async def test_a_blocking_call_through_flint_code_raises_on_the_loop(tmp_path: Path) -> None:
    assert guards.enabled()
    with pytest.raises(BlockingError, match=r"os\.stat"):
        blocks(tmp_path)
    reports = guards.take_reports()  # taken: this test expected it
    assert len(reports) == 1
    assert reports[0].startswith("BlockingError: Blocking call to os.stat")
    assert "controller/cli/up.py" in reports[0]  # the stack names the culprit


async def test_the_same_call_in_a_thread_is_fine(tmp_path: Path) -> None:
    assert await asyncio.to_thread(blocks, tmp_path) == 0
    assert guards.take_reports() == []


def test_the_same_call_without_a_loop_is_fine(tmp_path: Path) -> None:
    assert blocks(tmp_path) == 0
    assert guards.take_reports() == []


async def test_a_swallowed_blocking_call_is_still_reported(tmp_path: Path) -> None:
    with contextlib.suppress(Exception):
        blocks(tmp_path)
    assert [r.splitlines()[0] for r in guards.take_reports()] == [
        f"BlockingError: Blocking call to os.stat (thread MainThread, pid {os.getpid()})"
    ]


def test_the_fixture_fails_blocking_tests_and_lets_opted_out_ones_block(tmp_path: Path) -> None:
    """A pytest run of its own, with the real conftest: what fails and what passes."""
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import asyncio, sqlite3
        import pytest
        from controller.cli.up import kill_recorded_replicas

        async def test_blocks(tmp_path):
            kill_recorded_replicas(tmp_path)

        async def test_swallows(tmp_path):
            try:
                kill_recorded_replicas(tmp_path)
            except Exception:
                pass

        async def test_sqlite_on_the_loop():
            sqlite3.connect(":memory:").execute("SELECT 1")

        async def test_in_a_thread(tmp_path):
            await asyncio.to_thread(kill_recorded_replicas, tmp_path)

        @pytest.mark.allow_blocking
        async def test_opted_out(tmp_path):
            kill_recorded_replicas(tmp_path)
            sqlite3.connect(":memory:").execute("SELECT 1")
    """))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    outcomes = {
        line.split()[0] + " " + line.split()[1].split("::")[-1]
        for line in r.stdout.splitlines()
        if line.startswith(("PASSED ", "FAILED ", "ERROR "))
    }
    assert outcomes == {
        "FAILED test_blocks",
        "PASSED test_swallows",
        "ERROR test_swallows",  # at teardown: "blocking call(s) on an event loop"
        "FAILED test_sqlite_on_the_loop",
        "PASSED test_in_a_thread",
        "PASSED test_opted_out",
    }, r.stdout + r.stderr
    assert "1 blocking call(s) on an event loop (caught by the code under test?)" in r.stdout


# -- the SQLite guard ------------------------------------------------------------------------------


def _in_thread_connection(path: str = ":memory:") -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    return conn


async def test_sqlite_statements_on_the_loop_raise(tmp_path: Path) -> None:
    with pytest.raises(guards.SqliteBlockingError, match="SQLite on the event loop"):
        sqlite3.connect(tmp_path / "x.db")
    conn = await asyncio.to_thread(_in_thread_connection)
    cursor = await asyncio.to_thread(conn.execute, "SELECT x FROM t ORDER BY x")
    on_the_loop: list[tuple[str, Any]] = [
        ("execute", lambda: conn.execute("SELECT 1")),
        ("executemany", lambda: conn.executemany("INSERT INTO t VALUES (?)", [(3,)])),
        ("executescript", lambda: conn.executescript("SELECT 1;")),
        ("commit", conn.commit),
        ("rollback", conn.rollback),
        ("cursor", conn.cursor),
        ("with", lambda: conn.__exit__(None, None, None)),
        ("cursor.fetchone", cursor.fetchone),
        ("cursor.fetchall", cursor.fetchall),
        ("cursor.fetchmany", cursor.fetchmany),
        ("cursor iteration", lambda: next(cursor)),
        ("cursor.execute", lambda: cursor.execute("SELECT 1")),
    ]
    for what, call in on_the_loop:
        with pytest.raises(guards.SqliteBlockingError):
            call()
        assert guards.take_reports(), what
    # Nothing ran: the cursor still has both rows, and they read fine in a thread.
    assert await asyncio.to_thread(cursor.fetchall) == [(1,), (2,)]
    await asyncio.to_thread(conn.close)
    assert guards.take_reports() == []


def test_sqlite_without_a_loop_or_in_another_thread_is_fine(tmp_path: Path) -> None:
    conn = _in_thread_connection(str(tmp_path / "x.db"))
    assert [r for r, in conn.execute("SELECT x FROM t")] == [1, 2]
    conn.commit()
    conn.close()
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            with sqlite3.connect(tmp_path / "x.db") as c:
                c.execute("INSERT INTO t VALUES (3)")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors == []
    assert guards.take_reports() == []


class CountingConnection(sqlite3.Connection):
    executed: list[str] = []

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        CountingConnection.executed.append(args[0])
        return super().execute(*args, **kwargs)


async def test_the_factory_asked_for_is_kept() -> None:
    conn = await asyncio.to_thread(
        sqlite3.connect, ":memory:", factory=CountingConnection, check_same_thread=False
    )
    assert isinstance(conn, CountingConnection)
    cursor = await asyncio.to_thread(conn.execute, "SELECT 1")
    assert CountingConnection.executed == ["SELECT 1"]
    with pytest.raises(guards.SqliteBlockingError):
        cursor.fetchall()  # the factory's own execute made a guarded cursor
    with pytest.raises(guards.SqliteBlockingError):
        conn.execute("SELECT 2")
    assert CountingConnection.executed == ["SELECT 1"]  # checked before the factory's method
    guards.take_reports()
    await asyncio.to_thread(conn.close)


async def test_off_means_nothing_is_patched(tmp_path: Path) -> None:
    guards.disable()
    try:
        assert not guards.enabled()
        assert sqlite3.connect.__module__ != guards.__name__
        conn = sqlite3.connect(":memory:")  # no guard: allowed (the fixture turns it back on)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.close()
        assert blocks(tmp_path) == 0
    finally:
        guards.enable()
    assert guards.take_reports() == []


# -- FLINT_BLOCKBUSTER in processes ----------------------------------------------------------------


def test_enable_from_env_reads_the_variable() -> None:
    assert not guards.enable_from_env({})
    assert not guards.enable_from_env({"FLINT_BLOCKBUSTER": "0"})
    with pytest.raises(RuntimeError, match="FLINT_BLOCKBUSTER='yes'"):
        guards.enable_from_env({"FLINT_BLOCKBUSTER": "yes"})


CHILD = textwrap.dedent("""
    import asyncio, sqlite3, sys
    from pathlib import Path
    from flint_common import guards
    from controller.cli.up import kill_recorded_replicas

    guards.enable_from_env()

    async def main():
        for call in (lambda: kill_recorded_replicas(Path(sys.argv[1])),
                     lambda: sqlite3.connect(":memory:")):
            try:
                call()
            except Exception:  # swallowed: the report is logged all the same
                pass
        print("done", flush=True)

    asyncio.run(main())
""")


def run_child(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != guards.ENV_VAR}
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], env={**environ, **env},
        capture_output=True, text=True, timeout=60,
    )


def test_a_child_with_FLINT_BLOCKBUSTER_logs_its_blocking_calls_on_stderr(tmp_path: Path) -> None:
    r = run_child(tmp_path, FLINT_BLOCKBUSTER="1")
    assert r.returncode == 0 and r.stdout == "done\n", r.stderr
    reports = guards.blocking_reports(r.stderr)
    assert [rep.splitlines()[0].split(" (thread")[0] for rep in reports] == [
        "BlockingError: Blocking call to os.stat",
        "BlockingError: SQLite on the event loop (run it in a thread: asyncio.to_thread, the "
        "store's or the log's own thread)",
    ], r.stderr
    assert "controller/cli/up.py" in reports[0] and "in kill_recorded_replicas" in reports[0]


def test_a_child_without_it_is_unguarded(tmp_path: Path) -> None:
    r = run_child(tmp_path)
    assert r.returncode == 0 and r.stdout == "done\n", r.stderr
    assert guards.blocking_reports(r.stderr) == [] and guards.MARKER not in r.stderr


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("controller", []),  # the controller
        ("controller.eventing", []),  # the dispatcher
        ("gateway", []),  # the gateway's main process and (same main) its workers
        ("controller.cli.main", ["up"]),  # flint up
    ],
)
def test_every_flint_process_turns_the_guards_on_first(module: str, argv: list[str]) -> None:
    """Run with blockbuster hidden: with FLINT_BLOCKBUSTER=1 each fails at once, saying why;
    without it, `--help` works (the guards stay off)."""
    code = (
        "import runpy, sys; sys.modules['blockbuster'] = None; "
        f"sys.argv = ['x', *{argv!r}, '--help']; runpy.run_module({module!r}, run_name='__main__')"
    )
    environ = {k: v for k, v in os.environ.items() if k != guards.ENV_VAR}
    on = subprocess.run([sys.executable, "-c", code], env={**environ, "FLINT_BLOCKBUSTER": "1"},
                        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert on.returncode != 0
    assert "FLINT_BLOCKBUSTER=1" in on.stderr and "blockbuster, which is not installed" in on.stderr
    off = subprocess.run([sys.executable, "-c", code], env=environ,
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert off.returncode == 0 and "usage:" in off.stdout, off.stderr


# -- finding reports in a log ----------------------------------------------------------------------

LOG = """\
2026-01-01 10:00:00,000 INFO flint.controller controller: ready
2026-01-01 10:00:01,000 ERROR flint.guards BlockingError: Blocking call to os.stat (thread MainThread, pid 7)
  /x/controller/app.py:84 in start
  /usr/lib/python3.11/pathlib.py:1013 in stat
2026-01-01 10:00:01,001 INFO flint.controller next line
Traceback (most recent call last):
  File "/x/gateway/ingress.py", line 405, in accept
flint_common.guards.BlockingError: Blocking call to os.mkdir
flint up: stopping
"""


def test_blocking_reports_are_found_with_their_stacks() -> None:
    assert guards.blocking_reports(LOG) == [
        "2026-01-01 10:00:01,000 ERROR flint.guards BlockingError: Blocking call to os.stat "
        "(thread MainThread, pid 7)\n"
        "  /x/controller/app.py:84 in start\n"
        "  /usr/lib/python3.11/pathlib.py:1013 in stat",
        "flint_common.guards.BlockingError: Blocking call to os.mkdir",
    ]
    assert guards.blocking_reports("all quiet\n  indented\n") == []


def test_the_harness_fails_a_flint_up_log_with_a_report(tmp_path: Path) -> None:
    log = tmp_path / "flint-up.log"
    log.write_text("2026-01-01 ok\n")
    joined_log = tmp_path / "gateway-2.log"
    joined_log.write_text("")

    def flint() -> SimpleNamespace:
        joined = SimpleNamespace(logs=lambda last=None: joined_log.read_text())
        return SimpleNamespace(log_path=log, logs=lambda last=None: log.read_text(), joined=[joined])

    check_no_blocking_calls(flint())  # type: ignore[arg-type]
    log.write_text(LOG)
    with pytest.raises(AssertionError, match=r"2 blocking call\(s\) on an event loop in flint up"):
        check_no_blocking_calls(flint())  # type: ignore[arg-type]
    log.write_text("2026-01-01 ok\n")
    joined_log.write_text(LOG)  # a process that joined it counts too
    with pytest.raises(AssertionError, match=r"2 blocking call\(s\)"):
        check_no_blocking_calls(flint())  # type: ignore[arg-type]
