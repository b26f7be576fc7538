"""The baseline build of `python -m loadtests.bench --baseline REV` (issue 10): an old revision's
gateway measured beside the current one in the same run.

1. `export`: REV's tree (`git archive REV | tar -x`, nothing from the network, no worktree to
   clean up) goes into the benchmark's temporary directory;
2. `probe`: with the interpreter, environment (`PYTHONPATH=<tree>` first) and working directory
   the baseline gateway will get, `import gateway.__main__` must load every `gateway` and
   `flint_common` module from that tree and none from the current checkout (the editable install
   would supply a package the old tree lacks); its snapshot decoder (`flint_common.wire.decode_snapshot`;
   `gateway.wire.decode_snapshot`, and `Snapshot.from_wire` before that) must read the benchmark's
   snapshot; and `python -m gateway --help` tells which flags it takes (revisions before the trust
   work have no `--token-file`);
3. `gateway_argv`: the command line for those flags, or an error naming what REV's gateway lacks.

Everything that runs here is short-lived and waited for; the pure parts are unit-tested.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
"""The repository whose revisions `--baseline` names (this checkout)."""
PACKAGES = ("gateway", "flint_common")
"""Top-level packages the gateway's process imports from the repository."""
REQUIRED_FLAGS = ("--port", "--admin-port", "--workers", "--controller", "--state-dir", "--log-level")
SNAPSHOT_DECODERS = (
    ("flint_common.wire", "decode_snapshot"),
    ("gateway.wire", "decode_snapshot"),
    ("gateway.config", "Snapshot.from_wire"),
)
"""Where revisions decode the persisted snapshot, newest first; the first one found is tried on the
benchmark's snapshot (a revision with none is started anyway: its log tells if it cannot route)."""
PROBE_MARK = "flint-bench-probe: "
TIMEOUT_S = 60.0

_PROBE = f"""
import importlib, importlib.util, json, os, sys
import gateway.__main__  # the command's imports: server, worker, proxy, ...
decoder = snapshot_error = None
with open(sys.argv[1]) as f:
    snapshot = json.load(f)
for module, attr in {SNAPSHOT_DECODERS!r}:
    try:
        spec = importlib.util.find_spec(module)
        if spec is None or not str(spec.origin).startswith(os.getcwd() + os.sep):
            continue  # not in this tree (the editable install would lend today's)
        decode = importlib.import_module(module)
        for part in attr.split("."):
            decode = getattr(decode, part)
    except (ImportError, AttributeError):
        continue
    decoder = module + "." + attr
    try:
        decode(snapshot)
    except Exception as exc:
        snapshot_error = repr(exc)
    break
modules = {{name: getattr(m, "__file__", None) for name, m in list(sys.modules.items())
            if name.split(".")[0] in {PACKAGES!r}}}
print({PROBE_MARK!r} + json.dumps({{"modules": modules, "decoder": decoder,
                                    "snapshot_error": snapshot_error}}))
"""


class BaselineError(Exception):
    """The baseline revision cannot be exported or run."""


@dataclass(frozen=True)
class Commit:
    id: str
    subject: str

    @property
    def short(self) -> str:
        return self.id[:10]


@dataclass(frozen=True)
class Baseline:
    """REV exported and checked: what `bench` needs to start its gateway."""

    rev: str
    commit: Commit
    tree: Path
    flags: frozenset[str]
    """Long options REV's `python -m gateway --help` lists."""
    modules: dict[str, str] = field(default_factory=dict)
    """Module → file, as the probe imported them (all under `tree`)."""
    decoder: str | None = None
    """The snapshot decoder the probe found and tried (None: none of `SNAPSHOT_DECODERS`)."""

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        return {**base, "PYTHONPATH": pythonpath(self.tree, base.get("PYTHONPATH"))}

    def to_json(self) -> dict[str, Any]:
        return {"rev": self.rev, "commit": self.commit.id, "subject": self.commit.subject,
                "token_file_flag": "--token-file" in self.flags,
                "gateway_file": self.modules.get("gateway"), "snapshot_decoder": self.decoder}


def git(repo: Path, *args: str) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=TIMEOUT_S)
    if r.returncode != 0:
        raise BaselineError(f"git {' '.join(args)}: {r.stderr.strip() or f'exit {r.returncode}'}")
    return r.stdout.strip()


def resolve(repo: Path, rev: str) -> Commit:
    """The commit `rev` names in `repo` (a branch, `HEAD~3`, a commit id, a tag)."""
    if not rev or rev.startswith("-"):
        raise BaselineError(f"not a revision: {rev!r}")
    try:
        commit = git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    except BaselineError:
        raise BaselineError(f"{rev!r} is not a commit of the repository at {repo}") from None
    return Commit(commit, git(repo, "log", "-1", "--format=%s", commit))


def export(repo: Path, rev: str, dest: Path) -> Commit:
    """Write the tree of revision `rev` of `repo` into `dest` (created; must not exist or be
    empty): `git archive <commit> | tar -x -C dest`. Returns the commit."""
    commit = resolve(repo, rev)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise BaselineError(f"{dest} is not empty")
    archive = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", commit.id],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert archive.stdout is not None
    try:
        tar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True,
                             text=True, timeout=TIMEOUT_S)
    finally:
        archive.stdout.close()
        _, err = archive.communicate(timeout=TIMEOUT_S)
    if archive.returncode != 0:
        raise BaselineError(f"git archive {commit.short}: {err.decode(errors='replace').strip()}")
    if tar.returncode != 0:
        raise BaselineError(f"tar -x of {commit.short}: {tar.stderr.strip()}")
    return commit


