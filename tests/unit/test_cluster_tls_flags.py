"""The flags of the cluster certificates and of the link's TLS: `python -m controller
--system-namespace/--tls-name`, `python -m gateway --controller-ca` (and its workers' environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.__main__ import settings_from_argv
from gateway.config import GatewaySettings
from gateway.server import build_parser, settings_env, settings_from_args


def test_the_system_namespace_defaults_to_the_pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    settings, _ = settings_from_argv(["--state-dir", str(tmp_path)])
    assert settings.cluster_tls.namespace == "flint-system"
    monkeypatch.setenv("POD_NAMESPACE", "flint-prod")
    settings, _ = settings_from_argv(["--state-dir", str(tmp_path)])
    assert settings.cluster_tls.namespace == "flint-prod"
    assert "flint-webhook.flint-prod.svc" in settings.cluster_tls.names


def test_system_namespace_and_tls_names_flags(tmp_path: Path) -> None:
    settings, _ = settings_from_argv(["--state-dir", str(tmp_path), "--system-namespace", "ops",
                                      "--tls-name", "10.0.0.1", "--tls-name", "flint.example"])
    assert settings.cluster_tls.namespace == "ops"
    assert settings.cluster_tls.names[-2:] == ["10.0.0.1", "flint.example"]
    assert "flint-controller-leader.ops.svc.cluster.local" in settings.cluster_tls.names
    with pytest.raises(SystemExit):  # argparse's exit 2, naming the flag
        settings_from_argv(["--state-dir", str(tmp_path), "--system-namespace", ""])


def test_the_gateways_controller_ca_reaches_its_workers(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.crt"
    settings = settings_from_args(build_parser().parse_args(["--controller-ca", str(ca)]))
    assert settings.controller_ca == ca
    env = settings_env(settings)
    assert env["FLINT_GATEWAY_CONTROLLER_CA"] == str(ca)
    for name, value in env.items():  # what a worker reads back
        monkeypatch.setenv(name, value)
    assert GatewaySettings.from_env().controller_ca == ca
