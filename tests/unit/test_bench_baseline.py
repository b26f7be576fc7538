"""`loadtests.bench_baseline`: exporting a revision's tree, checking that a process runs that tree's
gateway (and fails clearly otherwise), and the baseline gateway's command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from loadtests import bench, bench_baseline
from loadtests.bench_baseline import BaselineError


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    r = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                        *args], capture_output=True, text=True, check=True, env=env)
    return r.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with two commits of `pkg/mod.py` (`one`, then `two`) and an uncommitted edit."""
    r = tmp_path / "repo"
    (r / "pkg").mkdir(parents=True)
    _git(r, "init", "-q", "-b", "main")
    (r / "pkg" / "mod.py").write_text("VALUE = 'one'\n")
    (r / "gone.txt").write_text("only in the first commit\n")
    _git(r, "add", ".")
    _git(r, "commit", "-q", "-m", "first")
    (r / "pkg" / "mod.py").write_text("VALUE = 'two'\n")
    _git(r, "rm", "-q", "gone.txt")
    _git(r, "commit", "-q", "-am", "second")
    (r / "pkg" / "mod.py").write_text("VALUE = 'uncommitted'\n")
    return r


def test_export_writes_the_revisions_tree(repo: Path, tmp_path: Path) -> None:
    first = _git(repo, "rev-parse", "HEAD~1")
    commit = bench_baseline.export(repo, "HEAD~1", tmp_path / "old")
    assert commit == bench_baseline.Commit(first, "first") and commit.short == first[:10]
    assert (tmp_path / "old" / "pkg" / "mod.py").read_text() == "VALUE = 'one'\n"
    assert (tmp_path / "old" / "gone.txt").exists()
    # by branch name and by commit id; the uncommitted edit is never part of a revision
    assert bench_baseline.export(repo, "main", tmp_path / "new").subject == "second"
    assert (tmp_path / "new" / "pkg" / "mod.py").read_text() == "VALUE = 'two'\n"
    assert not (tmp_path / "new" / "gone.txt").exists()
    assert bench_baseline.export(repo, first[:8], tmp_path / "byid").id == first


