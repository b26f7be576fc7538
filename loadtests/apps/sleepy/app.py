"""Sleepy: a small asyncio app that answers every request after a delay (100 ms by default).

Standard library only (any python3 runs it), HTTP/1.1 with keep-alive, listening on
127.0.0.1:$PORT. `$SLEEPY_MS` sets the delay; `?ms=N` overrides it for one request (0 to
10,000 ms). The answer is a small JSON document naming the revision, so a load generator can
tell replicas apart:
`{"revision": "...", "pid": 1234, "slept_ms": 100}`. SIGTERM stops it at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from urllib.parse import parse_qs, urlsplit

DEFAULT_MS = float(os.environ.get("SLEEPY_MS", "100"))
MAX_MS = 10_000.0
MAX_HEAD = 32 * 1024
REVISION = os.environ.get("K_REVISION", "unknown")


def delay_ms(target: str) -> float:
    """The delay a request target asks for (`?ms=`), clamped to [0, MAX_MS]; the default otherwise."""
    values = parse_qs(urlsplit(target).query).get("ms")
    if not values:
        return DEFAULT_MS
    try:
        ms = float(values[0])
    except ValueError:
        return DEFAULT_MS
    if ms != ms:  # NaN
        return DEFAULT_MS
    return max(0.0, min(MAX_MS, ms))


def response(status: str, body: bytes, keep_alive: bool, ctype: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                writer.write(response("400 Bad Request", b"bad request line\n", False, "text/plain"))
                await writer.drain()
                return
            method, target, version = parts
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                writer.write(response("411 Length Required", b"send a Content-Length\n", False,
                                      "text/plain"))
                await writer.drain()
                return
            length = int(headers.get("content-length", "0") or "0")
            if length:
                await reader.readexactly(length)  # read and drop the body
            conn = headers.get("connection", "").lower()
            keep_alive = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
            ms = delay_ms(target)
            if ms:
                await asyncio.sleep(ms / 1000)
            body = json.dumps({"revision": REVISION, "pid": os.getpid(), "slept_ms": ms}).encode()
            if method == "HEAD":
                writer.write(response("200 OK", body, keep_alive)[: -len(body)])
            else:
                writer.write(response("200 OK", body, keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


async def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, limit=MAX_HEAD)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"sleepy listening on {port} (revision {REVISION}) at {time.time():.3f}", flush=True)
    await stop.wait()
    server.close()  # no wait_closed(): idle keep-alive connections must not delay the exit


if __name__ == "__main__":
    asyncio.run(main())
