"""Guards that catch blocking calls on an event loop: blockbuster, and a SQLite guard of our own.

* **blockbuster** (a test dependency, imported lazily) patches file, socket, ``os.*``,
  ``time.sleep``, ``threading.Lock.acquire`` and more so that a call on a thread that runs an
  event loop raises ``BlockingError`` — when one of Flint's modules (`SCANNED_MODULES`) is on the
  stack. In Flint's own processes that is every call on the loop (their loops run from Flint's
  ``main``); under pytest it is every call made through Flint's code.
* **the SQLite guard** wraps ``sqlite3.connect`` so that every connection made while it is on is
  a subclass of the requested factory whose statements, commits, rollbacks and cursors raise
  `SqliteBlockingError` on a thread that runs an event loop (``connect`` itself too) — whoever
  calls, a test's own query included, and whichever blockbuster version is installed
  (blockbuster patches sqlite3's methods too, for calls through Flint's modules only).
  Connections made while it was on stay guarded after `disable`.

Both are off (nothing patched) until `enable` (the tests' autouse fixture) or `enable_from_env`
(each Flint process at start-up, when ``FLINT_BLOCKBUSTER=1``). Every detection is reported
before the error is raised, so a caller that swallows the error cannot hide it: under `enable`
the report (message and stack) is kept for `take_reports`; in a process it is logged instead, as
one ERROR record starting with `MARKER` — `blocking_reports` finds those in a log.

The calls allowed in `ALLOWED` are genuinely short (no disk, microseconds); each says why.
Writes to /dev/null are allowed too.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import sqlite3
import sqlite3.dbapi2
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = [
    "ALLOWED",
    "ENV_VAR",
    "MARKER",
    "OFF_LOOP",
    "SCANNED_MODULES",
    "SqliteBlockingError",
    "blocking_reports",
    "disable",
    "enable",
    "enable_from_env",
    "enabled",
    "guarded",
    "take_reports",
]

ENV_VAR = "FLINT_BLOCKBUSTER"
"""``FLINT_BLOCKBUSTER=1`` in a Flint process's environment turns both guards on (children inherit it)."""
MARKER = "BlockingError"
"""Every report, and the name of every error the guards raise, contains this word."""
SCANNED_MODULES = ("gateway", "controller", "flint_common")

ALLOWED: Mapping[str, tuple[tuple[str, frozenset[str]], ...]] = {
    # The channel log's waiters and tails: the writer thread holds this lock only to update two
    # dicts (never around SQLite once the log is open), so a loop that finds it taken waits
    # microseconds; a lock-free handoff would cost the writer a loop wake-up per commit.
    "threading.Lock.acquire": (("gateway/channels/sqlite.py", frozenset({"wait", "_on_close"})),),
}
"""blockbuster function → (file name suffix, functions) on the stack where that call may block."""

OFF_LOOP: tuple[tuple[str, frozenset[str]], ...] = (
    # Loading the Kubernetes client configuration reads the kubeconfig, its certificates and the
    # service account's files; it runs in a worker thread, on a private loop (the loader is a
    # coroutine), never on the process's loop, which blockbuster cannot tell apart.
    ("controller/store/kubernetes_config.py", frozenset({"_load"})),
)
"""(file name suffix, functions) that run on a worker thread's own loop: any call may block there."""

log = logging.getLogger("flint.guards")


class SqliteBlockingError(RuntimeError):
    """A SQLite statement, commit, rollback or cursor operation on a thread running an event loop."""


class _Guards:
    """What is on: blockbuster's patches and the wrapped ``sqlite3.connect``; the reports so far."""

    def __init__(self) -> None:
        self.buster: Any = None  # blockbuster.BlockBuster, built once (it scans the working dir)
        self.module: Any = None  # blockbuster.blockbuster
        self.original_error: type[Exception] | None = None
        self.active = False
        self.log_reports = False
        self.reports: list[str] = []


_guards = _Guards()


def enabled() -> bool:
    return _guards.active


