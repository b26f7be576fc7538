"""Content-addressed, read-only snapshots of directories: what an immutable revision runs from."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import stat
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_SKIP_NAMES = frozenset({"__pycache__", ".git"})
_SKIP_SUFFIXES = (".pyc",)
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_FORMAT = b"flint-artifact-v1\n"
_CHUNK = 1 << 20
_STALE_TMP_S = 3600.0
"""`gc` removes temp dirs of interrupted snapshots older than this (seconds)."""
DEFAULT_MAX_BYTES = 2 * 1024**3
"""Default cap on the total size of the regular files of one snapshot (2 GiB)."""
DEFAULT_MAX_FILES = 100_000
"""Default cap on the number of entries (files, directories, symlinks) of one snapshot."""


class SnapshotTooLarge(ValueError):
    """The image directory has more files or bytes than the store's limits allow."""


class SnapshotCancelled(Exception):
    """`snapshot` stopped because its `cancel` event was set (nothing was stored)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    rel: str
    """Relative POSIX path inside the tree."""
    kind: Literal["dir", "file", "link"]
    executable: bool = False
    target: str = ""
    """Symlink target, verbatim."""
    size: int = 0
    """Size in bytes of a regular file (as stat saw it during the walk)."""


def _skipped(name: str) -> bool:
    return name in _SKIP_NAMES or name.endswith(_SKIP_SUFFIXES)


@dataclass(slots=True)
class _Guard:
    """What a walk must stay out of, how much it may read, and when to give up."""

    src: Path
    """The walk's root, resolved."""
    exclude: frozenset[Path] = frozenset()
    """Resolved directories never descended into (the store's root, the state dir...)."""
    exclude_ids: frozenset[tuple[int, int]] = frozenset()
    """(st_dev, st_ino) of the excluded directories that exist (bind mounts, hard aliases)."""
    max_bytes: int | None = None
    max_files: int | None = None
    cancel: threading.Event | None = None
    entries: int = 0
    """Entries counted so far."""
    total_bytes: int = 0
    """Bytes of regular files counted so far."""

    @classmethod
    def make(
        cls,
        src: Path,
        exclude: Iterable[Path] = (),
        max_bytes: int | None = None,
        max_files: int | None = None,
        cancel: threading.Event | None = None,
    ) -> _Guard:
        resolved = frozenset(Path(p).resolve() for p in exclude)
        ids = set()
        for p in resolved:
            try:
                st = os.stat(p)
            except OSError:
                continue
            ids.add((st.st_dev, st.st_ino))
        return cls(
            src=Path(src).resolve(),
            exclude=resolved,
            exclude_ids=frozenset(ids),
            max_bytes=max_bytes,
            max_files=max_files,
            cancel=cancel,
        )

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise SnapshotCancelled(f"snapshot of {self.src} cancelled")

    def excluded(self, rel: str, st: os.stat_result) -> bool:
        # Symlinks are never followed, so `src/rel` is already a resolved path.
        return (st.st_dev, st.st_ino) in self.exclude_ids or (self.src / rel) in self.exclude

    def count(self, entry: _Entry) -> None:
        """Account for one entry; raise `SnapshotTooLarge` as soon as a limit is crossed."""
        self.entries += 1
        self.total_bytes += entry.size
        if self.max_files is not None and self.entries > self.max_files:
            raise SnapshotTooLarge(
                f"image folder {self.src} has more than {self.max_files} files and directories "
                f"(the snapshot limit); point image at the app's own folder, not a parent "
                f"folder such as your home directory"
            )
        if self.max_bytes is not None and self.total_bytes > self.max_bytes:
            raise SnapshotTooLarge(
                f"image folder {self.src} holds more than {_human(self.max_bytes)} of files "
                f"(the snapshot limit); point image at the app's own folder, not a parent "
                f"folder such as your home directory"
            )


def _human(n: int) -> str:
    """`n` bytes, readably: 2147483648 → "2 GiB"."""
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{round(size, 2):g} {unit}"


