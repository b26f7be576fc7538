"""One writing thread per SQLite file, off the event loop; every future resolves after the commit covering it.

`SqliteWriter` is the machinery the channel log (`gateway.channels.sqlite`) and the dispatcher's
state (`controller.eventing.state`) share. Each subclass keeps its schema, its durability setting,
its group-commit policy and its API; the base keeps the threads and their protocol:

* the writer thread owns the only writing connection; a lock file next to the database
  (``<path>.lock``, ``flock``) makes it the only writer of the file in the host. The connection runs
  WAL with ``wal_autocheckpoint`` off: the writer checkpoints itself (``PRAGMA
  wal_checkpoint(PASSIVE)``) every `checkpoint_every` commits or when the WAL passes
  `checkpoint_bytes`, and truncates the WAL on close;
* reads go to one reader thread with its own read-only connection, opened once the writer has
  created the file and its schema (WAL lets it read while the writer commits);
* callers queue a `Request` (a loop and a future) and the writer answers it with `post` after the
  commit that covers it; a caller cancelled meanwhile is skipped (the write stands);
* `close()` queues a `Stop`: everything queued before it is done, what raced in after it fails with
  `closed_error`, and the file is released. A writer that failed to open (or broke) answers every
  request with that error until it is closed.

A subclass sets its own state, then calls ``super().__init__`` (which starts the writer last), and
implements `_open_writer` (with `_acquire_lock` and `_connect_writer`) and `_serve` (the request
loop: `_maybe_checkpoint` after each transaction, `_finish` after the `Stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, ClassVar, Generic, Protocol, TypeVar

__all__ = ["Answer", "Request", "SqliteWriter", "Stop", "post"]

T = TypeVar("T")


class Request(Protocol):
    """What the loop side queues for the writer: answered through `future`, on `loop`."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def future(self) -> asyncio.Future[Any]: ...


ItemT = TypeVar("ItemT", bound=Request)


@dataclass(slots=True)
class Stop:
    """`close()`'s request: the writer finishes what was queued before it, then stops."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


Answer = tuple["asyncio.Future[Any]", Any, "BaseException | None"]


def _resolve(items: list[Answer]) -> None:
    for fut, result, exc in items:
        if fut.done():  # the caller was cancelled; the write stands
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


def post(answers: list[tuple[asyncio.AbstractEventLoop, Answer]]) -> None:
    """Resolve futures on their loops (from any thread): one wake-up per loop, in order."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
    for loop, answer in answers:
        by_loop.setdefault(loop, []).append(answer)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, items)