def enable(*, log_reports: bool = False) -> None:
    """Turn both guards on (idempotent). `log_reports`: log each report rather than keep it
    (processes do: they run for long)."""
    g = _guards
    if g.active:
        g.log_reports = g.log_reports or log_reports
        return
    buster = _blockbuster()
    g.log_reports = log_reports
    assert g.module is not None and g.original_error is not None
    g.module.BlockingError = _reporting_error(g.original_error)
    try:
        buster.activate()
    except BaseException:
        g.module.BlockingError = g.original_error
        raise
    sqlite3.connect = sqlite3.dbapi2.connect = _guarded_connect  # type: ignore[assignment]
    g.active = True


def disable() -> None:
    """Turn both guards off (idempotent); the reports stay until `take_reports`."""
    g = _guards
    if not g.active:
        return
    sqlite3.connect = sqlite3.dbapi2.connect = _connect
    g.buster.deactivate()
    assert g.module is not None
    g.module.BlockingError = g.original_error
    g.active = False


@contextmanager
def guarded() -> Iterator[None]:
    """Both guards on for the block (for tests); off again after it unless they were on before."""
    was_on = enabled()
    enable()
    try:
        yield
    finally:
        if not was_on:
            disable()


def enable_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """At a process's start: turn both guards on, logging reports, when ``FLINT_BLOCKBUSTER=1``.

    Raises RuntimeError (naming the variable) when it is set but blockbuster is not installed."""
    value = environ.get(ENV_VAR, "")
    if value in ("", "0"):
        return False
    if value != "1":
        raise RuntimeError(f"{ENV_VAR}={value!r}: expected 1 (guards on) or 0 (off)")
    enable(log_reports=True)
    return True


def take_reports() -> list[str]:
    """The blocking calls detected since the last call (each a message and its stack), unless
    they are logged (`enable_from_env`); clears them."""
    reports = _guards.reports[:]
    del _guards.reports[: len(reports)]
    return reports


def blocking_reports(log_text: str, *, context: int = 40) -> list[str]:
    """The blocking-call reports in a process's log: each line naming `MARKER` with the indented
    lines that follow it (the stack of a report, up to `context` lines)."""
    lines = log_text.splitlines()
    found: list[str] = []
    i = 0
    while i < len(lines):
        if MARKER not in lines[i]:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and j - i <= context and lines[j][:1] in (" ", "\t"):
            j += 1
        found.append("\n".join(lines[i:j]))
        i = j
    return found


# -- blockbuster ------------------------------------------------------------------------------


def _blockbuster() -> Any:
    g = _guards
    if g.buster is not None:
        return g.buster
    try:
        import blockbuster
        import blockbuster.blockbuster as module
    except ImportError as exc:
        raise RuntimeError(
            f"{ENV_VAR}=1 (or a test) asks for blockbuster, which is not installed: it is in Flint's "
            f"test extra (pip install -e '.[test]'); or unset {ENV_VAR}"
        ) from exc
    buster = blockbuster.BlockBuster(scanned_modules=[_package_stub(name) for name in SCANNED_MODULES])
    for name, places in ALLOWED.items():
        for filename, functions in places:
            buster.functions[name].can_block_in(filename, functions)
    for filename, functions in OFF_LOOP:
        for fn in buster.functions.values():
            fn.can_block_in(filename, functions)
    for name in ("io.TextIOWrapper.write", "io.BufferedWriter.write"):
        # Writing to /dev/null never waits (pytest's log-file handler writes there by default).
        fn = buster.functions[name]
        fn.can_block_predicate = _or_devnull(fn.can_block_predicate)
    g.module, g.original_error, g.buster = module, module.BlockingError, buster
    return buster


def _or_devnull(predicate: Callable[..., bool]) -> Callable[..., bool]:
    def can_block(file: Any, *args: Any, **kwargs: Any) -> bool:
        return getattr(file, "name", None) == os.devnull or predicate(file, *args, **kwargs)

    return can_block


def _package_stub(name: str) -> types.ModuleType:
    """A module object naming where package `name` lives, without importing it: the gateway
    process must not load the control plane (blockbuster only reads ``__path__``)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"cannot find Flint's package {name!r}")
    stub = types.ModuleType(name)
    stub.__path__ = list(spec.submodule_search_locations)
    return stub


def _reporting_error(base: type[Exception]) -> type[Exception]:
    """blockbuster raises its module's ``BlockingError``: this subclass reports itself first."""

    class BlockingError(base):  # type: ignore[valid-type, misc]  # same name: the marker in tracebacks
        def __init__(self, func: str) -> None:
            super().__init__(func)
            _report(str(self))

    BlockingError.__module__ = __name__
    BlockingError.__qualname__ = "BlockingError"
    return BlockingError