def test_export_refuses_what_is_not_a_revision(repo: Path, tmp_path: Path) -> None:
    for bad in ("nope", "HEAD~5", "-rf", ""):
        with pytest.raises(BaselineError, match="not a"):
            bench_baseline.export(repo, bad, tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("")
    with pytest.raises(BaselineError, match="not empty"):
        bench_baseline.export(repo, "main", tmp_path / "full")
    with pytest.raises(BaselineError, match="is not a commit"):
        bench_baseline.export(tmp_path / "full", "HEAD", tmp_path / "y")  # not a repository


def test_outside_and_pythonpath(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    mods = {"gateway": str(tree / "gateway" / "__init__.py"), "gateway.ns": None,
            "flint_common": "/elsewhere/flint_common/__init__.py"}
    assert bench_baseline.outside(mods, tree) == ["flint_common from /elsewhere/flint_common/__init__.py"]
    assert bench_baseline.outside({"gateway": str(tree / "gateway" / "x.py")}, tree) == []
    assert bench_baseline.pythonpath(tree, None) == str(tree)
    assert bench_baseline.pythonpath(tree, "/a") == f"{tree}{os.pathsep}/a"


HELP_NOW = """usage: python -m gateway [-h] [--host HOST] [--port PORT] [--admin-port ADMIN_PORT]
  --token-file TOKEN_FILE  0600 file with the owner's token (default <state-dir>/auth/token)
  --workers WORKERS  --controller CONTROLLER_URL  --state-dir STATE_DIR  --log-level LOG_LEVEL
"""


def test_gateway_argv_follows_the_flags_of_its_help(tmp_path: Path) -> None:
    def argv(flags: frozenset[str]) -> list[str]:
        return bench_baseline.gateway_argv(flags, "py", port=1, admin_port=2, workers=3,
                                           controller="http://127.0.0.1:1", state_dir=tmp_path / "s",
                                           token_file=tmp_path / "s" / "auth" / "token")

    flags = bench_baseline.gateway_flags(HELP_NOW)
    assert "--token-file" in flags and "--state-dir" in flags and "--auth" not in flags
    a = argv(flags)
    assert a[:3] == ["py", "-m", "gateway"]
    assert a[a.index("--workers") + 1] == "3" and a[a.index("--port") + 1] == "1"
    assert a[-2:] == ["--token-file", str(tmp_path / "s" / "auth" / "token")]
    # a revision from before the token: no --token-file
    assert "--token-file" not in argv(bench_baseline.gateway_flags(HELP_NOW.replace("--token-file", "--x")))
    with pytest.raises(BaselineError, match="does not take --admin-port"):
        argv(flags - {"--admin-port"})


def _fake_tree(root: Path, main: str, *, with_common: bool = True) -> Path:
    (root / "gateway").mkdir(parents=True)
    (root / "gateway" / "__init__.py").write_text("")
    (root / "gateway" / "config.py").write_text(
        "class Snapshot:\n    @staticmethod\n    def from_wire(d):\n        return d['version']\n")
    (root / "gateway" / "__main__.py").write_text(main)
    if with_common:
        (root / "flint_common").mkdir()
        (root / "flint_common" / "__init__.py").write_text("")
        (root / "flint_common" / "secret.py").write_text("")
    return root


MAIN = ("import sys\nimport flint_common.secret\nif __name__ == '__main__':\n"
        "    print('usage: --port --admin-port --workers --controller --state-dir --log-level')\n")


def test_probe_accepts_a_tree_that_runs_its_own_code(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "ok", MAIN)
    env = {**os.environ, "PYTHONPATH": bench_baseline.pythonpath(tree, os.environ.get("PYTHONPATH"))}
    found = bench_baseline.probe(tree, env, {"version": 1})
    assert found.modules["gateway"] == str(tree / "gateway" / "__init__.py")
    assert found.modules["flint_common.secret"] == str(tree / "flint_common" / "secret.py")
    assert found.modules["gateway.config"] == str(tree / "gateway" / "config.py")  # the decoder's module
    assert set(bench_baseline.REQUIRED_FLAGS) <= found.flags
    assert found.decoder == "gateway.config.Snapshot.from_wire"
    # a newer layout: gateway.wire.decode_snapshot is preferred
    (tree / "gateway" / "wire.py").write_text("def decode_snapshot(d):\n    return d['version']\n")
    assert bench_baseline.probe(tree, env, {"version": 1}).decoder == "gateway.wire.decode_snapshot"
    # today's layout: the link protocol in flint_common
    (tree / "flint_common" / "wire.py").write_text("def decode_snapshot(d):\n    return d['version']\n")
    assert bench_baseline.probe(tree, env, {"version": 1}).decoder == "flint_common.wire.decode_snapshot"
    (tree / "flint_common" / "wire.py").unlink()
    # no decoder known: nothing to try, the start will tell
    (tree / "gateway" / "wire.py").unlink()
    (tree / "gateway" / "config.py").write_text("")
    assert bench_baseline.probe(tree, env, {"version": 1}).decoder is None


def test_probe_fails_clearly(tmp_path: Path) -> None:
    env = dict(os.environ)
    # no flint_common in the tree: this checkout's (the editable install) would be imported
    tree = _fake_tree(tmp_path / "mixed", MAIN, with_common=False)
    with pytest.raises(BaselineError, match="does not run that revision's code only: flint_common"):
        bench_baseline.probe(tree, {**env, "PYTHONPATH": str(tree)}, {"version": 1})
    broken = _fake_tree(tmp_path / "broken", "import not_a_module_anywhere\n")
    with pytest.raises(BaselineError, match=r"(?s)cannot be imported.*not_a_module_anywhere"):
        bench_baseline.probe(broken, {**env, "PYTHONPATH": str(broken)}, {"version": 1})
    with pytest.raises(BaselineError, match=r"cannot read the benchmark's routing snapshot "
                                            r"\(gateway\.config\.Snapshot\.from_wire\): KeyError"):
        tree = _fake_tree(tmp_path / "snap", MAIN)
        bench_baseline.probe(tree, {**env, "PYTHONPATH": str(tree)}, {"no": "version"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaselineError, match=r"no gateway/__main__\.py"):
        bench_baseline.probe(tmp_path / "empty", env, {})


def test_prepare_this_repositorys_head(tmp_path: Path) -> None:
    b = bench_baseline.prepare("HEAD", tmp_path / "baseline", dict(os.environ), bench.snapshot(1))
    head = subprocess.run(["git", "-C", str(bench_baseline.REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert b.commit.id == head and b.tree == (tmp_path / "baseline").resolve()
    assert b.modules["gateway"] == str(b.tree / "gateway" / "__init__.py")
    assert "gateway.server" in b.modules and "flint_common.secret" in b.modules
    assert not bench_baseline.outside(b.modules, b.tree)
    assert "--token-file" in b.flags
    assert b.env({"PYTHONPATH": "/x"})["PYTHONPATH"] == f"{b.tree}{os.pathsep}/x"
    assert b.to_json()["commit"] == head and b.to_json()["token_file_flag"] is True
    assert b.decoder in {f"{m}.{a}" for m, a in bench_baseline.SNAPSHOT_DECODERS}
