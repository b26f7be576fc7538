"""The layer rule, enforced: the data plane (gateway) never imports the control plane (controller)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_contract_holds() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint), "--config", str(REPO / ".importlinter")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gateway-never-imports-controller" in result.stdout or "KEPT" in result.stdout


def test_contract_would_catch_a_violation(tmp_path: Path) -> None:
    """The contract is not vacuous: a gateway module importing controller breaks it."""
    pkg = tmp_path / "gateway"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("import controller.settings\n")
    ctl = tmp_path / "controller"
    ctl.mkdir()
    (ctl / "__init__.py").write_text("")
    (ctl / "settings.py").write_text("")
    (tmp_path / ".importlinter").write_text((REPO / ".importlinter").read_text())
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
