"""Tests of the content-addressed artifact store."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.builds import artifacts
from controller.builds.artifacts import ArtifactStore, SnapshotCancelled, SnapshotTooLarge


def make_tree(root: Path) -> Path:
    src = root / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "app.py").write_text("print('hi')\n")
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    run = src / "run.sh"
    run.write_text("#!/bin/sh\necho run\n")
    run.chmod(0o755)
    (src / "link").symlink_to("pkg/mod.py")
    (src / "empty").mkdir()
    return src


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def tree_listing(root: Path) -> dict[str, tuple[str, str | bytes, int]]:
    out: dict[str, tuple[str, str | bytes, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), 0)
            elif p.is_dir():
                out[rel] = ("dir", "", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", p.read_bytes(), stat.S_IMODE(st.st_mode))
    return out


def test_same_tree_same_digest(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    d1 = store.snapshot(src)
    d2 = store.snapshot(src)
    assert d1 == d2
    assert d1.startswith("sha256:") and len(d1) == len("sha256:") + 64
    assert store.exists(d1)
    assert ArtifactStore.digest_of(src) == d1
    # An identical copy elsewhere has the same digest.
    other = tmp_path / "other"
    other.mkdir()
    copy = make_tree(other)
    assert store.snapshot(copy) == d1
    assert store.digests() == {d1}


def test_skips_caches_and_git(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    d1 = store.snapshot(src)
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    (src / "stray.pyc").write_bytes(b"junk")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert store.snapshot(src) == d1
    snap = store.path(d1)
    assert not (snap / "__pycache__").exists()
    assert not (snap / ".git").exists()


def test_edit_gives_new_digest_and_old_snapshot_unchanged(
    tmp_path: Path, store: ArtifactStore
) -> None:
    src = make_tree(tmp_path)
    d1 = store.snapshot(src)
    before = tree_listing(store.path(d1))
    (src / "app.py").write_text("print('changed')\n")
    d2 = store.snapshot(src)
    assert d2 != d1
    assert tree_listing(store.path(d1)) == before
    assert (store.path(d1) / "app.py").read_text() == "print('hi')\n"
    assert (store.path(d2) / "app.py").read_text() == "print('changed')\n"


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: (s / "new.txt").write_text(""),
        lambda s: (s / "app.py").rename(s / "app2.py"),
        lambda s: (s / "app.py").chmod(0o755),
        lambda s: ((s / "link").unlink(), (s / "link").symlink_to("app.py")),
        lambda s: (s / "empty" / "sub").mkdir(),
    ],
    ids=["add", "rename", "exec-bit", "symlink-target", "empty-dir"],
)
def test_every_kind_of_change_changes_digest(
    tmp_path: Path, store: ArtifactStore, edit: Callable[[Path], object]
) -> None:
    src = make_tree(tmp_path)
    d1 = store.snapshot(src)
    edit(src)
    assert store.snapshot(src) != d1


def test_non_exec_mode_changes_do_not_matter(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    d1 = store.snapshot(src)
    (src / "app.py").chmod(0o600)
    assert store.snapshot(src) == d1


def test_snapshot_is_read_only(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    snap = store.path(store.snapshot(src))
    listing = tree_listing(snap)
    assert listing["app.py"][2] == 0o400
    assert listing["pkg/mod.py"][2] == 0o400
    assert listing["run.sh"][2] == 0o500
    assert listing["pkg"][2] == 0o500
    assert listing["empty"][2] == 0o500
    assert stat.S_IMODE(snap.stat().st_mode) == 0o500
    if os.geteuid() != 0:  # root ignores permission bits
        with pytest.raises(PermissionError):
            (snap / "app.py").write_text("x")
        with pytest.raises(PermissionError):
            (snap / "new").write_text("x")


def test_symlinks_and_exec_bits_preserved(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    (src / "abs").symlink_to("/nonexistent/target")
    snap = store.path(store.snapshot(src))
    assert (snap / "link").is_symlink()
    assert os.readlink(snap / "link") == "pkg/mod.py"
    assert (snap / "link").read_text() == "X = 1\n"
    assert os.readlink(snap / "abs") == "/nonexistent/target"
    assert os.access(snap / "run.sh", os.X_OK)
    assert not (snap / "app.py").stat().st_mode & 0o111


def test_symlinked_dir_is_not_followed(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    (src / "pkglink").symlink_to("pkg", target_is_directory=True)
    snap = store.path(store.snapshot(src))
    assert (snap / "pkglink").is_symlink()


def test_materialise_path_and_errors(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    d = store.snapshot(src)
    assert store.materialise(d, "default/hello-00001") == store.path(d)
    assert store.path(d).name == "sha256-" + d.removeprefix("sha256:")
    with pytest.raises(FileNotFoundError):
        store.materialise("sha256:" + "0" * 64, "default/x")
    with pytest.raises(ValueError):
        store.path("sha256:../../etc")
    with pytest.raises(NotADirectoryError):
        store.snapshot(tmp_path / "missing")


def test_gc_removes_unreferenced(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    d1 = store.snapshot(src)
    (src / "app.py").write_text("v2\n")
    d2 = store.snapshot(src)
    assert store.gc({d2}) == {d1}
    assert not store.path(d1).exists()
    assert store.exists(d2)
    assert store.digests() == {d2}
    assert store.gc(set()) == {d2}
    assert list(store.root.iterdir()) == []


def _age(store: ArtifactStore, digest: str, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(store.path(digest), (past, past))


def test_reusing_an_old_snapshot_restarts_its_age(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    d = store.snapshot(src)
    _age(store, d, 3600)
    assert store.snapshot(src) == d  # reused by a revision that has not recorded it yet
    assert store.gc(set(), min_age_s=60) == set()
    assert store.exists(d)
    _age(store, d, 3600)
    assert store.gc(set(), min_age_s=60) == {d}


def test_a_pinned_snapshot_outlives_gc_until_released(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    d = store.snapshot(src)
    _age(store, d, 3600)
    assert store.snapshot(src, pin=True) == d
    assert store.snapshot(src, pin=True) == d  # two users
    _age(store, d, 3600)
    assert store.gc(set()) == set()  # pinned: whatever its age and the keep-set
    store.release(d)
    _age(store, d, 3600)
    assert store.gc(set()) == set()  # one pin left
    store.release(d)
    # Released: the age restarts, so the GC's guard covers the time until the record is seen.
    assert store.gc(set(), min_age_s=60) == set()
    _age(store, d, 3600)
    assert store.gc(set(), min_age_s=60) == {d}


def test_a_new_snapshot_can_be_pinned(tmp_path: Path, store: ArtifactStore) -> None:
    d = store.snapshot(make_tree(tmp_path), pin=True)
    assert store.gc(set()) == set()
    store.release(d)
    assert store.gc(set()) == {d}


def test_no_temp_dirs_left(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    store.snapshot(src)
    store.snapshot(src)
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".tmp")] == []


async def test_asnapshot(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    d = await store.asnapshot(src)
    assert d == await asyncio.to_thread(store.snapshot, src)
    assert await store.agc(set()) == {d}


# ---------------------------------------------------------------------------- self-inclusion, limits


def tmp_dirs(store: ArtifactStore) -> list[str]:
    if not store.root.is_dir():
        return []
    return [p.name for p in store.root.iterdir() if p.name.startswith(".tmp")]


def test_store_inside_image_is_not_copied_into_itself(tmp_path: Path) -> None:
    """`image: ~` with the state dir under ~/.local/state/flint: the store and the state dir
    stay out of the snapshot, and snapshotting again is stable (no recursion)."""
    home = make_tree(tmp_path)
    state = home / ".local" / "state" / "flint"
    (state / "logs").mkdir(parents=True)
    (state / "logs" / "x.log").write_text("log\n")
    store = ArtifactStore(state / "artifacts", exclude=[state])
    d1 = store.snapshot(home)
    snap = store.path(d1)
    assert (snap / ".local" / "state").is_dir()
    assert not (snap / ".local" / "state" / "flint").exists()
    assert (snap / "app.py").read_text() == "print('hi')\n"
    # The store now exists inside the image folder: still left out, same digest.
    assert store.snapshot(home) == d1
    (state / "logs" / "y.log").write_text("more\n")  # state changes do not matter either
    assert store.snapshot(home) == d1
    assert store.digests() == {d1}
    assert tmp_dirs(store) == []


def test_store_root_is_excluded_without_being_listed(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    store = ArtifactStore(src / "artifacts")
    d1 = store.snapshot(src)
    assert not (store.path(d1) / "artifacts").exists()
    assert store.snapshot(src) == d1


def test_exclude_compares_resolved_paths(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    state = src / "state"
    (state / "deep").mkdir(parents=True)
    (state / "deep" / "f").write_text("x")
    alias = tmp_path / "alias"
    alias.symlink_to(src, target_is_directory=True)
    # Excluded through a symlinked spelling; snapshotted through another one.
    store = ArtifactStore(tmp_path / "artifacts", exclude=[alias / "state" / ".." / "state"])
    d = store.snapshot(alias)
    assert not (store.path(d) / "state").exists()
    assert (store.path(d) / "pkg" / "mod.py").exists()
    assert d == ArtifactStore(tmp_path / "a2", exclude=[state]).snapshot(src)


def test_too_many_files_is_refused_before_copying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_tree(tmp_path)
    for i in range(20):
        (src / f"f{i}").write_text(str(i))
    hashed: list[Path] = []
    real_hash = artifacts._hash_file

    def counting(path: Path, copy_to: Path | None = None, guard: artifacts._Guard | None = None) -> str:
        hashed.append(path)
        return real_hash(path, copy_to, guard)

    monkeypatch.setattr(artifacts, "_hash_file", counting)
    store = ArtifactStore(tmp_path / "artifacts", max_files=5)
    with pytest.raises(SnapshotTooLarge) as err:
        store.snapshot(src)
    msg = str(err.value)
    assert str(src.resolve()) in msg and "5" in msg
    assert "point image at the app's own folder" in msg
    assert isinstance(err.value, ValueError)
    assert len(hashed) <= 5  # stopped during the walk, not after it
    assert not store.root.exists()  # nothing copied
    assert ArtifactStore(tmp_path / "artifacts", max_files=100).snapshot(src)


def test_too_many_bytes_is_refused_before_reading_the_big_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path)
    with open(src / "big.bin", "wb") as f:
        f.truncate(10 * 1024 * 1024)  # sparse
    hashed: list[str] = []
    real_hash = artifacts._hash_file

    def counting(path: Path, copy_to: Path | None = None, guard: artifacts._Guard | None = None) -> str:
        hashed.append(path.name)
        return real_hash(path, copy_to, guard)

    monkeypatch.setattr(artifacts, "_hash_file", counting)
    store = ArtifactStore(tmp_path / "artifacts", max_bytes=1024 * 1024)
    with pytest.raises(SnapshotTooLarge) as err:
        store.snapshot(src)
    msg = str(err.value)
    assert str(src.resolve()) in msg and "1 MiB" in msg
    assert "point image at the app's own folder" in msg
    assert "big.bin" not in hashed
    assert not store.root.exists()


def test_default_limits() -> None:
    store = ArtifactStore(Path("/nonexistent"))
    assert store.max_bytes == 2 * 1024**3
    assert store.max_files == 100_000


def test_cancel_event_stops_snapshot(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    store = ArtifactStore(tmp_path / "artifacts")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SnapshotCancelled):
        store.snapshot(src, cancel=cancel)
    assert store.digests() == set()
    assert tmp_dirs(store) == []


def test_cancel_during_copy_removes_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_tree(tmp_path)
    store = ArtifactStore(tmp_path / "artifacts")
    cancel = threading.Event()
    real_hash = artifacts._hash_file

    def cancel_on_copy(
        path: Path, copy_to: Path | None = None, guard: artifacts._Guard | None = None
    ) -> str:
        if copy_to is not None:
            cancel.set()  # the hash walk is done; cancel in the middle of copying
        return real_hash(path, copy_to, guard)

    monkeypatch.setattr(artifacts, "_hash_file", cancel_on_copy)
    with pytest.raises(SnapshotCancelled):
        store.snapshot(src, cancel=cancel)
    assert store.digests() == set()
    assert tmp_dirs(store) == []


async def test_cancelled_asnapshot_stops_its_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path)
    for i in range(400):
        (src / f"f{i:03}").write_text(str(i))
    store = ArtifactStore(tmp_path / "artifacts")
    hashed: list[Path] = []
    cancels: list[threading.Event] = []
    outcome: list[BaseException | str] = []
    started = threading.Event()
    real_hash = artifacts._hash_file
    real_snapshot = store.snapshot

    def snapshot(src: Path, cancel: threading.Event | None = None, *, pin: bool = False) -> str:
        assert cancel is not None
        cancels.append(cancel)
        try:
            digest = real_snapshot(src, cancel, pin=pin)
        except BaseException as exc:
            outcome.append(exc)
            raise
        outcome.append(digest)
        return digest

    def blocked(path: Path, copy_to: Path | None = None, guard: artifacts._Guard | None = None) -> str:
        hashed.append(path)
        started.set()
        # Each file waits for the cancel: the walk only ends early if the cancel reaches the
        # worker (else it takes 400 x 60 s, and the test times out).
        if cancels[0].wait(60):
            time.sleep(0.1)  # the worker is slow to stop (the scenario, not a wait)
        return real_hash(path, copy_to, guard)

    monkeypatch.setattr(store, "snapshot", snapshot)
    monkeypatch.setattr(artifacts, "_hash_file", blocked)
    task = asyncio.create_task(store.asnapshot(src))
    try:
        assert await asyncio.to_thread(started.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancel reached the worker, which gave up in the file it was hashing; and
        # asnapshot returned only once the (slow) worker had stopped: its outcome is there.
        assert len(cancels) == 1 and cancels[0].is_set()
        assert len(outcome) == 1 and isinstance(outcome[0], SnapshotCancelled), outcome
        assert len(hashed) == 1
    finally:
        for cancel in cancels:  # never leave the worker blocked, whatever failed
            cancel.set()
    assert await asyncio.to_thread(store.digests) == set()
    assert await asyncio.to_thread(tmp_dirs, store) == []
