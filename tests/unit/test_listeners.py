"""Where the API listens over HTTPS, and which kubeconfig `flint up --merge-kubeconfig` writes."""

from __future__ import annotations

from pathlib import Path

from controller.cli.up import kubectl_kubeconfig
from controller.listeners import https_addresses
from controller.settings import ControllerSettings


def _plan(*listen: tuple[str, int]) -> list[tuple[str, int]]:
    return https_addresses(ControllerSettings(api_tls_port=8443, api_listen=tuple(listen)))


def test_loopback_first_then_each_listen_address_once() -> None:
    assert _plan() == [("127.0.0.1", 8443)]
    assert _plan(("127.0.0.2", 9443), ("127.0.0.1", 8443), ("127.0.0.2", 9443)) == [
        ("127.0.0.1", 8443), ("127.0.0.2", 9443)]


def test_a_wildcard_covers_its_familys_addresses_on_its_port() -> None:
    # 0.0.0.0:8443 already serves 127.0.0.1:8443 (binding both would fail)
    assert _plan(("0.0.0.0", 8443)) == [("0.0.0.0", 8443)]
    assert _plan(("0.0.0.0", 9443)) == [("127.0.0.1", 8443), ("0.0.0.0", 9443)]
    # :: is IPv6 only: 127.0.0.1 still needs its own site, ::1 does not
    assert _plan(("::", 8443), ("::1", 8443)) == [("127.0.0.1", 8443), ("::", 8443)]


def test_merge_kubeconfig_writes_where_kubectl_would(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert kubectl_kubeconfig(home) == tmp_path / ".kube" / "config"
    a, b = tmp_path / "a", tmp_path / "b"
    env = {**home, "KUBECONFIG": f"{a}:{b}"}
    assert kubectl_kubeconfig(env) == b  # none exists: the last one
    b.write_text("")
    assert kubectl_kubeconfig(env) == b  # the first that exists
    a.write_text("")
    assert kubectl_kubeconfig(env) == a
