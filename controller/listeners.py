"""Where the API listens: plain HTTP on loopback only, HTTPS on loopback and each `--api-listen`.

Plain HTTP is for processes on this machine (the CLI, Flint's own processes); HTTPS, with the
certificate the state dir's CA signed, is what kubectl needs, since client-go never sends a bearer
token to an `http://` server. A non-loopback address is served over HTTPS only. On the Kubernetes
engine HTTPS serves the cluster certificate instead (`controller.cluster_tls`: the context passed
in, reloaded in place when it is rotated), which gateways and dispatchers in other pods verify by
the leader Service's DNS name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl

from aiohttp import web

from controller.credentials import Credentials
from controller.settings import ControllerSettings
from flint_common.addresses import format_hostport, is_loopback
from flint_common.tls import server_context


class ListenError(ValueError):
    """A listener setting that cannot be honoured."""


def https_addresses(s: ControllerSettings) -> list[tuple[str, int]]:
    """Where HTTPS is served: loopback first (the kubeconfig's URL), then every `--api-listen`
    address, without duplicates. A wildcard (0.0.0.0, ::) already covers the addresses of its
    family on its port, so those are not bound again (the second bind would fail); `::` is
    IPv6 only (asyncio sets IPV6_V6ONLY), so it does not cover 127.0.0.1."""
    wanted = list(dict.fromkeys([(s.api_host, s.api_tls_port), *s.api_listen]))
    ips = {(h, p): ipaddress.ip_address(h) for h, p in wanted}
    wild = {(ip.version, p) for (_, p), ip in ips.items() if ip.is_unspecified}
    return [(h, p) for (h, p), ip in ips.items() if ip.is_unspecified or (ip.version, p) not in wild]


async def start_sites(
    runner: web.AppRunner, s: ControllerSettings, credentials: Credentials,
    tls: ssl.SSLContext | None = None,
) -> list[str]:
    """Start every listener of the API on `runner`; returns their URLs. HTTPS with `tls` (the
    cluster certificate's context) when given, else with the state dir's certificate."""
    if not is_loopback(s.api_host):
        raise ListenError(
            f"api_host {s.api_host} is not a loopback address: plain HTTP is served on loopback "
            "only (use --api-listen for other addresses: they are served over HTTPS)"
        )
    ctx = tls if tls is not None else await asyncio.to_thread(server_context, credentials.api_cert)
    urls = []
    plain = web.TCPSite(runner, s.api_host, s.api_port, reuse_address=True)
    await plain.start()
    urls.append(f"http://{format_hostport(s.api_host, s.api_port)}")
    for host, port in https_addresses(s):
        site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_address=True)
        await site.start()
        urls.append(f"https://{format_hostport(host, port)}")
    return urls
