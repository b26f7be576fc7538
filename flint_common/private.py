"""Private state: the umask Flint's processes run with, private writes, tightening old state dirs.

Everything Flint keeps on disk (the store, the token, the CA key, the kubeconfig, logs, artifacts)
is its owner's alone: directories 0700, files 0600. A umask of 077 gives that to every file any
Flint process (or library, SQLite's `-wal` and `-shm` included) creates; a state directory left
readable by an older Flint is tightened once, on start.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
"""Group and others get nothing."""


def private_umask() -> int:
    """Set the process umask to 077 (inherited by every child); returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write `data` to `path` as a 0600 file, atomically (a temp file renamed into place), the
    parent made 0700 if missing. With `exclusive`, an existing `path` is kept and False returned.
    Blocking: file I/O."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if exclusive:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a file left by a crash
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
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


def ensure_private_dir(path: Path) -> int:
    """Create `path` (0700) or tighten it and its contents if an older Flint left it readable by
    others; returns how many paths were tightened (0 when it was already private). Blocking."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not is_loose(path.stat().st_mode):
        return 0
    return tighten_tree(path)
