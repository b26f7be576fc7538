"""What the API server answers by asking a node or a Pod: `pods/log` and `services/proxy`.

kube-apiserver serves a container's log by asking the kubelet, which reads the container runtime's
log file; the fake reads the kubelet stand-in's files (`{namespace}_{pod}_{container}.log` in its
log directory, `KubeApiFake.kubelet_logs`). A Service's proxy goes to one of the Service's ready
endpoints (its EndpointSlices, the port named as the Service's port is), with the caller's
`Authorization` removed — the API server consumes it and passes on every other header — and the
answer passed back as it is. Limits: `sinceSeconds` is applied per file (a file unchanged for
longer is left out: the stand-in's lines carry no timestamps); `limitBytes`, `previous` and
`timestamps` are not served.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from . import errors
from .store import Store

JSON = dict[str, Any]
FOLLOW_POLL_S = 0.05
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host", "authorization",
                        "content-length"})


def _int_param(request: web.Request, name: str, minimum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise errors.bad_request(f"{name}: Invalid value: \"{raw}\": must be an integer") from None
    if value < minimum:
        raise errors.bad_request(f"{name}: Invalid value: {value}: must be greater than {minimum - 1}")
    return value


def _container(pod: JSON, asked: str | None) -> str:
    names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
    name = pod["metadata"]["name"]
    if asked is None:
        if len(names) == 1:
            return names[0]
        raise errors.bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                 f"[{' '.join(names)}]")
    if asked not in names:
        raise errors.bad_request(f"container {asked} is not valid for pod {name}")
    return asked


def _tail(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The last `lines` lines (all with None) and the offset after them (blocking)."""
    try:
        with path.open("rb") as f:
            kept = deque(f, maxlen=lines) if lines is None or lines > 0 else deque()
            return b"".join(kept), f.seek(0, 2)
    except FileNotFoundError:
        return b"", 0


def _read(path: Path, offset: int) -> tuple[bytes, int]:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
            return data, offset + len(data)
    except FileNotFoundError:
        return b"", offset


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


async def pod_log(request: web.Request, store: Store, log_dir: Path | None, namespace: str,
                  name: str) -> web.StreamResponse:
    pod = store.get(store.resource("", "v1", "pods"), namespace, name)
    container = _container(pod, request.query.get("container"))
    tail = _int_param(request, "tailLines", 0)
    since = _int_param(request, "sinceSeconds", 1)
    follow = request.query.get("follow") in ("true", "1")
    if log_dir is None:
        raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start: '
                                 "no node runs it")
    path = log_dir / f"{namespace}_{name}_{container}.log"
    changed = await asyncio.to_thread(_mtime, path)
    if changed is None:
        raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start: '
                                 "ContainerCreating")
    data, offset = await asyncio.to_thread(_tail, path, tail)
    if since is not None and changed < time.time() - since:
        data = b""
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    if data:
        await resp.write(data)
    pods = store.resource("", "v1", "pods")
    while follow:
        await asyncio.sleep(FOLLOW_POLL_S)
        more, offset = await asyncio.to_thread(_read, path, offset)
        if more:
            await resp.write(more)
        elif not store.list_objects(pods, namespace, lambda o: o["metadata"]["name"] == name)[0]:
            break  # the pod is gone: its log ends
    await resp.write_eof()
    return resp


def _endpoint(store: Store, namespace: str, service: str, port: str) -> str:
    """`host:port` of a ready endpoint of the Service, by its port name or number (`port`, or
    its only port)."""
    svc = store.get(store.resource("", "v1", "services"), namespace, service)
    ports = (svc.get("spec") or {}).get("ports") or []
    chosen = next((p for p in ports if port in (str(p.get("name") or ""), str(p.get("port")))), None)
    if chosen is None and not port and len(ports) == 1:
        chosen = ports[0]
    if chosen is None:
        raise errors.service_unavailable(f'no service port "{port}" found for service "{service}"')
    wanted = str(chosen.get("name") or "")
    slices = store.list_objects(
        store.resource("discovery.k8s.io", "v1", "endpointslices"), namespace,
        lambda o: (o["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == service)[0]
    for s in slices:
        number = next((p.get("port") for p in s.get("ports") or []
                       if str(p.get("name") or "") == wanted), None)
        for e in s.get("endpoints") or []:
            if number and e.get("addresses") and (e.get("conditions") or {}).get("ready", True):
                return f"{e['addresses'][0]}:{number}"
    raise errors.service_unavailable(f'no endpoints available for service "{service}"')


async def service_proxy(request: web.Request, store: Store, namespace: str, target: str,
                        rest: list[str]) -> web.Response:
    scheme, service, port = "http", target, ""
    bits = target.split(":")
    if len(bits) == 3:
        scheme, service, port = bits
    elif len(bits) == 2:
        service, port = bits
    address = _endpoint(store, namespace, service, port)
    url = f"{scheme or 'http'}://{address}/" + "/".join(rest)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    body = await request.read()
    try:
        async with aiohttp.ClientSession() as http, http.request(
                request.method, url, params=request.query, headers=headers, data=body or None,
                timeout=aiohttp.ClientTimeout(total=30), ssl=False) as answer:
            raw = await answer.read()
            passed = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(body=raw, status=answer.status, headers=passed)
    except aiohttp.ClientError as e:
        raise errors.service_unavailable(f"error trying to reach service: {e}") from None