def _walk(root: Path, guard: _Guard | None = None, rel: str = "") -> Iterator[_Entry]:
    """Entries below `root` in a deterministic order (sorted by name, depth first).

    Symlinks are never followed; sockets, FIFOs and devices are skipped, and so are the
    guard's excluded directories (with everything below them)."""
    with os.scandir(root / rel if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if _skipped(e.name):
            continue
        if guard is not None:
            guard.check_cancel()
        sub = f"{rel}/{e.name}" if rel else e.name
        st = e.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            entry = _Entry(sub, "link", target=os.readlink(e.path))
        elif stat.S_ISDIR(st.st_mode):
            if guard is not None and guard.excluded(sub, st):
                continue
            entry = _Entry(sub, "dir")
        elif stat.S_ISREG(st.st_mode):
            entry = _Entry(sub, "file", executable=bool(st.st_mode & 0o111), size=st.st_size)
        else:
            continue
        if guard is not None:
            guard.count(entry)
        yield entry
        if entry.kind == "dir":
            yield from _walk(root, guard, sub)


def _entry_record(entry: _Entry, content_hex: str) -> bytes:
    if entry.kind == "dir":
        return b"D\0" + entry.rel.encode() + b"\n"
    if entry.kind == "link":
        return b"L\0" + entry.rel.encode() + b"\0" + entry.target.encode() + b"\n"
    mode = b"x" if entry.executable else b"-"
    return b"F\0" + entry.rel.encode() + b"\0" + mode + b"\0" + content_hex.encode() + b"\n"


def _hash_file(path: Path, copy_to: Path | None = None, guard: _Guard | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as src:
        if copy_to is None:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                if guard is not None:
                    guard.check_cancel()
        else:
            with open(copy_to, "xb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
                    if guard is not None:
                        guard.check_cancel()
    return h.hexdigest()


def _digest_tree(src: Path, copy_to: Path | None = None, guard: _Guard | None = None) -> str:
    """The tree's digest; with `copy_to`, also copy it there (hashing what is copied)."""
    h = hashlib.sha256(_FORMAT)
    dirs: list[Path] = []
    for entry in _walk(src, guard):
        content = ""
        if copy_to is not None:
            dst = copy_to / entry.rel
            if entry.kind == "dir":
                dst.mkdir()
                dirs.append(dst)
            elif entry.kind == "link":
                os.symlink(entry.target, dst)
            else:
                content = _hash_file(src / entry.rel, dst, guard)
                os.chmod(dst, 0o500 if entry.executable else 0o400)
        elif entry.kind == "file":
            content = _hash_file(src / entry.rel, None, guard)
        h.update(_entry_record(entry, content))
    if copy_to is not None:
        for d in reversed(dirs):  # children before parents
            os.chmod(d, 0o500)
        os.chmod(copy_to, 0o500)
    return "sha256:" + h.hexdigest()


def _make_writable_and_remove(path: Path) -> None:
    """rmtree for read-only trees: give the owner write access to every directory first."""
    if not path.exists() and not path.is_symlink():
        return
    for dirpath, _dirnames, _files in os.walk(path):
        os.chmod(dirpath, 0o700)
    shutil.rmtree(path)


class ArtifactStore:
    """Immutable directory snapshots under `root`, named by the sha256 digest of their content.

    Layout: `root/sha256-<hex>/` (read-only and the owner's alone: files 0400 or 0500, directories 0500) and
    `root/.tmp-*` while a snapshot is being written (renamed into place atomically).

    A snapshot never descends into `root` itself nor into an `exclude` directory (compared as
    resolved paths, and by device and inode), so an image folder that contains the store (say
    `image: ~` with the state dir under `~/.local/state/flint`) cannot copy the store into
    itself. A folder with more than `max_files` entries (files, directories and symlinks) or
    more than `max_bytes` of file content is refused with `SnapshotTooLarge` while it is being
    hashed, before anything is copied."""

    def __init__(
        self,
        root: Path,
        *,
        exclude: Iterable[Path] = (),
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> None:
        self.root = Path(root)
        self.exclude: tuple[Path, ...] = tuple(Path(p) for p in exclude)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._lock = threading.Lock()
        """Held while a snapshot is reused or stored (and pinned) and while `gc` checks and
        removes one, so a reuse never interleaves with a removal of the same snapshot."""
        self._pins: Counter[str] = Counter()
        """Digests in use by a caller that has not recorded them yet (`snapshot(pin=True)`
        until `release`); `gc` never removes them, whatever the keep-set says."""

    @staticmethod
    def digest_of(src: Path) -> str:
        """The digest `snapshot(src)` would return, without copying (blocking I/O).

        Unlike `snapshot`, this applies no exclusions or limits."""
        return _digest_tree(Path(src))

    def _guard(self, src: Path, cancel: threading.Event | None) -> _Guard:
        return _Guard.make(
            src,
            exclude=(self.root, *self.exclude),
            max_bytes=self.max_bytes,
            max_files=self.max_files,
            cancel=cancel,
        )

    def snapshot(
        self, src: Path, cancel: threading.Event | None = None, *, pin: bool = False
    ) -> str:
        """Copy directory `src` into the store; return its `sha256:<hex>` digest (blocking I/O).

        The digest covers sorted relative paths, executable bits, symlink targets and file
        contents; `__pycache__`, `.git` and `*.pyc` are left out, and so are the store's root
        and the `exclude` directories. An existing identical snapshot is reused.

        Reusing or storing a snapshot restarts its age (its mtime, which `gc`'s `min_age_s`
        reads), under the lock `gc` takes; with `pin`, the digest is also pinned in the same
        step, so `gc` leaves it alone until `release(digest)`, however old it is and whatever
        its keep-set (the caller has not recorded the digest anywhere yet).

        Raises `SnapshotTooLarge` (a ValueError) when a limit is crossed, before anything is
        copied, and `SnapshotCancelled` once `cancel` is set (checked for every file and every
        MiB copied); either way nothing is left in the store."""
        src = Path(src)
        if not src.is_dir():
            raise NotADirectoryError(f"not a directory: {src}")
        digest = _digest_tree(src, guard=self._guard(src, cancel))
        with self._lock:
            if self.exists(digest):
                self._use(digest, pin)
                return digest
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            # The digest of what was copied is authoritative: `src` may change meanwhile (the
            # limits apply again, in case it grew).
            digest = _digest_tree(src, copy_to=tmp, guard=self._guard(src, cancel))
            final = self.path(digest)
            with self._lock:
                try:
                    os.rename(tmp, final)
                except OSError:
                    if not final.is_dir():
                        raise
                self._use(digest, pin)
            if tmp.exists():
                # Someone else stored the same content first: theirs is identical. The digest
                # is taken (and maybe pinned) already: a copy left behind is only litter.
                with contextlib.suppress(OSError):
                    _make_writable_and_remove(tmp)
        except BaseException:
            _make_writable_and_remove(tmp)
            raise
        return digest

    def _use(self, digest: str, pin: bool) -> None:
        """A caller takes `digest`: its age restarts, and it is pinned if asked (lock held)."""
        os.utime(self.path(digest))
        if pin:
            self._pins[digest] += 1

    def release(self, digest: str) -> None:
        """Drop one pin of `digest` (`snapshot(pin=True)`), once the caller has recorded it where
        the GC's keep-set is read from. Its age restarts too, so `gc`'s `min_age_s` covers the
        time until that record is seen (a cache catching up)."""
        with self._lock:
            self._pins[digest] -= 1
            if self._pins[digest] <= 0:
                del self._pins[digest]
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path(digest))

    async def asnapshot(self, src: Path, *, pin: bool = False) -> str:
        """`snapshot` in a worker thread, for use on an event loop.

        If the awaiting task is cancelled, the worker is told to stop (it gives up within a
        file or a MiB) and waited for, so no thread keeps copying after shutdown; a pin it took
        anyway is released."""
        cancel = threading.Event()
        work = asyncio.ensure_future(asyncio.to_thread(self.snapshot, src, cancel, pin=pin))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            cancel.set()
            await asyncio.wait([work])
            # Retrieved either way (SnapshotCancelled is the expected outcome); a snapshot that
            # finished before it saw the cancel gives its pin back.
            if not work.cancelled() and work.exception() is None and pin:
                await asyncio.to_thread(self.release, work.result())
            raise

    def path(self, digest: str) -> Path:
        """Where the snapshot with `digest` lives (it may not exist)."""
        m = _DIGEST_RE.match(digest)
        if m is None:
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / f"sha256-{m.group(1)}"

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_dir()

    def materialise(self, digest: str, revision_key: str) -> Path:
        """The read-only directory revision `revision_key` runs from.

        Snapshots are immutable, so every revision with the same content shares one directory."""
        p = self.path(digest)
        if not p.is_dir():
            raise FileNotFoundError(f"artifact {digest} (for revision {revision_key}) not found")
        return p

    def digests(self) -> set[str]:
        """Every stored digest."""
        if not self.root.is_dir():
            return set()
        return {
            "sha256:" + p.name.removeprefix("sha256-")
            for p in self.root.iterdir()
            if p.name.startswith("sha256-") and p.is_dir()
        }

    def gc(self, keep: set[str], min_age_s: float = 0.0) -> set[str]:
        """Remove every snapshot not in `keep`, not pinned and older than `min_age_s` (a snapshot
        just taken or reused may not be recorded by its revision yet), and stale temp dirs;
        return what was removed. Each check and removal holds the lock `snapshot` reuses under."""
        removed = set()
        for digest in self.digests() - set(keep):
            with self._lock:
                if digest in self._pins:
                    continue
                try:
                    if min_age_s and self.path(digest).stat().st_mtime > time.time() - min_age_s:
                        continue
                except FileNotFoundError:
                    continue
                _make_writable_and_remove(self.path(digest))
            removed.add(digest)
        if self.root.is_dir():
            now = time.time()
            for p in self.root.glob(".tmp-*"):
                try:
                    if now - p.stat().st_mtime > _STALE_TMP_S:
                        _make_writable_and_remove(p)
                except FileNotFoundError:
                    pass
        return removed

    async def agc(self, keep: set[str]) -> set[str]:
        """`gc` in a worker thread."""
        return await asyncio.to_thread(self.gc, keep)
