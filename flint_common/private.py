"""Private state: the umask Flint's processes run with, private writes, tightening old state dirs.

Everything Flint keeps on disk (the store, the token, the CA key, the kubeconfig, logs, artifacts)
is its owner's alone: directories 0700, files 0600. A umask of 077 gives that to every file any
Flint process (or library, SQLite's `-wal` and `-shm` included) creates; a state directory left
readable by an older Flint is tightened once, on start.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

PRIVATE_UMASK = 0o077
"""Group and others get nothing."""


def private_umask() -> int:
    """Set the process umask to 077 (inherited by every child); returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write `data` to `path` as a 0600 file, atomically: a complete temp file is renamed (or,
    with `exclusive`, hard-linked) into place, so a reader never sees a partial file and a crash
    leaves none. The parent is made 0700 if missing. A symlink at `path` is followed (its target
    is replaced, the link kept). With `exclusive`, an existing `path` is kept and False returned.
    Blocking: file I/O."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        if exclusive:
            try:
                os.link(tmp, path)  # atomic, and fails if `path` exists
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                return _create_exclusive(path, data)  # a filesystem without hard links
            finally:
                tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return True


def _create_exclusive(path: Path, data: bytes) -> bool:
    """O_EXCL create, then write: not atomic for readers (callers that race hold a lock)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


def is_loose(mode: int) -> bool:
    """Whether a file mode lets the group or others in."""
    return bool(stat.S_IMODE(mode) & 0o077)


def tighten_tree(root: Path) -> int:
    """Take every group and other permission off `root` and everything under it (symlinks are
    not followed); returns how many paths changed. Blocking: walks the tree."""
    changed = 0

    def fix(path: str) -> None:
        nonlocal changed
        try:
            st = os.lstat(path)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode) or not is_loose(st.st_mode):
            return
        with contextlib.suppress(OSError):
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
            changed += 1

    fix(str(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            fix(os.path.join(dirpath, name))
    return changed


class UnsafeStateDir(ValueError):
    """A directory that cannot be made a private state dir without harming what else is in it."""


FLINT_ENTRIES = frozenset({
    "store.db", "store.db-wal", "store.db-shm", "replicas", "artifacts", "auth", "eventing",
    "gateway", "kubeconfig", "tls", "logs", "sandbox", "runtime.lock", "controller.pid",
})
"""What a Flint state dir holds. A loose directory is taken for an older Flint's (and tightened
with everything in it) only when it has a store and nothing else but these."""


def ensure_private_dir(path: Path) -> int:
    """Create `path` (0700), or make sure it is private: owned by this user, not shared, and not
    readable by others. A loose directory that an older Flint left (a store and only Flint's
    entries) is tightened with everything in it; an empty one just gets 0700; anything else is
    refused, so a state dir given as `.` or `/tmp` never chmods files that are not Flint's. Returns how many
    paths were tightened (0 when it was already private). Raises `UnsafeStateDir`. Blocking."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise UnsafeStateDir(f"state dir {path} belongs to another user (uid {st.st_uid})")
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_ISVTX | stat.S_IWOTH):
        raise UnsafeStateDir(
            f"state dir {path} is a shared directory (mode {mode:o}): give Flint a directory "
            "of its own, e.g. a new one under it")
    if not is_loose(st.st_mode):
        return 0
    entries = {e.name for e in os.scandir(path)}
    if not entries:
        os.chmod(path, 0o700)
        return 1
    if "store.db" not in entries or not entries <= FLINT_ENTRIES:
        others = sorted(entries - FLINT_ENTRIES)[:3]
        raise UnsafeStateDir(
            f"state dir {path} is readable by others (mode {mode:o}) and is not a Flint state "
            f"dir ({', '.join(others) if others else 'no store.db'}): refusing to change the "
            f"permissions of what is in it; use a new directory or `chmod 700 {path}` first")
    return tighten_tree(path)
