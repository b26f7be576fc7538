"""The state dir's credentials (token, CA, API certificate under one lock) and its kubeconfig."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from controller.credentials import api_names, ensure_credentials, kubeconfig_path, token_path
from flint_common import kubeconfig
from flint_common.secret import Secret
from flint_common.tls import (
    issue_server_cert,
    new_authority,
)

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def test_api_names_cover_loopback_and_every_listen_address() -> None:
    assert api_names([]) == ["127.0.0.1", "::1", "localhost"]
    assert api_names(["10.0.0.5", "127.0.0.1"]) == ["127.0.0.1", "::1", "localhost", "10.0.0.5"]
    interfaces = {socket.AF_INET: ["127.0.0.1", "192.0.2.7"], socket.AF_INET6: ["::1", "2001:db8::7"]}
    assert api_names(["0.0.0.0"], hostname="box", interfaces=interfaces) == [
        "127.0.0.1", "::1", "localhost", "box", "192.0.2.7"]
    assert api_names(["::"], hostname="box", interfaces=interfaces) == [
        "127.0.0.1", "::1", "localhost", "box", "2001:db8::7"]


def test_ensure_credentials_is_stable_across_restarts(tmp_path: Path) -> None:
    first, why = ensure_credentials(tmp_path, [], NOW)
    assert why == "there was none"
    again, why = ensure_credentials(tmp_path, [], NOW)
    assert why is None
    assert again.token == first.token and again.ca.cert == first.ca.cert
    moved, why = ensure_credentials(tmp_path, ["10.0.0.9"], NOW)
    assert why == "the names it must carry changed" and moved.token == first.token
    assert token_path(tmp_path).exists() and not kubeconfig_path(tmp_path).exists()


def test_the_flint_kubeconfig_names_server_ca_and_token() -> None:
    ca = new_authority("test CA", NOW)
    cfg = kubeconfig.flint_kubeconfig("https://127.0.0.1:8443", ca.cert_pem, Secret("tok"))
    assert cfg["current-context"] == "flint"
    (cluster,) = cfg["clusters"]
    assert cluster["cluster"]["server"] == "https://127.0.0.1:8443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == ca.cert_pem
    assert cfg["users"] == [{"name": "flint", "user": {"token": "tok"}}]
    assert cfg["contexts"][0]["context"] == {"cluster": "flint", "user": "flint", "namespace": "default"}


def test_merge_replaces_our_entries_and_keeps_the_others() -> None:
    ours = kubeconfig.flint_kubeconfig("https://127.0.0.1:8443", b"CA", Secret("new"))
    theirs: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config", "current-context": "prod",
        "clusters": [{"name": "prod", "cluster": {"server": "https://prod"}},
                     {"name": "flint", "cluster": {"server": "https://old"}}],
        "users": [{"name": "prod", "user": {"token": "p"}}, {"name": "flint", "user": {"token": "old"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
    }
    merged = kubeconfig.merge(theirs, ours, make_current=False)
    assert merged["current-context"] == "prod"
    assert [c["name"] for c in merged["clusters"]] == ["prod", "flint"]
    assert merged["clusters"][1]["cluster"]["server"] == "https://127.0.0.1:8443"
    assert {u["name"]: u["user"]["token"] for u in merged["users"]} == {"prod": "p", "flint": "new"}
    assert kubeconfig.merge(theirs, ours)["current-context"] == "flint"
    assert theirs["clusters"][1]["cluster"]["server"] == "https://old"  # input untouched
    assert kubeconfig.merge(None, ours)["current-context"] == "flint"


def test_merge_into_writes_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "kubeconfig"
    ours = kubeconfig.flint_kubeconfig("https://127.0.0.1:1", b"CA", Secret("t"))
    kubeconfig.merge_into(path, ours)
    kubeconfig.merge_into(path, ours)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = kubeconfig.read(path)
    assert loaded is not None and len(loaded["clusters"]) == 1
    assert kubeconfig.read(tmp_path / "none") is None
    (tmp_path / "bad").write_text("- a list\n")
    with pytest.raises(ValueError, match="not a kubeconfig"):
        kubeconfig.read(tmp_path / "bad")


def test_ip_names_are_ip_entries() -> None:
    ca = new_authority("CA", NOW)
    cert, _ = issue_server_cert(ca, ["::1"], NOW)
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ext.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    with pytest.raises(ValueError):
        issue_server_cert(ca, [], NOW)


_MAKE = """
import hashlib, sys
from pathlib import Path
from controller.credentials import ensure_credentials
creds, _ = ensure_credentials(Path(sys.argv[1]), [])
print(hashlib.sha256(creds.token.reveal().encode() + creds.ca.cert_pem).hexdigest())
"""


def test_processes_starting_at_once_end_with_one_token_and_one_ca(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _MAKE, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert len({out for out, _ in outs}) == 1  # every process got the same token and CA
    _, why = ensure_credentials(tmp_path, [])
    assert why is None
    assert {p.name for p in (tmp_path / "auth").iterdir()} == {"token", ".lock"}  # no temp file


def test_a_ca_whose_key_does_not_match_is_made_again(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    first, _ = ensure_credentials(tmp_path, [], NOW)
    stranger = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "tls" / "ca.key").write_bytes(stranger)  # a half-written pair
    again, why = ensure_credentials(tmp_path, [], NOW)
    assert again.ca.cert != first.ca.cert
    assert why == "it was not issued by this CA" or why == "it was not signed by this CA's key"
    again.api_cert.cert.read_bytes()
    x509.load_pem_x509_certificate(again.api_cert.cert.read_bytes()).verify_directly_issued_by(
        again.ca.cert)
    assert again.token == first.token


def test_an_api_key_that_does_not_match_its_certificate_is_reissued(tmp_path: Path) -> None:
    ensure_credentials(tmp_path, [], NOW)
    (tmp_path / "tls" / "api.key").write_bytes((tmp_path / "tls" / "ca.key").read_bytes())
    _, why = ensure_credentials(tmp_path, [], NOW)
    assert why == "its key does not match it"
