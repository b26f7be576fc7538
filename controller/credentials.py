"""The owner's credentials in a state dir: the token, the API's CA and certificate, the kubeconfig.

Layout (every file 0600, every directory 0700):

    <state>/auth/token        the owner's bearer token: created once, kept across restarts
    <state>/tls/ca.crt, ca.key  the state dir's CA: created once
    <state>/tls/api.crt, api.key  the HTTPS API's certificate, re-issued when its names change
    <state>/kubeconfig        context `flint`: the HTTPS URL, the CA, the token

`flint up` calls `ensure_credentials` before it starts anything (so the kubeconfig can be written
at once) and the controller calls it again on start (a no-op when nothing changed), so a
controller run on its own is never without a credential.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flint_common import kubeconfig
from flint_common.secret import Secret, load_or_create_token
from flint_common.tls import Authority, ServerFiles, ensure_authority, ensure_server_files

LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")
"""Names the API's certificate always carries."""


def token_path(state_dir: Path) -> Path:
    return state_dir / "auth" / "token"


def tls_dir(state_dir: Path) -> Path:
    return state_dir / "tls"


def kubeconfig_path(state_dir: Path) -> Path:
    return state_dir / "kubeconfig"


@dataclass(frozen=True)
class Credentials:
    token: Secret
    ca: Authority
    api_cert: ServerFiles


def api_names(listen_hosts: Iterable[str], hostname: str | None = None) -> list[str]:
    """The names the API's certificate must carry: loopback, and each `--api-listen` address
    (for an unspecified address, 0.0.0.0 or ::, the machine's host name instead)."""
    names = list(LOOPBACK_NAMES)
    for host in listen_hosts:
        if ipaddress.ip_address(host).is_unspecified:
            names.append(hostname if hostname is not None else socket.gethostname())
        else:
            names.append(host)
    return list(dict.fromkeys(names))


def ensure_credentials(
    state_dir: Path, listen_hosts: Iterable[str], now: dt.datetime | None = None
) -> tuple[Credentials, str | None]:
    """The state dir's token, CA and API certificate, each made when missing; returns them and
    why the certificate was (re-)issued, None if the kept one fits. Blocking: file I/O."""
    now = now or dt.datetime.now(dt.UTC)
    token = load_or_create_token(token_path(state_dir))
    ca = ensure_authority(tls_dir(state_dir), f"flint CA {state_dir.name}", now)
    files, reason = ensure_server_files(ca, tls_dir(state_dir), "api", api_names(listen_hosts), now)
    return Credentials(token, ca, files), reason


def api_kubeconfig(credentials: Credentials, https_url: str) -> kubeconfig.Config:
    return kubeconfig.flint_kubeconfig(https_url, credentials.ca.cert_pem, credentials.token)
