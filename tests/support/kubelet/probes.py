"""Readiness and liveness probes of a running container: httpGet, tcpSocket, exec."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from .settings import KubeletSettings

if TYPE_CHECKING:
    from .containers import Container

JSON = dict[str, Any]


def _port(container: Container, port: Any) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.spec.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port {port!r} is not one of the container's ports")


async def http_get(container: Container, spec: JSON, timeout_s: float) -> bool:
    """GET host:port/path (HTTP/1.0); 200–399 is a success."""
    host = spec.get("host") or container.pod.ip
    port, path = _port(container, spec.get("port")), str(spec.get("path") or "/")
    headers = "".join(f"{h['name']}: {h['value']}\r\n" for h in spec.get("httpHeaders") or [])

    async def get() -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\n"
                f"{headers}\r\n".encode()
            )
            await writer.drain()
            parts = (await reader.readline()).split()
            return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        async with asyncio.timeout(timeout_s):
            return await get()
    except (OSError, TimeoutError, ValueError):
        return False


async def tcp_socket(container: Container, spec: JSON, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(
                spec.get("host") or container.pod.ip, _port(container, spec.get("port"))
            )
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def exec_probe(container: Container, spec: JSON, timeout_s: float) -> bool:
    command = [str(c) for c in spec.get("command") or []]
    if not command:
        return False
    proc = await asyncio.create_subprocess_exec(
        *command, env=container.env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(timeout_s):
            return await proc.wait() == 0
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False


class Prober:
    """The probe loops of one run of a container; they end with it (their tasks are cancelled)."""

    def __init__(self, container: Container, settings: KubeletSettings) -> None:
        self.container = container
        self.settings = settings
        self._kills: set[asyncio.Task[None]] = set()

    def start(self) -> list[asyncio.Task[None]]:
        spec = self.container.spec
        tasks = []
        if spec.get("readinessProbe"):
            tasks.append(asyncio.create_task(self._loop(spec["readinessProbe"], self._readiness)))
        if spec.get("livenessProbe"):
            tasks.append(asyncio.create_task(self._loop(spec["livenessProbe"], self._liveness)))
        return tasks

    async def probe(self, probe: JSON) -> bool:
        timeout = self.settings.probe_timeout_s or float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            return await http_get(self.container, probe["httpGet"], timeout)
        if "tcpSocket" in probe:
            return await tcp_socket(self.container, probe["tcpSocket"], timeout)
        if "exec" in probe:
            return await exec_probe(self.container, probe["exec"], timeout)
        return True  # grpc is not supported: counted a success

    async def _loop(self, probe: JSON, outcome: Any) -> None:
        period = self.settings.probe_period_s or float(probe.get("periodSeconds", 10))
        failures_needed = int(probe.get("failureThreshold", 3))
        successes_needed = int(probe.get("successThreshold", 1))
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        failures = successes = 0
        while True:
            if await self.probe(probe):
                successes, failures = successes + 1, 0
                if successes >= successes_needed:
                    await outcome(True)
            else:
                failures, successes = failures + 1, 0
                if failures >= failures_needed:
                    await outcome(False)
                    failures = 0
            await asyncio.sleep(period)

    async def _readiness(self, ok: bool) -> None:
        if self.container.ready != ok:
            self.container.ready = ok
            self.container.on_change()

    async def _liveness(self, ok: bool) -> None:
        if not ok:  # the kubelet restarts it; its exit shows as the restart
            task = asyncio.get_running_loop().create_task(self.container.kill())
            self._kills.add(task)
            task.add_done_callback(self._kills.discard)
