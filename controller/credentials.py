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
import fcntl
import ipaddress
import os
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


def interface_addresses(family: socket.AddressFamily) -> list[str]:
    """This machine's addresses of one family (what a wildcard listener is reached by)."""
    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == family:
                out.append(a.address.split("%", 1)[0])
    return out


def api_names(
    listen_hosts: Iterable[str],
    hostname: str | None = None,
    interfaces: dict[socket.AddressFamily, list[str]] | None = None,
) -> list[str]:
    """The names the API's certificate must carry: loopback, and each `--api-listen` address;
    for an unspecified one (0.0.0.0, ::) the machine's host name and its interfaces' addresses
    of that family instead."""
    names = list(LOOPBACK_NAMES)
    for host in listen_hosts:
        addr = ipaddress.ip_address(host)
        if not addr.is_unspecified:
            names.append(host)
            continue
        family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
        names.append(hostname if hostname is not None else socket.gethostname())
        names += (interfaces or {}).get(family, []) if interfaces is not None else (
            interface_addresses(family))
    return list(dict.fromkeys(names))


def ensure_credentials(
    state_dir: Path, listen_hosts: Iterable[str], now: dt.datetime | None = None
) -> tuple[Credentials, str | None]:
    """The state dir's token, CA and API certificate, each made when missing; returns them and
    why the certificate was (re-)issued, None if the kept one fits. Processes that call it at the
    same time (`flint up` and a controller, two `flint up`s) take turns on a lock file, so they
    all end with the same token and a CA whose key and certificate belong together.
    Blocking: file I/O."""
    now = now or dt.datetime.now(dt.UTC)
    lock = state_dir / "auth" / ".lock"
    lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        token = load_or_create_token(token_path(state_dir))
        ca = ensure_authority(tls_dir(state_dir), f"flint CA {state_dir.name}", now)
        names = api_names(listen_hosts)
        files, reason = ensure_server_files(ca, tls_dir(state_dir), "api", names, now)
    finally:
        os.close(fd)  # releases the lock
    return Credentials(token, ca, files), reason


def https_url(port: int, host: str = "127.0.0.1") -> str:
    """The API's loopback HTTPS URL: the one the kubeconfig names."""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def api_kubeconfig(credentials: Credentials, url: str) -> kubeconfig.Config:
    return kubeconfig.flint_kubeconfig(url, credentials.ca.cert_pem, credentials.token)
