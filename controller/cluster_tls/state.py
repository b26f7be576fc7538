"""The cluster certificates as one value, and its form in the Secret `flint-controller-certs` (pure).

Data keys: `ca.crt`/`ca.key` (the CA that signed the serving certificate), `tls.crt`/`tls.key`
(the serving certificate); while a rotation is under way `ca-next.crt`/`ca-next.key` (phase 1:
the new CA, trusted but not yet signing) or `ca-previous.crt` (phase 2: the old CA, still trusted).
When each phase began is kept in the annotations `flint.dev/ca-next-since` and
`flint.dev/ca-previous-since` (RFC 3339); `flint.dev/rotate-ca` (any value) asks the leader for a
rotation now (`kubectl annotate secret flint-controller-certs flint.dev/rotate-ca=now`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from flint_common.timefmt import rfc3339
from flint_common.tls import (
    Authority,
    bundle_pem,
    cert_pem,
    key_matches,
    key_pem,
    load_authority,
    load_cert,
    load_key,
)

__all__ = ["NEXT_SINCE", "PREVIOUS_SINCE", "ROTATE_CA", "ClusterCerts", "from_secret", "to_secret"]

NEXT_SINCE = "flint.dev/ca-next-since"
PREVIOUS_SINCE = "flint.dev/ca-previous-since"
ROTATE_CA = "flint.dev/rotate-ca"

Obj = dict[str, Any]


@dataclass(frozen=True)
class ClusterCerts:
    """The CA, the serving certificate it signed, and where a CA rotation is."""

    ca: Authority
    serving: x509.Certificate
    serving_key: ec.EllipticCurvePrivateKey
    next_ca: Authority | None = None
    """Phase 1: the new CA, in the trust bundle, not signing yet."""
    next_since: float | None = None
    previous_ca: x509.Certificate | None = None
    """Phase 2: the CA before `ca`, still in the trust bundle."""
    previous_since: float | None = None
    rotate_requested: bool = False
    """`flint.dev/rotate-ca` is set: rotate now."""

    @property
    def trusted(self) -> list[x509.Certificate]:
        """Every CA a client must trust now: the current one, and the next or previous one."""
        extra = [c for c in (self.next_ca.cert if self.next_ca else None, self.previous_ca) if c]
        return [self.ca.cert, *extra]

    @property
    def bundle(self) -> bytes:
        """`trusted` as one PEM bundle (the ConfigMap's `ca.crt`; base64, the `caBundle`)."""
        return bundle_pem(self.trusted)

    @property
    def tls_pem(self) -> tuple[bytes, bytes]:
        """The serving certificate and its key, as PEM."""
        return cert_pem(self.serving), key_pem(self.serving_key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_secret(certs: ClusterCerts, namespace: str, name: str) -> Obj:
    """The Secret holding `certs` (type Opaque; no resourceVersion: the caller adds it to update)."""
    tls_crt, tls_key = certs.tls_pem
    data = {"ca.crt": certs.ca.cert_pem, "ca.key": key_pem(certs.ca.key),
            "tls.crt": tls_crt, "tls.key": tls_key}
    annotations: dict[str, str] = {}
    if certs.next_ca is not None and certs.next_since is not None:
        data["ca-next.crt"], data["ca-next.key"] = certs.next_ca.cert_pem, key_pem(certs.next_ca.key)
        annotations[NEXT_SINCE] = rfc3339(certs.next_since)
    if certs.previous_ca is not None and certs.previous_since is not None:
        data["ca-previous.crt"] = cert_pem(certs.previous_ca)
        annotations[PREVIOUS_SINCE] = rfc3339(certs.previous_since)
    if certs.rotate_requested:
        annotations[ROTATE_CA] = "requested"
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "flint"},
                     "annotations": annotations},
        "data": {k: _b64(v) for k, v in data.items()},
    }


def _since(annotations: dict[str, Any], key: str) -> float:
    value = annotations.get(key)
    if not isinstance(value, str):
        raise ValueError(f"metadata.annotations[{key}]: missing (it says when the phase began)")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"metadata.annotations[{key}]: {value!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def from_secret(obj: Obj) -> ClusterCerts:
    """The certificates of the Secret `obj`; a ValueError naming the field that is wrong (never
    its content)."""
    raw = obj.get("data") or {}
    if not isinstance(raw, dict):
        raise ValueError("data: must be a map of keys to base64 values")
    data: dict[str, bytes] = {}
    for key, value in raw.items():
        try:
            data[key] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"data[{key}]: not base64") from None
    for key in ("ca.crt", "ca.key", "tls.crt", "tls.key"):
        if key not in data:
            raise ValueError(f"data[{key}]: missing")
    ca = load_authority(data["ca.crt"], data["ca.key"], "data[ca.crt]/data[ca.key]")
    serving = load_cert(data["tls.crt"], "data[tls.crt]")
    serving_key = load_key(data["tls.key"], "data[tls.key]")
    if not key_matches(serving, serving_key):
        raise ValueError("data[tls.key]: not the key of data[tls.crt]")
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    next_ca = next_since = previous = previous_since = None
    if "ca-next.crt" in data or "ca-next.key" in data:
        next_ca = load_authority(data.get("ca-next.crt", b""), data.get("ca-next.key", b""),
                                 "data[ca-next.crt]/data[ca-next.key]")
        next_since = _since(annotations, NEXT_SINCE)
    if "ca-previous.crt" in data:
        previous = load_cert(data["ca-previous.crt"], "data[ca-previous.crt]")
        previous_since = _since(annotations, PREVIOUS_SINCE)
    return ClusterCerts(ca, serving, serving_key, next_ca, next_since, previous, previous_since,
                        rotate_requested=ROTATE_CA in annotations)
