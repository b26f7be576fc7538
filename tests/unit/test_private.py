"""Private files: 0600 atomic writes, and a state dir made private without harming others' files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flint_common.private import UnsafeStateDir, ensure_private_dir, tighten_tree, write_private


def test_write_private_replaces_atomically_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "d" / "f"
    write_private(path, b"one")
    path.chmod(0o644)
    write_private(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not write_private(path, b"three", exclusive=True)
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f"]  # no temp file left


def test_an_exclusive_write_never_leaves_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    assert write_private(path, b"first", exclusive=True)
    assert not write_private(path, b"second", exclusive=True)
    assert path.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]


def test_a_symlinked_file_is_written_through_its_link(tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "config"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "config"
    link.symlink_to(target)
    write_private(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_a_shared_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "someone-elses.txt").write_text("x")
    with pytest.raises(UnsafeStateDir, match="shared directory"):
        ensure_private_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_a_loose_directory_of_other_files_is_refused_untouched(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    project.chmod(0o755)
    (project / "app.py").write_text("print()")
    (project / "app.py").chmod(0o644)
    with pytest.raises(UnsafeStateDir, match="not a Flint state dir"):
        ensure_private_dir(project)
    assert stat.S_IMODE(project.stat().st_mode) == 0o755
    assert stat.S_IMODE((project / "app.py").stat().st_mode) == 0o644


def test_a_loose_empty_directory_just_becomes_private(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.chmod(0o755)
    assert ensure_private_dir(empty) == 1
    assert stat.S_IMODE(empty.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    import pwd

    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(UnsafeStateDir, match="another user"):
        ensure_private_dir(theirs)


def test_a_loose_state_dir_is_tightened_and_a_private_one_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    (state / "replicas").mkdir()
    (state / "store.db").write_bytes(b"")
    (state / "logs" / "app.log").write_bytes(b"")
    (state / "replicas" / "run.sh").write_bytes(b"")
    for p, mode in ((state, 0o755), (state / "logs", 0o755), (state / "store.db", 0o644),
                    (state / "logs" / "app.log", 0o664), (state / "replicas", 0o755),
                    (state / "replicas" / "run.sh", 0o755)):
        p.chmod(mode)
    (state / "logs" / "link").symlink_to("/etc/passwd")
    assert ensure_private_dir(state) == 6
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.lstat().st_mode)
             for p in [state, *state.rglob("*")] if not p.is_symlink()}
    assert modes == {"state": 0o700, "state/logs": 0o700, "state/store.db": 0o600,
                     "state/logs/app.log": 0o600, "state/replicas": 0o700,
                     "state/replicas/run.sh": 0o700}
    assert stat.S_IMODE(os.stat("/etc/passwd").st_mode) & 0o004  # the link's target untouched
    assert ensure_private_dir(state) == 0


def test_a_loose_project_with_names_like_flints_is_refused_untouched(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "gateway").mkdir(parents=True)  # as Flint's own checkout has
    (project / "app.py").write_text("print()")
    for p, mode in ((project, 0o755), (project / "gateway", 0o755), (project / "app.py", 0o644)):
        p.chmod(mode)
    with pytest.raises(UnsafeStateDir, match="not a Flint state dir"):
        ensure_private_dir(project)
    (project / "store.db").write_bytes(b"")  # even with a store, app.py is not Flint's
    with pytest.raises(UnsafeStateDir, match=r"app\.py"):
        ensure_private_dir(project)
    assert stat.S_IMODE(project.stat().st_mode) == 0o755
    assert stat.S_IMODE((project / "app.py").stat().st_mode) == 0o644


def test_tighten_tree_counts_what_it_changed(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"")
    (tmp_path / "a").chmod(0o640)
    tmp_path.chmod(0o700)
    assert tighten_tree(tmp_path) == 1
    assert tighten_tree(tmp_path) == 0


def test_exclusive_writes_work_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # vfat, some FUSE and SMB mounts

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "token"
    assert write_private(path, b"first", exclusive=True)
    assert not write_private(path, b"second", exclusive=True)
    assert path.read_bytes() == b"first" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]
