"""The TLS of a link to the controller (the gateway's websocket, the dispatcher's plan poll).

With an `https://` controller URL the controller's certificate is always verified, name and
chain: against the CAs of `--controller-ca FILE` when given (on Kubernetes the ConfigMap
`flint-controller-ca` mounted, which the leader rewrites during a CA rotation), else against the
system's CAs. The file is read again for every connection or poll, and a new context made only
when its content changed, so a rotated bundle is picked up without a restart while the kept
connections of an unchanged one are reused. Never `verify=False`.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from flint_common.tls import client_context, load_bundle

__all__ = ["ControllerCAUnusable", "LinkTLS", "refusal"]


class ControllerCAUnusable(ValueError):
    """The `--controller-ca` file cannot be read or holds no certificate (the path and why)."""


def _read(path: Path) -> bytes:
    """The CA file's bytes. Blocking."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ControllerCAUnusable(f"--controller-ca {path}: cannot be read ({type(exc).__name__})") from None


def _trusting(data: bytes, path: Path) -> ssl.SSLContext:
    """A verifying context that trusts the CAs in `data` only."""
    load_bundle(data, f"--controller-ca {path}")  # a ValueError naming the flag when it holds none
    try:
        return client_context(data)
    except ssl.SSLError:
        raise ControllerCAUnusable(f"--controller-ca {path}: not a PEM CA bundle") from None


class LinkTLS:
    """The client context of each connection to the controller."""

    def __init__(self, ca_file: Path | None) -> None:
        self.ca_file = ca_file
        self._kept: tuple[bytes, ssl.SSLContext] | None = None

    async def for_url(self, url: str) -> ssl.SSLContext | bool:
        """The `ssl` argument of aiohttp for `url`: True (nothing to verify) for `http://`, else
        a verifying context of the CA file read now. Raises `ControllerCAUnusable`."""
        if not url.startswith("https://"):
            return True
        if self.ca_file is None:
            if self._kept is None:  # the system's CAs: read from disk once
                self._kept = b"", await asyncio.to_thread(client_context)
            return self._kept[1]
        data = await asyncio.to_thread(_read, self.ca_file)
        if self._kept is None or data != self._kept[0]:
            try:
                self._kept = data, _trusting(data, self.ca_file)
            except ValueError as exc:
                raise ControllerCAUnusable(str(exc)) from None
        return self._kept[1]


def refusal(exc: BaseException, ca_file: Path | None) -> str:
    """Why a TLS handshake with the controller failed, for a log line (no secret is in it)."""
    cause = getattr(exc, "certificate_error", None) or exc
    why = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or type(cause).__name__
    trusted = f"the CAs of --controller-ca {ca_file}" if ca_file else "the system's CAs (no --controller-ca)"
    return f"the controller's certificate was not accepted ({why}); it must be signed by {trusted}"
