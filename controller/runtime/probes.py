"""Readiness and liveness probes (TCP connect, HTTP GET) run by the local runtime."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from controller.runtime.base import Probe

USER_AGENT = "kube-probe/flint"
"""Sent with HTTP probes; apps that special-case Kubernetes probes recognise the prefix."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    listening: bool
    """A TCP connection was accepted (the app listens, even if the probe failed)."""
    detail: str = ""
    """Why it failed, for status messages."""


async def run_probe(probe: Probe, host: str, port: int) -> ProbeResult:
    """Run `probe` once against `host`; `port` is the replica's PORT (used unless the probe
    names its own). HTTP probes succeed on a 200-399 status, like Kubernetes'."""
    target = probe.port or port
    try:
        async with asyncio.timeout(probe.timeout_s):
            reader, writer = await asyncio.open_connection(host, target)
    except TimeoutError:
        return ProbeResult(False, False, f"connecting to {host}:{target} timed out")
    except OSError as e:
        return ProbeResult(False, False, f"connecting to {host}:{target}: {e.strerror or e}")
    try:
        if probe.kind == "tcp":
            return ProbeResult(True, True)
        path = probe.path if probe.path.startswith("/") else "/" + probe.path
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{target}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("latin-1"))
        async with asyncio.timeout(probe.timeout_s):
            await writer.drain()
            line = await reader.readline()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return ProbeResult(False, True, f"HTTP GET {path}: malformed response {line[:80]!r}")
        status = int(parts[1])
        if 200 <= status < 400:
            return ProbeResult(True, True)
        return ProbeResult(False, True, f"HTTP GET {path} returned {status}")
    except TimeoutError:
        return ProbeResult(
            False, True, f"HTTP GET {probe.path} timed out after {probe.timeout_s:g}s"
        )
    except OSError as e:
        return ProbeResult(False, True, f"HTTP GET {probe.path}: {e.strerror or e}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
