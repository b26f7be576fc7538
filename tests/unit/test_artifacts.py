"""Tests of the content-addressed artifact store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from controller.builds.artifacts import ArtifactStore


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
def test_every_kind_of_change_changes_digest(tmp_path: Path, store: ArtifactStore, edit) -> None:  # type: ignore[no-untyped-def]
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
    assert listing["app.py"][2] == 0o444
    assert listing["pkg/mod.py"][2] == 0o444
    assert listing["run.sh"][2] == 0o555
    assert listing["pkg"][2] == 0o555
    assert listing["empty"][2] == 0o555
    assert stat.S_IMODE(snap.stat().st_mode) == 0o555
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


def test_no_temp_dirs_left(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    store.snapshot(src)
    store.snapshot(src)
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".tmp")] == []


async def test_asnapshot(tmp_path: Path, store: ArtifactStore) -> None:
    src = make_tree(tmp_path)
    d = await store.asnapshot(src)
    assert d == store.snapshot(src)
    assert await store.agc(set()) == {d}