# -- the SQLite guard -------------------------------------------------------------------------

_connect = sqlite3.connect


def _check() -> None:
    if asyncio._get_running_loop() is not None:
        err = SqliteBlockingError(
            f"{MARKER}: SQLite on the event loop (run it in a thread: asyncio.to_thread, the "
            f"store's or the log's own thread)"
        )
        _report(str(err))
        raise err


def _guarded_method(name: str, owner: list[type]) -> Callable[..., Any]:
    # The base's method is looked up at each call, not captured: blockbuster may be patching it.
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        _check()
        return getattr(super(owner[0], self), name)(*args, **kwargs)

    method.__name__ = name
    return method


def _guarded_cursor_method(owner: list[type]) -> Callable[..., Any]:
    def cursor(self: Any, factory: type[sqlite3.Cursor] = sqlite3.Cursor) -> Any:
        _check()
        cls: Any = owner[0]
        return super(cls, self).cursor(_guarded_class(factory))

    return cursor


class _ViaCursor(sqlite3.Connection):
    """Below the caller's factory: ``Connection.execute`` and co. as ``self.cursor().execute``
    (what CPython does, but through ``cursor()``), so their cursors are guarded cursors too."""

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        return self.cursor().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        return self.cursor().executemany(*args, **kwargs)

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        return self.cursor().executescript(*args, **kwargs)


_CURSOR_METHODS = ("execute", "executemany", "executescript", "fetchone", "fetchmany", "fetchall", "__next__")
_CONNECTION_METHODS = ("execute", "executemany", "executescript", "commit", "rollback", "__exit__")
_guarded_classes: dict[type, type] = {}  # a factory → its guarded subclass (and that → itself)


def _guarded_class(base: type) -> Any:
    """The guarded subclass of a connection or cursor class: each statement checks the thread."""
    cls = _guarded_classes.get(base)
    if cls is None:
        owner: list[type] = []
        ns: dict[str, Any]
        bases: tuple[type, ...]
        if issubclass(base, sqlite3.Connection):
            ns = {name: _guarded_method(name, owner) for name in _CONNECTION_METHODS}
            ns["cursor"] = _guarded_cursor_method(owner)
            bases = (_ViaCursor,) if base is sqlite3.Connection else (base, _ViaCursor)
        else:
            ns = {name: _guarded_method(name, owner) for name in _CURSOR_METHODS}
            bases = (base,)
        ns["__module__"] = __name__
        cls = type(f"Guarded{base.__name__}", bases, ns)
        owner.append(cls)
        _guarded_classes[base] = _guarded_classes[cls] = cls
    return cls


def _guarded_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect`` (which opens the file: not on a loop either) making its connection
    with a guarded subclass of the factory asked for."""
    _check()
    factory_at = 5  # connect(database, timeout, detect_types, isolation_level, check_same_thread, factory)
    if len(args) > factory_at:
        args = (*args[:factory_at], _guarded_class(args[factory_at]), *args[factory_at + 1 :])
    else:
        kwargs["factory"] = _guarded_class(kwargs.get("factory", sqlite3.Connection))
    conn: sqlite3.Connection = _connect(*args, **kwargs)
    return conn


# -- reports ----------------------------------------------------------------------------------


def _report(message: str) -> None:
    # File and line only: looking source lines up would read files, on the loop, from here.
    # _report <- the error's __init__ or _check <- blockbuster's wrapper or the guarded method.
    caller = sys._getframe(3)
    frames = traceback.StackSummary.extract(traceback.walk_stack(caller), limit=25, lookup_lines=False)
    stack = "\n".join(f"  {f.filename}:{f.lineno} in {f.name}" for f in reversed(frames))
    text = message if MARKER in message else f"{MARKER}: {message}"
    report = f"{text} (thread {threading.current_thread().name}, pid {os.getpid()})\n{stack}"
    if _guards.log_reports:
        log.error("%s", report)
    else:
        _guards.reports.append(report)  # no lock: a lock taken here could block the loop itself
