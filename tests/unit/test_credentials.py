"""The owner's credentials: tokens that never print, the state dir's CA and certificates, kubeconfigs,
listen addresses and private files."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import pickle
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from controller.credentials import api_names, ensure_credentials, kubeconfig_path, token_path
from flint_common import kubeconfig
from flint_common.addresses import format_hostport, is_loopback, parse_listen, parse_listen_list
from flint_common.private import ensure_private_dir, tighten_tree, write_private
from flint_common.secret import MASK, Secret, load_or_create_token, read_token
from flint_common.tls import (
    RENEW_BEFORE,
    client_context,
    ensure_authority,
    ensure_server_files,
    issue_server_cert,
    new_authority,
    reissue_reason,
    server_context,
)

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


# -- Secret ------------------------------------------------------------------------------------------


def test_a_secret_never_prints() -> None:
    s = Secret("hunter2-very-secret")
    for text in (repr(s), str(s), f"{s}", f"{s!r}", repr({"token": s}), repr([s])):
        assert "hunter2" not in text
        assert MASK in text
    assert s.reveal() == "hunter2-very-secret"


def test_a_secret_matches_only_itself() -> None:
    s = Secret("abc123")
    assert s.matches("abc123") and s.matches(b"abc123")
    assert not s.matches("abc124") and not s.matches("abc12") and not s.matches("")
    assert not s.matches(None)
    assert s == Secret("abc123") and s != Secret("abc124")


def test_a_secret_is_neither_empty_nor_pickled() -> None:
    with pytest.raises(ValueError):
        Secret("")
    with pytest.raises(TypeError):
        pickle.dumps(Secret("x"))


def test_a_dataclass_holding_a_secret_prints_masked() -> None:
    from controller.eventing.dispatcher import DispatcherSettings

    settings = DispatcherSettings(token=Secret("s3cr3t-value"))
    assert "s3cr3t-value" not in repr(settings)
    assert "token=***" in repr(settings)


def test_token_file_is_created_once_0600_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "token"
    first = load_or_create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(first.reveal()) >= 40
    assert load_or_create_token(path) == first  # kept across restarts
    assert read_token(path) == first


def test_an_empty_token_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(path)


# -- private files -------------------------------------------------------------------------------------


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


def test_a_loose_state_dir_is_tightened_and_a_private_one_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    (state / "store.db").write_bytes(b"")
    (state / "logs" / "app.log").write_bytes(b"")
    (state / "run.sh").write_bytes(b"")
    for p, mode in ((state, 0o755), (state / "logs", 0o755), (state / "store.db", 0o644),
                    (state / "logs" / "app.log", 0o664), (state / "run.sh", 0o755)):
        p.chmod(mode)
    (state / "link").symlink_to("/etc/passwd")
    assert ensure_private_dir(state) == 5
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.lstat().st_mode)
             for p in [state, *state.rglob("*")] if not p.is_symlink()}
    assert modes == {"state": 0o700, "state/logs": 0o700, "state/store.db": 0o600,
                     "state/logs/app.log": 0o600, "state/run.sh": 0o700}
    assert stat.S_IMODE(os.stat("/etc/passwd").st_mode) & 0o004  # the link's target untouched
    assert ensure_private_dir(state) == 0


def test_tighten_tree_counts_what_it_changed(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"")
    (tmp_path / "a").chmod(0o640)
    tmp_path.chmod(0o700)
    assert tighten_tree(tmp_path) == 1
    assert tighten_tree(tmp_path) == 0


# -- listen addresses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.2", ("127.0.0.2", 8080)),
    ("127.0.0.2:9000", ("127.0.0.2", 9000)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::1]:9000", ("::1", 9000)),
    ("[::1]", ("::1", 8080)),
    ("::1", ("::1", 8080)),
    ("::", ("::", 8080)),
])
def test_listen_addresses_parse(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text, 8080) == want
    host, port = want
    assert parse_listen(format_hostport(host, port), 1) == want


@pytest.mark.parametrize(("text", "error"), [
    ("", "empty"),
    ("example.com:80", "not an IP address"),
    ("[::1", "missing ']'"),
    ("[::1]9000", "expected ':PORT'"),
    ("127.0.0.1:0", "1 to 65535"),
    ("127.0.0.1:http", "1 to 65535"),
    ("127.0.0.1:70000", "1 to 65535"),
])
def test_bad_listen_addresses_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse_listen(text, 8080)


def test_listen_lists_round_trip() -> None:
    pairs = (("127.0.0.2", 80), ("::1", 8080))
    assert parse_listen_list("127.0.0.2:80,[::1]:8080", 0) == pairs
    assert parse_listen_list("", 0) == ()


def test_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))


# -- TLS -------------------------------------------------------------------------------------------------


def _sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName))


def test_a_server_certificate_carries_exactly_its_names_and_chains_to_the_ca() -> None:
    ca = new_authority("test CA", NOW)
    cert, _ = issue_server_cert(ca, ["127.0.0.1", "::1", "localhost", "[::1]", "10.1.2.3"], NOW)
    assert _sans(cert) == {"127.0.0.1", "::1", "localhost", "10.1.2.3"}
    cert.verify_directly_issued_by(ca.cert)
    basic = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca and basic.path_length == 0
    assert reissue_reason(cert, ca, ["localhost", "::1", "127.0.0.1", "10.1.2.3"], NOW) is None


def test_reissue_when_names_change_expiry_nears_or_the_ca_differs() -> None:
    ca = new_authority("test CA", NOW)
    cert, _ = issue_server_cert(ca, ["127.0.0.1"], NOW)
    assert reissue_reason(cert, ca, ["127.0.0.1", "10.0.0.1"], NOW) == "the names it must carry changed"
    late = cert.not_valid_after_utc - RENEW_BEFORE + dt.timedelta(seconds=1)
    assert reissue_reason(cert, ca, ["127.0.0.1"], late) == "it expires soon"
    other = new_authority("test CA", NOW)  # same name, another key
    assert reissue_reason(cert, other, ["127.0.0.1"], NOW) == "it was not signed by this CA's key"
    assert reissue_reason(cert, new_authority("other", NOW), ["127.0.0.1"], NOW) == (
        "it was not issued by this CA")


def test_the_ca_is_made_once_and_its_key_is_private(tmp_path: Path) -> None:
    ca = ensure_authority(tmp_path, "flint CA", NOW)
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    again = ensure_authority(tmp_path, "flint CA", NOW)
    assert again.cert == ca.cert
    files, why = ensure_server_files(ca, tmp_path, "api", ["127.0.0.1"], NOW)
    assert why == "there was none"
    kept, why = ensure_server_files(again, tmp_path, "api", ["127.0.0.1"], NOW)
    assert why is None and kept == files
    _, why = ensure_server_files(again, tmp_path, "api", ["127.0.0.1", "127.0.0.2"], NOW)
    assert why == "the names it must carry changed"


async def test_a_client_trusting_the_ca_completes_a_handshake(tmp_path: Path) -> None:
    import asyncio

    now = dt.datetime.now(dt.UTC)
    ca = await asyncio.to_thread(ensure_authority, tmp_path, "flint CA", now)
    files, _ = await asyncio.to_thread(
        ensure_server_files, ca, tmp_path, "api", ["127.0.0.1", "localhost"], now)

    def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")
        writer.close()

    context = await asyncio.to_thread(server_context, files)
    served = await asyncio.start_server(hello, "127.0.0.1", 0, ssl=context)
    port = served.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(ca.cert_pem), server_hostname="localhost")
        assert await reader.read() == b"hi"
        writer.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=client_context(
                new_authority("stranger", now).cert_pem))
    finally:
        served.close()
        await served.wait_closed()


# -- the state dir's credentials and kubeconfig -------------------------------------------------------------


def test_api_names_cover_loopback_and_every_listen_address() -> None:
    assert api_names([]) == ["127.0.0.1", "::1", "localhost"]
    assert api_names(["10.0.0.5", "127.0.0.1"]) == ["127.0.0.1", "::1", "localhost", "10.0.0.5"]
    assert api_names(["0.0.0.0"], hostname="box") == ["127.0.0.1", "::1", "localhost", "box"]


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
