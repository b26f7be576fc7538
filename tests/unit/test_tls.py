"""The state dir's CA and the server certificates it signs."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

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
