"""Content-addressed, read-only snapshots of directories: what an immutable revision runs from."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
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


@dataclass(frozen=True, slots=True)
class _Entry:
    rel: str
    """Relative POSIX path inside the tree."""
    kind: Literal["dir", "file", "link"]
    executable: bool = False
    target: str = ""
    """Symlink target, verbatim."""


def _skipped(name: str) -> bool:
    return name in _SKIP_NAMES or name.endswith(_SKIP_SUFFIXES)


def _walk(root: Path, rel: str = "") -> Iterator[_Entry]:
    """Entries below `root` in a deterministic order (sorted by name, depth first).

    Symlinks are never followed; sockets, FIFOs and devices are skipped."""
    with os.scandir(root / rel if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if _skipped(e.name):
            continue
        sub = f"{rel}/{e.name}" if rel else e.name
        st = e.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            yield _Entry(sub, "link", target=os.readlink(e.path))
        elif stat.S_ISDIR(st.st_mode):
            yield _Entry(sub, "dir")
            yield from _walk(root, sub)
        elif stat.S_ISREG(st.st_mode):
            yield _Entry(sub, "file", executable=bool(st.st_mode & 0o111))


def _entry_record(entry: _Entry, content_hex: str) -> bytes:
    if entry.kind == "dir":
        return b"D\0" + entry.rel.encode() + b"\n"
    if entry.kind == "link":
        return b"L\0" + entry.rel.encode() + b"\0" + entry.target.encode() + b"\n"
    mode = b"x" if entry.executable else b"-"
    return b"F\0" + entry.rel.encode() + b"\0" + mode + b"\0" + content_hex.encode() + b"\n"


def _hash_file(path: Path, copy_to: Path | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as src:
        if copy_to is None:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
        else:
            with open(copy_to, "xb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
    return h.hexdigest()


def _digest_tree(src: Path, copy_to: Path | None = None) -> str:
    """The tree's digest; with `copy_to`, also copy it there (hashing what is copied)."""
    h = hashlib.sha256(_FORMAT)
    dirs: list[Path] = []
    for entry in _walk(src):
        content = ""
        if copy_to is not None:
            dst = copy_to / entry.rel
            if entry.kind == "dir":
                dst.mkdir()
                dirs.append(dst)
            elif entry.kind == "link":
                os.symlink(entry.target, dst)
            else:
                content = _hash_file(src / entry.rel, dst)
                os.chmod(dst, 0o555 if entry.executable else 0o444)
        elif entry.kind == "file":
            content = _hash_file(src / entry.rel)
        h.update(_entry_record(entry, content))
    if copy_to is not None:
        for d in reversed(dirs):  # children before parents
            os.chmod(d, 0o555)
        os.chmod(copy_to, 0o555)
    return "sha256:" + h.hexdigest()


def _make_writable_and_remove(path: Path) -> None:
    """rmtree for read-only trees: give the owner write access to every directory first."""
    if not path.exists() and not path.is_symlink():
        return
    for dirpath, _dirnames, _files in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path)


class ArtifactStore:
    """Immutable directory snapshots under `root`, named by the sha256 digest of their content.

    Layout: `root/sha256-<hex>/` (read-only: files 0444 or 0555, directories 0555) and
    `root/.tmp-*` while a snapshot is being written (renamed into place atomically)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def digest_of(src: Path) -> str:
        """The digest `snapshot(src)` would return, without copying (blocking I/O)."""
        return _digest_tree(Path(src))

    def snapshot(self, src: Path) -> str:
        """Copy directory `src` into the store; return its `sha256:<hex>` digest (blocking I/O).

        The digest covers sorted relative paths, executable bits, symlink targets and file
        contents; `__pycache__`, `.git` and `*.pyc` are left out. An existing identical
        snapshot is reused."""
        src = Path(src)
        if not src.is_dir():
            raise NotADirectoryError(f"not a directory: {src}")
        digest = _digest_tree(src)
        if self.exists(digest):
            return digest
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            # The digest of what was copied is authoritative: `src` may change meanwhile.
            digest = _digest_tree(src, copy_to=tmp)
            final = self.path(digest)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                # Someone else stored the same content first: theirs is identical.
                _make_writable_and_remove(tmp)
        except BaseException:
            _make_writable_and_remove(tmp)
            raise
        return digest

    async def asnapshot(self, src: Path) -> str:
        """`snapshot` in a worker thread, for use on an event loop."""
        return await asyncio.to_thread(self.snapshot, src)

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

    def gc(self, keep: set[str]) -> set[str]:
        """Remove every snapshot not in `keep` (and stale temp dirs); return what was removed."""
        removed = set()
        for digest in self.digests() - set(keep):
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
