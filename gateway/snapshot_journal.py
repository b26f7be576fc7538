"""A worker's persisted routing state as the last full snapshot plus an append-only journal of
the deltas applied since, so persisting one change costs O(change), not O(snapshot).

Why: a gateway restarted in place serves its last routes while the controller is away
(`ControllerLink.load_persisted`), so every worker persists what it serves. At 10,000 Services
the snapshot is ~6 MiB of JSON: re-encoding and rewriting it on every change cost a worker
~94 ms of CPU per change, far over issue 15's 20 ms.

Files, next to each other (`GatewaySettings.snapshot_path` is the first):

    snapshot.json         the full snapshot (`wire.encode_snapshot`), replaced whole
                          (temp file + fsync + os.replace); its version is its first key,
                          read with a bounded read (`HEAD_BYTES`), never by parsing the file
    snapshot.json.deltas  one line per delta applied since: `wire.DeltaMessage(delta).encode()`
                          (it carries its base and version); line 1's base is the snapshot's
                          version and each next line's base is the previous line's version
    snapshot.json.lock    flock'ed exclusively by a writer (several workers share the files)
                          and shared by a reader while it reads the two files

On a delta (`SnapshotJournal.persist_delta`), under the lock: the persisted version is the
journal's last line's, or the snapshot's when the journal is empty. The delta's line is
appended when it chains (its base is that version) and the journal is within its bound
(`JournalSettings`); when it does not chain (or the bound is passed) and the worker's snapshot
is newer than what is persisted, the full snapshot is written and the journal removed
(compaction); else (another worker got there first, or this one lags) nothing is written. A
full snapshot message (a relink) compacts the same way (`persist_snapshot`). Amortised, a
change costs a worker one small append plus 1/`max_lines` (or less) of a full write.

A writer knows the journal's state without reading it whole: it remembers how far it has read
and, while the snapshot file is the same one, reads only the lines appended since (by any
worker: the same deltas, so O(delta) per change); after another worker's compaction it reads
the (new, short) journal from its start. Only each line's header (its format, base and version,
the message's first keys) is looked at there; loading decodes every line.

Crashes: the snapshot is always whole (os.replace). A torn last line (a crash during an
append) ends the replay on load and is cut off by the next append. A journal left behind by a
compaction interrupted between replacing the snapshot and removing the journal does not chain
to the new snapshot (its first base is older), so it is neither replayed nor appended to.

Decision on `DELTA_PERSIST_DELAY_S` (the 1 s batching of the whole-snapshot writes): removed.
An append is O(delta) and cheaper than a timer task, so each delta is appended at once, before
its ack: a worker restarted in place loses nothing it acked, and no write is pending when the
link stops. Appends are not fdatasync'ed by default (`sync_appends`): a sync before every ack
put the disk's latency into every change's way to the gateways, and the files are a cache of
what the controller sends again on the next link, so a power loss costs at most the last
deltas' routes until the gateway links again (a process crash costs nothing: the page cache
keeps them).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from flint_common.delta import DeltaMismatch, SnapshotDelta, apply_delta
from flint_common.snapshot import Snapshot
from flint_common.wire import DELTA_FORMAT, DeltaMessage, WireError, encode_snapshot, load_snapshot

log = logging.getLogger("flint.gateway.snapshot_journal")

JOURNAL_SUFFIX = ".deltas"
"""The journal is the snapshot file's name plus this (`snapshot.json.deltas`)."""
LOCK_SUFFIX = ".lock"
"""The lock file is the snapshot file's name plus this (`snapshot.json.lock`)."""
HEAD_BYTES = 128
"""Bytes read from the start of the snapshot file to find its version (`{"version":N,`)."""

_SNAPSHOT_HEAD = re.compile(rb'\A\s*\{\s*"version"\s*:\s*(-?\d+)\s*[,}]')
"""`wire.encode_snapshot` writes `Snapshot.version` first (the dataclass's first field);
a file whose version is not first (hand-written) counts as unknown and is replaced."""
_LINE_HEAD = re.compile(rb'\{"type":"delta","format":(\d+),"base":(-?\d+),"version":(-?\d+)[,}]')
"""The first keys of `DeltaMessage.to_wire` as orjson writes them (in that order)."""


@dataclass(frozen=True, slots=True)
class JournalSettings:
    """When the journal is compacted into a full snapshot, and how appends are made durable."""

    max_lines: int = 1000
    """Lines after which the next persist writes the full snapshot: bounds the replay on load
    (a line costs a decode and an `apply_delta`, O(entries): about 0.3 ms at 10,000 Services,
    so at most ~0.3 s on top of the snapshot's own ~0.5 s) and amortises the full write (~120
    ms at 10,000 Services) to ~0.12 ms a change, next to ~0.1-0.15 ms for the append itself."""
    max_bytes_ratio: float = 0.25
    """The journal's bytes past this fraction of the snapshot file's also compact: a journal
    of big deltas is not replayed when loading the snapshot they sum to is cheaper."""
    min_compact_bytes: int = 64 * 1024
    """But never for a journal under this many bytes (a small installation's snapshot is a few
    KiB: without this floor nearly every delta would rewrite it)."""
    sync_appends: bool = False
    """fdatasync each appended line before the ack, so that not even a power loss loses an
    acked change (default off: see the module docstring; a process crash never loses one, the
    page cache keeps it). Full writes are always fsync'ed."""


