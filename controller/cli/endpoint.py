"""Which API the CLI talks to and with what credential, found by kubectl's rules.

Order: `--api`/`FLINT_API` and `FLINT_TOKEN` when both are set (nothing is read); otherwise the
kubeconfig — `--kubeconfig`, else `KUBECONFIG` (a `:`-separated list, merged), else Flint's own
`${FLINT_KUBECONFIG:-~/.config/flint/kubeconfig}`, else `~/.kube/config` — in the context
`--context` or its `current-context`, loaded by `kubernetes_asyncio.config` (so a Kubernetes
cluster's kubeconfig works the same way); then `--api`/`FLINT_API` replaces its server and
`FLINT_TOKEN` its token. With no kubeconfig at all: `http://127.0.0.1:8081` and no token, which
the API refuses with a message saying where the credential is.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controller.cli.errors import CliError
from flint_common.addresses import is_loopback
from flint_common.secret import Secret
from flint_common.tls import client_context

DEFAULT_API = "http://127.0.0.1:8081"


@dataclass(frozen=True)
class Endpoint:
    server: str
    token: Secret | None = None
    ssl: ssl.SSLContext | None = None
    """For an https server: trusts the kubeconfig's CA (None: the system's CAs)."""
    server_hostname: str | None = None
    """The kubeconfig's `tls-server-name`, checked instead of the URL's host."""
    source: str = "the default address"
    """Where server and credential came from, for error messages."""
    proxy: str | None = None
    """The kubeconfig's `proxy-url`."""


def may_carry_token(url: str) -> bool:
    """Whether a bearer token may be sent to `url`: over HTTPS, or plain HTTP to a loopback
    address (client-go never sends one over plain HTTP; Flint's loopback API is plain HTTP)."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))


def checked(endpoint: Endpoint) -> Endpoint:
    """`endpoint`, unless it would send its token where it must not go."""
    if endpoint.token is not None and not may_carry_token(endpoint.server):
        raise CliError(
            f"refusing to send the owner's token over plain HTTP to {endpoint.server} "
            f"({endpoint.source}): use the API's https:// address")
    if endpoint.token is not None and endpoint.proxy and not endpoint.server.startswith("https:"):
        raise CliError(
            f"refusing to send the owner's token over plain HTTP through the proxy "
            f"{endpoint.proxy} ({endpoint.source}): use the API's https:// address")
    return endpoint


def flint_kubeconfig(env: Mapping[str, str]) -> Path:
    """Where `flint up` merges its context for the default state dir."""
    explicit = env.get("FLINT_KUBECONFIG")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".config" / "flint" / "kubeconfig"


def kubeconfig_paths(flag: str | None, env: Mapping[str, str]) -> str | None:
    """The kubeconfig path list to load, or None when there is none to load."""
    if flag:
        return flag
    if env.get("KUBECONFIG"):
        return env["KUBECONFIG"]
    home = env.get("HOME") or str(Path.home())
    for candidate in (flint_kubeconfig(env), Path(home) / ".kube" / "config"):
        if candidate.is_file():
            return str(candidate)
    return None


def _context_from(cafile: str | None, cert: str | None, key: str | None, verify: bool) -> ssl.SSLContext:
    """The TLS context of a kubeconfig cluster and user (blocking: reads the files)."""
    if not verify and cafile:
        raise CliError("the kubeconfig sets both a certificate authority and "
                       "insecure-skip-tls-verify: specifying a root certificates file with the "
                       "insecure flag is not allowed (as kubectl says)")
    ctx = client_context(cafile=cafile)
    if cert:
        ctx.load_cert_chain(cert, key)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _library() -> tuple[Any, type[Exception], Any, Any]:
    """kubernetes_asyncio's loader, imported on first use (in a thread: importing reads files)
    and only here: it costs ~0.3 s, which CLI calls with FLINT_API and FLINT_TOKEN never pay."""
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config.config_exception import ConfigException
    from kubernetes_asyncio.config.kube_config import KubeConfigLoader, KubeConfigMerger

    return Configuration, ConfigException, KubeConfigLoader, KubeConfigMerger


async def from_kubeconfig(paths: str, context: str | None) -> Endpoint:
    """The server, token and TLS settings of one context of the kubeconfig(s) at `paths`.

    The library reads files and writes the CA data to a temp file inside its (async) loader, so
    each step runs in a worker thread, the loader on a loop of its own there: never on ours."""
    Configuration, ConfigException, KubeConfigLoader, KubeConfigMerger = await asyncio.to_thread(
        _library)
    where = f"kubeconfig {paths}"
    try:
        merged = await asyncio.to_thread(KubeConfigMerger, paths)
        if merged.config is None:
            raise CliError(f"no kubeconfig found at {paths}")
        loader = KubeConfigLoader(config_dict=merged.config, active_context=context,
                                  config_base_path=None)
        cfg = await asyncio.to_thread(Configuration)
        await asyncio.to_thread(asyncio.run, loader.load_and_set(cfg))
    except ConfigException as e:
        raise CliError(f"cannot use the {where}: {e}") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CliError(f"cannot read the {where}: {e}") from None
    name = (loader.current_context or {}).get("name", context or "")
    bearer = str(cfg.api_key.get("BearerToken") or "")
    scheme, _, value = bearer.partition(" ")
    value = value.strip()  # a tokenFile's newline, as client-go trims it
    token = Secret(value) if scheme.lower() == "bearer" and value else None
    tls = None
    if str(cfg.host).startswith("https:"):
        try:
            tls = await asyncio.to_thread(
                _context_from, cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file, bool(cfg.verify_ssl))
        except (OSError, ssl.SSLError) as e:
            raise CliError(f"cannot use the TLS settings of the {where}: {e}") from None
    return Endpoint(
        server=str(cfg.host), token=token, ssl=tls,
        server_hostname=getattr(cfg, "tls_server_name", None) or None,
        source=f"{where}, context {name!r}",
        proxy=getattr(cfg, "proxy", None) or None,
    )


async def resolve(
    api: str | None,
    kubeconfig: str | None,
    context: str | None,
    env: Mapping[str, str] | None = None,
) -> Endpoint:
    """The endpoint by the rules in the module docstring; `api` is `--api` (else FLINT_API)."""
    env = os.environ if env is None else env
    api = api or env.get("FLINT_API") or None
    raw_token = env.get("FLINT_TOKEN") or None
    token = Secret(raw_token.strip()) if raw_token and raw_token.strip() else None
    if api and token and not kubeconfig and not context:
        return checked(Endpoint(api, token, source="--api/FLINT_API and FLINT_TOKEN"))
    paths = await asyncio.to_thread(kubeconfig_paths, kubeconfig, env)
    if paths is None:
        if context:
            raise CliError(f"context {context!r} was asked for, but there is no kubeconfig")
        return checked(Endpoint(api or DEFAULT_API, token,
                                source="no kubeconfig (FLINT_TOKEN)" if token else "no kubeconfig"))
    found = await from_kubeconfig(paths, context)
    if api:
        # the kubeconfig's proxy was for its own server, not for this one
        found = replace(found, server=api, proxy=None,
                        source=f"--api/FLINT_API with the credential of the {found.source}")
    if token:
        found = replace(found, token=token, source=f"{found.source}, token from FLINT_TOKEN")
    return checked(found)