class SqliteWriter(ABC, Generic[ItemT]):
    """A writer thread and a reader thread over one SQLite file. See the module docstring."""

    closed_error: ClassVar[type[Exception]]  # raised once closed or failed, and to callers left over
    noun: ClassVar[str]  # "channel log": names the file in errors and the threads

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool,
        group_max: int,
        checkpoint_every: int,
        checkpoint_bytes: int,
        connection_factory: type[sqlite3.Connection],
    ) -> None:
        if group_max < 1:
            raise ValueError("group_max must be at least 1")
        self.path = os.fspath(path)
        self.durable = durable
        self.group_max = group_max
        self.checkpoint_every = checkpoint_every
        self.checkpoint_bytes = checkpoint_bytes
        self._factory = connection_factory
        # Counters (read them from any thread; written by the writer only).
        self.transactions = 0  # committed write transactions
        self.checkpoints = 0
        self._since_checkpoint = 0  # write transactions since the last checkpoint (writer thread)
        self._queue: queue.SimpleQueue[ItemT | Stop] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._closed = False
        self._close_future: asyncio.Future[None] | None = None
        self._lockfile: IO[bytes] | None = None  # only touched in the writer thread
        thread = self.noun.replace(" ", "-")
        self._writer = threading.Thread(target=self._write_main, name=f"{thread}-writer:{self.path}")
        self._writer.daemon = True
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{thread}-reader")
        self._rconn: sqlite3.Connection | None = None  # only touched in the reader thread
        self._writer.start()

    async def close(self) -> None:
        """Commit everything submitted before the call, then release the file; idempotent."""
        if self._close_future is not None:
            await asyncio.shield(self._close_future)
            return
        loop = asyncio.get_running_loop()
        self._closed = True
        self._close_future = loop.create_future()
        stopped: asyncio.Future[None] = loop.create_future()
        self._queue.put(Stop(loop, stopped))
        await stopped
        await loop.run_in_executor(self._reader, self._close_reader)
        self._reader.shutdown(wait=False)
        await asyncio.to_thread(self._writer.join)
        self._on_close()
        self._close_future.set_result(None)

    def _on_close(self) -> None:
        """Called once on the loop by `close()`, after both threads stopped and before it returns."""

    # -- helpers for the loop side -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._open_error is not None:
            raise self._failed() from self._open_error
        if self._closed:
            raise self._closed_exc()

    def _closed_exc(self) -> Exception:
        return self.closed_error(f"{self.noun} {self.path} is closed")

    def _failed(self) -> Exception:
        """What callers get once the writer failed to open (or broke); raised from that error."""
        return self.closed_error(f"{self.noun} {self.path} failed to open")

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._run_read, fn)

    # -- reader thread -----------------------------------------------------------------------

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._rconn is None:
            self._ready.wait()  # the writer creates the file and the schema first
            if self._open_error is not None:
                raise self._failed() from self._open_error
            conn = sqlite3.connect(self.path, isolation_level=None, factory=self._factory)
            conn.execute("PRAGMA query_only = ON")
            self._rconn = conn
        return fn(self._rconn)

    def _close_reader(self) -> None:
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    # -- writer thread -----------------------------------------------------------------------

    @abstractmethod
    def _open_writer(self) -> sqlite3.Connection:
        """Take the lock, connect, create the schema; errors fail every request (writer thread)."""

    @abstractmethod
    def _serve(self, conn: sqlite3.Connection) -> None:
        """Answer queued requests until a `Stop`, then `_finish` (writer thread)."""

    def _acquire_lock(self) -> None:
        """Lock ``<path>.lock`` for as long as the writer is open: one writer per file in the host.

        The file's folder is created first if missing (here, in the writer thread: never on the loop)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        lockfile = open(self.path + ".lock", "a+b")  # noqa: SIM115 - held while the writer is open
        try:
            fcntl.flock(lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lockfile.close()
            raise self.closed_error(f"{self.path} already has a writer") from None
        self._lockfile = lockfile

    def _release_lock(self) -> None:
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

    def _connect_writer(self, synchronous: str) -> sqlite3.Connection:
        """The writing connection: WAL at `synchronous`, checkpoints left to `_maybe_checkpoint`."""
        conn = sqlite3.connect(self.path, isolation_level=None, factory=self._factory)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute(f"PRAGMA journal_size_limit = {self.checkpoint_bytes}")
        return conn

    def _write_main(self) -> None:
        try:
            conn = self._open_writer()
        except BaseException as exc:  # surfaced to every caller
            self._open_error = exc
            self._ready.set()
            self._fail_forever(exc)
            return
        self._ready.set()
        try:
            self._serve(conn)
        except BaseException as exc:  # a writer bug must not leave callers hanging
            self._open_error = exc
            conn.close()
            self._release_lock()
            self._fail_forever(exc)

    def _maybe_checkpoint(self, conn: sqlite3.Connection) -> None:
        """After each write transaction (committed or not): checkpoint when one is due."""
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.checkpoint_every or self._wal_size() > self.checkpoint_bytes:
            self._checkpoint(conn)
            self._since_checkpoint = 0

    def _finish(self, conn: sqlite3.Connection, stop: Stop, pending: Iterable[ItemT | Stop] = ()) -> None:
        """Stopped: everything queued before `stop` is done; fail `pending` and what raced in after."""
        leftovers = list(pending)
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        try:
            self._checkpoint(conn, "TRUNCATE")
        except sqlite3.Error:
            pass  # a reader elsewhere holds the WAL: the next writer checkpoints it
        finally:
            conn.close()
            self._release_lock()
        closed = self._closed_exc()
        answers: list[tuple[asyncio.AbstractEventLoop, Answer]] = [
            (it.loop, (it.future, None, None if isinstance(it, Stop) else closed)) for it in leftovers
        ]
        answers.append((stop.loop, (stop.future, None, None)))
        post(answers)

    def _wal_size(self) -> int:
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0

    def _checkpoint(self, conn: sqlite3.Connection, mode: str = "PASSIVE") -> None:
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        self.checkpoints += 1

    def _fail_forever(self, exc: BaseException) -> None:
        """The writer could not open (or broke): answer every request with the error until closed."""
        while True:
            it = self._queue.get()
            if isinstance(it, Stop):
                post([(it.loop, (it.future, None, None))])
                return
            post([(it.loop, (it.future, None, exc))])