@dataclass(frozen=True, slots=True)
class Persisted:
    """What the files hold, as a writer sees it (headers only)."""

    snapshot_version: int | None
    """The snapshot file's version; None: no file, or one whose version is unreadable."""
    snapshot_bytes: int
    journal_version: int | None
    """The last chaining line's version; None: no line chains (or no journal)."""
    journal_lines: int
    """The chaining lines."""
    journal_end: int
    """The offset just after the last chaining line: anything beyond it is cut off on append."""

    @property
    def version(self) -> int | None:
        """The version a load reaches: the journal's last, else the snapshot's."""
        return self.journal_version if self.journal_version is not None else self.snapshot_version


class Action(Enum):
    """What a writer does with the snapshot or delta it was handed."""

    APPEND = "append"
    """The delta's line is appended to the journal."""
    COMPACT = "compact"
    """The full snapshot is written and the journal removed."""
    SKIP = "skip"
    """Nothing: the files already hold that version or a newer one."""


# ---------------------------------------------------------------------------------------------
# Decisions (pure)
# ---------------------------------------------------------------------------------------------


def over_bound(persisted: Persisted, settings: JournalSettings) -> bool:
    """Whether the journal has grown enough that the next persist compacts it."""
    if persisted.journal_lines >= settings.max_lines:
        return True
    limit = max(settings.min_compact_bytes, persisted.snapshot_bytes * settings.max_bytes_ratio)
    return persisted.journal_end > limit


def for_snapshot(persisted: Persisted, version: int) -> Action:
    """A full snapshot at `version`: written (compacting) when newer than what is persisted."""
    current = persisted.version
    return Action.COMPACT if current is None or version > current else Action.SKIP


def for_delta(persisted: Persisted, delta: SnapshotDelta, settings: JournalSettings) -> Action:
    """A delta the worker applied (its snapshot is then at `delta.version`): appended when it
    chains and the journal is within bounds, else the snapshot written when newer."""
    current = persisted.version
    if current is not None and current == delta.base and not over_bound(persisted, settings):
        return Action.APPEND
    return for_snapshot(persisted, delta.version)


# ---------------------------------------------------------------------------------------------
# The files (blocking: call through asyncio.to_thread)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Seen:
    """How far a writer has read the journal of one snapshot file."""

    snapshot_id: tuple[int, int, int, int]
    """(st_dev, st_ino, st_size, st_mtime_ns) of the snapshot file then."""
    journal_id: tuple[int, int]
    """(st_dev, st_ino) of the journal then."""
    persisted: Persisted


