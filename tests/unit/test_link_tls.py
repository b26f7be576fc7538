"""The link's TLS (`flint_common.link_tls`): http untouched, https always verified, the CA file
read again for every connection and a new context made only when it changed."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest

from flint_common.link_tls import ControllerCAUnusable, LinkTLS, refusal
from flint_common.tls import new_authority

NOW = dt.datetime.now(dt.UTC)


async def write(path: Path, data: bytes) -> None:
    await asyncio.to_thread(path.write_bytes, data)


async def test_plain_http_needs_no_context() -> None:
    assert await LinkTLS(Path("/nonexistent")).for_url("http://127.0.0.1:8081") is True


async def test_https_trusts_the_files_cas_and_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ca.crt"
    one, two = new_authority("one", NOW), new_authority("two", NOW)
    await write(path, one.cert_pem)
    tls = LinkTLS(path)
    first = await tls.for_url("https://controller:8443")
    assert isinstance(first, ssl.SSLContext)
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    assert [c["subject"] for c in first.get_ca_certs()] == [((("commonName", "one"),),)]
    assert await tls.for_url("https://controller:8443") is first  # unchanged: the same context
    await write(path, one.cert_pem + two.cert_pem)  # a rotation's bundle
    second = await tls.for_url("https://controller:8443")
    assert isinstance(second, ssl.SSLContext) and second is not first
    assert len(second.get_ca_certs()) == 2


async def test_an_unusable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ControllerCAUnusable, match=r"--controller-ca .*missing.crt: cannot be read"):
        await LinkTLS(tmp_path / "missing.crt").for_url("https://c")
    await write(tmp_path / "empty.crt", b"no certificate here")
    with pytest.raises(ControllerCAUnusable, match="holds no PEM certificate"):
        await LinkTLS(tmp_path / "empty.crt").for_url("https://c")


async def test_without_a_file_the_system_cas_verify() -> None:
    ctx = await LinkTLS(None).for_url("https://example.org")
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_a_refusal_says_what_was_trusted() -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "unable to get local issuer certificate"
    assert "unable to get local issuer certificate" in refusal(exc, Path("/etc/ca.crt"))
    assert "--controller-ca /etc/ca.crt" in refusal(exc, Path("/etc/ca.crt"))
    assert "system's CAs" in refusal(exc, None)