def pythonpath(tree: Path, existing: str | None) -> str:
    """`PYTHONPATH` with `tree` first."""
    return os.pathsep.join([str(tree), *([existing] if existing else [])])


def outside(modules: Mapping[str, str | None], tree: Path) -> list[str]:
    """The modules (name → file) whose file is not under `tree` (namespace packages, without a
    file, are skipped). Empty when the process runs the tree's code only."""
    root = tree.resolve()
    out = []
    for name, file in sorted(modules.items()):
        if file is not None and not Path(file).resolve().is_relative_to(root):
            out.append(f"{name} from {file}")
    return out


def gateway_flags(help_text: str) -> frozenset[str]:
    """The long options an argparse `--help` lists."""
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))


def gateway_argv(flags: Collection[str], python: str, *, port: int, admin_port: int, workers: int,
                 controller: str, state_dir: Path, token_file: Path, log_level: str = "WARNING") -> list[str]:
    """The baseline gateway's command line, for the flags its `--help` listed. `--token-file` is
    passed when it exists (older revisions read no token); the other flags are required."""
    missing = [f for f in REQUIRED_FLAGS if f not in flags]
    if missing:
        raise BaselineError(f"its gateway does not take {', '.join(missing)} "
                            f"(its --help lists {', '.join(sorted(flags)) or 'no options'}); "
                            "the benchmark cannot start it standalone")
    argv = [python, "-m", "gateway", "--port", str(port), "--admin-port", str(admin_port),
            "--workers", str(workers), "--controller", controller, "--state-dir", str(state_dir),
            "--log-level", log_level]
    if "--token-file" in flags:
        argv += ["--token-file", str(token_file)]
    return argv


def _tail(text: str, n: int = 1500) -> str:
    return text.strip()[-n:]


@dataclass(frozen=True)
class Probe:
    modules: dict[str, str]
    """Module → file of every `gateway` and `flint_common` module imported."""
    flags: frozenset[str]
    """The long options of its `python -m gateway --help`."""
    decoder: str | None
    """The snapshot decoder found (and tried), if any."""


def probe(tree: Path, env: Mapping[str, str], snapshot: Mapping[str, Any],
          python: str = sys.executable) -> Probe:
    """Check that `python` with `env` and cwd `tree` runs the tree's gateway and that it reads
    `snapshot` (with the first of `SNAPSHOT_DECODERS` it has)."""
    if not (tree / "gateway" / "__main__.py").is_file():
        raise BaselineError("it has no gateway/__main__.py (`python -m gateway` cannot run it)")
    snap = tree.parent / f"{tree.name}-probe-snapshot.json"
    snap.write_text(json.dumps(snapshot))
    r = subprocess.run([python, "-c", _PROBE, str(snap)], cwd=tree, env=dict(env), capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT_S)
    line = next((x for x in reversed(r.stdout.splitlines()) if x.startswith(PROBE_MARK)), None)
    if r.returncode != 0 or line is None:
        raise BaselineError(f"its gateway cannot be imported with {python} "
                            f"(the same venv; its dependencies may differ):\n{_tail(r.stderr + r.stdout)}")
    found = json.loads(line[len(PROBE_MARK):])
    modules: dict[str, str | None] = found["modules"]
    if "gateway" not in modules:
        raise BaselineError("the probe did not import `gateway`")
    strays = outside(modules, tree)
    if strays:
        raise BaselineError(f"with PYTHONPATH={tree} the gateway does not run that revision's code only: "
                            + "; ".join(strays[:8]) + (" …" if len(strays) > 8 else ""))
    if found["snapshot_error"] is not None:
        raise BaselineError(f"its gateway cannot read the benchmark's routing snapshot "
                            f"({found['decoder']}): {found['snapshot_error']}")
    h = subprocess.run([python, "-m", "gateway", "--help"], cwd=tree, env=dict(env), capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT_S)
    if h.returncode != 0:
        raise BaselineError(f"`python -m gateway --help` exited {h.returncode}:\n"
                            f"{_tail(h.stderr + h.stdout)}")
    files = {k: v for k, v in modules.items() if v is not None}
    return Probe(files, gateway_flags(h.stdout), found["decoder"])


def prepare(rev: str, dest: Path, env: Mapping[str, str], snapshot: Mapping[str, Any],
            repo: Path = REPO, python: str = sys.executable) -> Baseline:
    """Export `rev` into `dest` and check it can run as the baseline gateway."""
    commit = export(repo, rev, dest)
    tree = dest.resolve()
    b = Baseline(rev=rev, commit=commit, tree=tree, flags=frozenset())
    try:
        found = probe(tree, b.env(env), snapshot, python)
    except BaselineError as exc:
        raise BaselineError(f"{commit.short} ({commit.subject[:60]}): {exc}") from None
    return Baseline(rev=rev, commit=commit, tree=tree, flags=found.flags, modules=found.modules,
                    decoder=found.decoder)