class SnapshotJournal:
    """The persisted snapshot at `path` and its journal, for one worker (other workers, with
    their own objects, may share the files: every write is under the lock file's flock).

    Blocking; calls on one object must not overlap (the link awaits each in turn).
    """

    def __init__(self, path: Path, settings: JournalSettings | None = None) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + JOURNAL_SUFFIX)
        self.lock_path = path.with_name(path.name + LOCK_SUFFIX)
        self.settings = settings or JournalSettings()
        self._seen: _Seen | None = None

    # -- writing ------------------------------------------------------------------------------

    def persist_snapshot(self, snapshot: Snapshot) -> bool:
        """Write `snapshot` whole and remove the journal, unless the files already reach its
        version or a newer one. Returns whether it was written."""
        with self._locked(fcntl.LOCK_EX):
            if for_snapshot(self._persisted(), snapshot.version) is Action.SKIP:
                return False
            self._compact(snapshot)
            return True

    def persist_delta(self, delta: SnapshotDelta, snapshot: Snapshot) -> Action:
        """Persist `delta`, which took this worker to `snapshot` (at `delta.version`): its line
        appended, or `snapshot` written whole, or nothing (`for_delta`). Returns which."""
        with self._locked(fcntl.LOCK_EX):
            persisted = self._persisted()
            action = for_delta(persisted, delta, self.settings)
            if action is Action.APPEND:
                self._append(persisted, delta)
            elif action is Action.COMPACT:
                self._compact(snapshot)
            return action

    def persisted(self) -> Persisted:
        """What the files hold now (read under the lock)."""
        with self._locked(fcntl.LOCK_SH):
            return self._persisted()

    @contextlib.contextmanager
    def _locked(self, how: int) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), how)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _compact(self, snapshot: Snapshot) -> None:
        data = encode_snapshot(snapshot)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal_path)  # if this is lost, the old journal does not chain
        _fsync_dir(self.path.parent)
        self._seen = None

    def _append(self, persisted: Persisted, delta: SnapshotDelta) -> None:
        line = DeltaMessage(delta).encode().encode() + b"\n"
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            st = os.fstat(fd)
            if st.st_size != persisted.journal_end:
                os.ftruncate(fd, persisted.journal_end)  # a torn or stale tail
            written = os.write(fd, line)  # one write of a regular file in append mode: not interleaved
            if written != len(line):  # a full disk: the link logs it, the next append cuts it off
                raise OSError(errno.ENOSPC, f"{self.journal_path}: wrote {written} of {len(line)} bytes")
            if self.settings.sync_appends:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        if persisted.journal_end == 0 and self.settings.sync_appends:
            _fsync_dir(self.path.parent)  # the journal may be new: make its name durable
        seen = self._seen
        if seen is not None:
            self._seen = _Seen(seen.snapshot_id, (st.st_dev, st.st_ino), Persisted(
                persisted.snapshot_version, persisted.snapshot_bytes, delta.version,
                persisted.journal_lines + 1, persisted.journal_end + len(line),
            ))

    def _persisted(self) -> Persisted:
        """The files' state (call under the lock), reading only headers and new lines."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                head = f.read(HEAD_BYTES)
        except FileNotFoundError:
            self._seen = None
            return Persisted(None, 0, None, 0, 0)
        snapshot_id = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        match = _SNAPSHOT_HEAD.match(head)
        if match is None:
            self._seen = None
            return Persisted(None, st.st_size, None, 0, 0)
        base = Persisted(int(match[1]), st.st_size, None, 0, 0)
        try:
            with open(self.journal_path, "rb") as f:
                jst = os.fstat(f.fileno())
                journal_id = (jst.st_dev, jst.st_ino)
                seen = self._seen
                if (seen is not None and seen.snapshot_id == snapshot_id
                        and seen.journal_id == journal_id
                        and jst.st_size >= seen.persisted.journal_end):
                    start = seen.persisted
                else:
                    start = base
                f.seek(start.journal_end)
                persisted = _scan(start, f.read())
        except FileNotFoundError:
            self._seen = _Seen(snapshot_id, (0, 0), base)
            return base
        self._seen = _Seen(snapshot_id, journal_id, persisted)
        return persisted

    # -- loading ------------------------------------------------------------------------------

    def load(self) -> Snapshot | None:
        """The snapshot with the journal's lines applied in order, up to the first line that
        does not decode or does not chain (logged: event=snapshot_journal_stopped); None when
        there is no snapshot file. Raises `WireError` when the snapshot file is corrupt."""
        with self._locked(fcntl.LOCK_SH):
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                return None
            try:
                journal = self.journal_path.read_bytes()
            except FileNotFoundError:
                journal = b""
        snapshot = load_snapshot(raw)
        for number, line, complete in _lines(journal):
            why = None
            if not complete:
                why = "a torn last line (no newline)"
            else:
                try:
                    snapshot = apply_delta(snapshot, DeltaMessage.decode(line).delta)
                except (WireError, DeltaMismatch) as exc:
                    why = str(exc)
            if why is not None:
                log.warning("event=snapshot_journal_stopped path=%s line=%d version=%d why=%r",
                            self.journal_path, number, snapshot.version, why)
                break
        return snapshot


def _lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(line number from 1, the line without its newline, whether it had one) of `data`."""
    pos, number = 0, 0
    while pos < len(data):
        number += 1
        end = data.find(b"\n", pos)
        if end < 0:
            yield number, data[pos:], False
            return
        yield number, data[pos:end], True
        pos = end + 1


def _scan(start: Persisted, data: bytes) -> Persisted:
    """`start` advanced over the journal lines in `data` (read from `start.journal_end`) that
    chain, by their headers; stops at the first that does not (or is torn)."""
    version = start.version
    lines, end = start.journal_lines, start.journal_end
    last = start.journal_version
    for _, line, complete in _lines(data):
        match = _LINE_HEAD.match(line) if complete else None
        if (match is None or int(match[1]) != DELTA_FORMAT or version is None
                or int(match[2]) != version):
            break
        version = last = int(match[3])
        lines += 1
        end += len(line) + 1
    return Persisted(start.snapshot_version, start.snapshot_bytes, last, lines, end)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_snapshot_file(path: Path) -> Snapshot | None:
    """The persisted snapshot at `path` with its journal replayed (`SnapshotJournal.load`)."""
    return SnapshotJournal(path).load()


def persist_snapshot_file(path: Path, snapshot: Snapshot) -> bool:
    """Write `snapshot` whole at `path` unless it already reaches that version or a newer one
    (`SnapshotJournal.persist_snapshot`). Returns whether it was written."""
    return SnapshotJournal(path).persist_snapshot(snapshot)
