"""A private CA per state dir and the server certificates it signs (the API's HTTPS listener; on
the Kubernetes engine the cluster's CA kept in a Secret, `controller.cluster_tls`), and the SSL
contexts that use them (a server context can be given a new certificate in place).

The CA is made once (`ca.crt`, `ca.key` 0600) and kept: clients trust it through the kubeconfig's
`certificate-authority-data`. A server certificate is re-issued when the names it must carry
change (a new `--api-listen` address), when it nears expiry or when the CA changed; the decision
is a pure function of the certificate, the wanted names and `now`. Keys are ECDSA P-256.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flint_common.private import write_private

CA_VALIDITY = dt.timedelta(days=3650)
"""Lifetime of a new CA (ten years: it is trusted by every kubeconfig written from it)."""
SERVER_VALIDITY = dt.timedelta(days=365)
"""Lifetime of a new server certificate."""
RENEW_BEFORE = dt.timedelta(days=30)
"""A server certificate with less than this left is re-issued on start."""
BACKDATE = dt.timedelta(minutes=5)
"""`notBefore` is this far in the past, for clocks a little behind ours."""

Name = str
"""A subject alternative name: an IP address (`127.0.0.1`, `::1`) or a DNS name (`localhost`)."""


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class ServerFiles:
    """A server certificate (with no chain: clients trust the CA itself) and its key, on disk."""

    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def san_entries(names: Iterable[Name]) -> list[x509.GeneralName]:
    """IP addresses as iPAddress entries, the rest as dNSName entries, without duplicates."""
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(n.strip("[]") for n in names if n):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def new_authority(
    common_name: str, now: dt.datetime, validity: dt.timedelta = CA_VALIDITY
) -> Authority:
    """A self-signed CA that may sign server certificates only (pathlen 0), valid `validity`."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def issue_server_cert(
    ca: Authority, names: Iterable[Name], now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for `names`, signed by `ca`."""
    sans = san_entries(names)
    if not sans:
        raise ValueError("a server certificate needs at least one name")
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flint-api")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVER_VALIDITY, ca.cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def reissue_reason(
    cert: x509.Certificate, ca: Authority, names: Iterable[Name], now: dt.datetime
) -> str | None:
    """Why `cert` must be replaced to serve `names` at `now`, or None if it can stay (pure)."""
    if cert.issuer != ca.cert.subject:
        return "it was not issued by this CA"
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (InvalidSignature, ValueError, TypeError):
        return "it was not signed by this CA's key"
    try:
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it has no subject alternative names"
    if set(have) != set(san_entries(names)):
        return "the names it must carry changed"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return "it expires soon"
    if cert.not_valid_before_utc > now:
        return "it is not valid yet"
    return None


# -- PEM (pure) ------------------------------------------------------------------------------------


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM: for a 0600 file or a Secret only, never a log."""
    return _key_pem(key)


def load_cert(data: bytes, what: str) -> x509.Certificate:
    """One PEM certificate; a ValueError naming `what` (never the bytes) when it is not one."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValueError(f"{what}: not a PEM certificate") from None


def load_key(data: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    """One unencrypted PEM EC private key; a ValueError naming `what` (never the key) else."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{what}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{what}: not an EC private key")
    return key


def load_authority(cert: bytes, key: bytes, what: str) -> Authority:
    """A CA from its PEM certificate and key; a ValueError naming `what` when they are not a pair."""
    ca = Authority(load_cert(cert, f"{what} certificate"), load_key(key, f"{what} key"))
    if not key_matches(ca.cert, ca.key):
        raise ValueError(f"{what}: its key is not its certificate's")
    return ca


def bundle_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Certificates as one PEM bundle (a `caBundle`, a `ca.crt` that trusts several CAs), each once."""
    seen: dict[bytes, None] = {}
    for cert in certs:
        seen.setdefault(cert_pem(cert))
    return b"".join(seen)


def load_bundle(data: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; a ValueError naming `what` when it holds none."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{what}: holds no PEM certificate") from None
    return certs


# -- on disk (blocking) ----------------------------------------------------------------------------


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key


def key_matches(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    """Whether `key` is the private half of `cert`'s public key."""
    public = cert.public_key()
    return isinstance(public, ec.EllipticCurvePublicKey) and (
        public.public_numbers() == key.public_key().public_numbers())


def ensure_authority(directory: Path, common_name: str, now: dt.datetime) -> Authority:
    """The CA kept in `directory` (`ca.crt`, `ca.key`), made the first time, and made again when
    the kept one is unreadable or its key and certificate do not belong together (clients learn
    the new one from the kubeconfig `flint up` rewrites on every start). Blocking: file I/O; the
    caller serialises processes (`controller.credentials` holds a lock)."""
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = _load_key(key_path)
            if key_matches(cert, key):
                return Authority(cert, key)
        except ValueError:
            pass
    ca = new_authority(common_name, now)
    write_private(key_path, _key_pem(ca.key))
    write_private(cert_path, ca.cert_pem)
    return ca


def ensure_server_files(
    ca: Authority, directory: Path, stem: str, names: Iterable[Name], now: dt.datetime
) -> tuple[ServerFiles, str | None]:
    """`{stem}.crt` and `{stem}.key` in `directory` for `names`, (re-)issued when needed; returns
    the files and why they were issued (None when the kept ones still fit). Blocking."""
    names = list(names)
    files = ServerFiles(directory / f"{stem}.crt", directory / f"{stem}.key")
    reason: str | None = "there was none"
    if files.cert.exists() and files.key.exists():
        try:
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
            reason = reissue_reason(cert, ca, names, now)
            if reason is None and not key_matches(cert, _load_key(files.key)):
                reason = "its key does not match it"
        except ValueError:
            reason = "the kept one is unreadable"
    if reason is not None:
        cert, key = issue_server_cert(ca, names, now)
        write_private(files.key, _key_pem(key))
        write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files, reason


def server_context(files: ServerFiles) -> ssl.SSLContext:
    """TLS 1.2+ server context for an aiohttp site. Blocking: reads the files."""
    ctx = new_server_context()
    ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx


@contextlib.contextmanager
def pem_files(cert: bytes, key: bytes) -> Iterator[tuple[str, str]]:
    """The paths of `cert` and `key` written to 0600 files in a fresh 0700 directory, removed on
    exit (what `SSLContext.load_cert_chain` reads: it takes no bytes). Blocking: file I/O."""
    with tempfile.TemporaryDirectory(prefix="flint-tls-") as directory:
        cert_path, key_path = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        write_private(key_path, key)
        write_private(cert_path, cert)
        yield str(cert_path), str(key_path)


def new_server_context() -> ssl.SSLContext:
    """A TLS 1.2+ server context with no certificate yet (`load_cert_chain` gives it one; called
    again on the same object, the handshakes that follow present the new one)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_context(ca_pem: bytes | None = None, cafile: str | None = None) -> ssl.SSLContext:
    """A verifying TLS 1.2+ client context that trusts only `ca_pem` or `cafile` (the system's
    CAs when neither is given). Blocking when it reads `cafile`."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=cafile,
        cadata=ca_pem.decode("ascii") if ca_pem is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
