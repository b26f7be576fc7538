"""The layer rules, enforced by import-linter (`.importlinter`): neither plane (gateway, controller)
imports the other, flint_common imports neither, the pure modules do no I/O, and there are no
import cycles. Each contract is also shown to catch what it forbids, on a small tree of stand-ins."""

from __future__ import annotations

import configparser
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"
LINT = Path(sys.executable).parent / "lint-imports"


PURE = ("gateway-pure-modules-do-no-io", "controller-pure-modules-do-no-io", "common-pure-modules-do-no-io")
"""The purity contracts, one per root package."""


def contracts() -> dict[str, configparser.SectionProxy]:
    """Contract id → its section of `.importlinter`."""
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    prefix = "importlinter:contract:"
    return {name.removeprefix(prefix): parser[name] for name in parser.sections()
            if name.startswith(prefix)}


def lint(cwd: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None if pythonpath is None else {"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [str(LINT), "--no-cache", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env=env,
    )


def words(text: str) -> str:
    """The output with its line wrapping undone (long contract names are wrapped)."""
    return " ".join(text.split())


def test_every_contract_is_kept() -> None:
    result = lint(REPO, str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    out = words(result.stdout)
    found = contracts()
    assert {"gateway-never-imports-controller", "controller-never-imports-gateway",
            "common-imports-neither-plane",
            "gateway-pure-modules-do-no-io", "controller-pure-modules-do-no-io",
            "common-pure-modules-do-no-io", "no-import-cycles"} <= set(found)
    for section in found.values():
        assert f"{section['name']} KEPT" in out, out
    assert f"Contracts: {len(found)} kept, 0 broken." in out


def test_the_pure_modules_listed_are_the_ones_design_names() -> None:
    listed = {
        m for cid in PURE
        for m in contracts()[cid]["source_modules"].split()
    }
    assert {
        "gateway.table", "gateway.balancer", "gateway.headers",
        "flint_common.wire", "flint_common.snapshot", "flint_common.cloudevents", "flint_common.timefmt",
        "flint_common.backoff",
        "controller.autoscaling.kpa", "controller.autoscaling.hpa", "controller.autoscaling.windows",
        "controller.eventing.filters", "controller.eventing.delivery", "controller.eventing.plan",
        "controller.reconcilers.conditions", "controller.routing", "controller.api",
    } <= listed
    for cid in PURE:
        assert set(contracts()[cid]["forbidden_modules"].split()) == {
            "asyncio", "aiohttp", "socket", "sqlite3", "subprocess"}


# ---------------------------------------------------------------------------------------------
# the contracts are not vacuous
# ---------------------------------------------------------------------------------------------


def stand_ins(tmp_path: Path, files: dict[str, str]) -> Path:
    """A tree with the three root packages, every module a purity contract names (empty), and
    `files` (module path → source); `.importlinter` is the repository's."""
    modules = {"gateway", "controller", "flint_common"}
    for cid in PURE:
        modules |= set(contracts()[cid]["source_modules"].split())
    for module in sorted(modules):
        parts = module.split(".")
        for i in range(1, len(parts)):
            pkg = tmp_path.joinpath(*parts[:i])
            pkg.mkdir(exist_ok=True)
            (pkg / "__init__.py").touch()
        path = tmp_path.joinpath(*parts)
        if module in ("gateway", "controller", "flint_common", "controller.api"):
            path.mkdir(exist_ok=True)
            (path / "__init__.py").touch()
        else:
            path.with_suffix(".py").touch()
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    (tmp_path / ".importlinter").write_text(CONFIG.read_text())
    return tmp_path


def test_the_gateway_importing_the_controller_is_caught(tmp_path: Path) -> None:
    root = stand_ins(tmp_path, {"gateway/bad.py": "import controller.settings\n",
                                "controller/settings.py": ""})
    result = lint(root, "--contract", "gateway-never-imports-controller", pythonpath=root)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and "gateway.bad -> controller.settings" in result.stdout


def test_the_controller_importing_the_gateway_is_caught(tmp_path: Path) -> None:
    root = stand_ins(tmp_path, {"controller/bad.py": "from gateway import link\n",
                                "gateway/link.py": ""})
    result = lint(root, "--contract", "controller-never-imports-gateway", pythonpath=root)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and "controller.bad -> gateway.link" in result.stdout


def test_flint_common_importing_a_plane_is_caught(tmp_path: Path) -> None:
    root = stand_ins(tmp_path, {"flint_common/bad.py": "import gateway.config\n",
                                "gateway/config.py": ""})
    result = lint(root, "--contract", "common-imports-neither-plane", pythonpath=root)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and "flint_common.bad -> gateway.config" in result.stdout


@pytest.mark.parametrize(
    ("files", "source", "chain"),
    [
        ({"gateway/table.py": "import asyncio\n"}, "gateway.table", ["gateway.table", "asyncio"]),
        # through another module: the contract follows indirect imports
        ({"gateway/balancer.py": "from gateway import helper\n",
          "gateway/helper.py": "import socket\n"}, "gateway.balancer",
         ["gateway.balancer", "gateway.helper", "socket"]),
        # a package is checked with everything in it
        ({"controller/api/meta.py": "import sqlite3\n"}, "controller.api",
         ["controller.api.meta", "sqlite3"]),
        ({"controller/routing.py": "import subprocess\n"}, "controller.routing",
         ["controller.routing", "subprocess"]),
        ({"controller/autoscaling/kpa.py": "from aiohttp import web\n"},
         "controller.autoscaling.kpa", ["controller.autoscaling.kpa", "aiohttp"]),
        ({"flint_common/wire.py": "import asyncio\n"}, "flint_common.wire", ["flint_common.wire", "asyncio"]),
    ],
)
def test_a_pure_module_doing_io_is_caught(
    tmp_path: Path, files: dict[str, str], source: str, chain: list[str]
) -> None:
    root = stand_ins(tmp_path, files)
    plane = chain[0].split(".")[0].removeprefix("flint_")  # flint_common's contract is `common-...`
    result = lint(root, "--contract", f"{plane}-pure-modules-do-no-io", pythonpath=root)
    assert result.returncode != 0, result.stdout
    out = words(result.stdout)
    assert "BROKEN" in out
    assert f"{source} is not allowed to import {chain[-1]}" in out, out
    for importer, imported in itertools.pairwise(chain):
        assert f"{importer} -> {imported} (l.1)" in out, out


@pytest.mark.parametrize(
    "files",
    [
        {"gateway/a.py": "from gateway import b\n", "gateway/b.py": "from gateway import a\n"},
        # packages taken whole: no module cycle, yet the two subpackages depend on each other
        {"controller/x/__init__.py": "", "controller/x/one.py": "from controller.y import two\n",
         "controller/y/__init__.py": "", "controller/y/two.py": "",
         "controller/y/three.py": "from controller.x import four\n", "controller/x/four.py": ""},
    ],
)
def test_an_import_cycle_is_caught(tmp_path: Path, files: dict[str, str]) -> None:
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    root = stand_ins(tmp_path, files)
    result = lint(root, "--contract", "no-import-cycles", pythonpath=root)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and "No cycles are allowed in" in result.stdout
