"""`GET /internal/logs/{namespace}/{service}`: a service's replica logs, tailed and optionally followed."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

from aiohttp import web

from controller.informer import Informer
from controller.runtime.base import Runtime

FOLLOW_POLL_S = 0.2
"""How often followed log files are checked for new lines (seconds)."""


def _tail(path: Path, lines: int) -> tuple[list[str], int]:
    """The last `lines` lines of a file and the offset after them (blocking: run in a thread)."""
    try:
        with path.open("rb") as f:
            last: deque[bytes] = deque(f, maxlen=lines) if lines > 0 else deque()
            f.seek(0, 2)
            return [b.decode("utf-8", "replace").rstrip("\n") for b in last], f.tell()
    except FileNotFoundError:
        return [], 0


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
            return data, offset + len(data)
    except FileNotFoundError:
        return b"", offset


def add_log_routes(app: web.Application, runtime: Runtime, revisions: Informer) -> None:
    async def logs(request: web.Request) -> web.StreamResponse:
        ns = request.match_info["namespace"]
        service = request.match_info["service"]
        follow = request.query.get("follow", "").lower() in ("1", "true", "yes")
        tail = int(request.query.get("tail", "100"))
        keys = [
            f"{ns}/{r['metadata']['name']}"
            for r in revisions.list(ns)
            if (r["metadata"].get("labels") or {}).get("serving.knative.dev/service") == service
        ]
        if not keys:
            raise web.HTTPNotFound(text=f'no revisions of service "{ns}/{service}"\n')
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        offsets: dict[Path, int] = {}
        backlog: list[str] = []
        for key in keys:
            for path in await runtime.alog_paths(key):
                lines, offsets[path] = await asyncio.to_thread(_tail, path, tail)
                prefix = f"[{key.split('/', 1)[1]}/{path.stem}] "
                backlog += [prefix + ln + "\n" for ln in lines]
        if tail > 0 and backlog:  # `tail` lines in all, the newest files' last
            await resp.write("".join(backlog[-tail:]).encode())
        while follow:
            await asyncio.sleep(FOLLOW_POLL_S)
            for key in keys:
                for path in await runtime.alog_paths(key):
                    data, offsets[path] = await asyncio.to_thread(
                        _read_from, path, offsets.get(path, 0)
                    )
                    if data:
                        tag = f"[{key.split('/', 1)[1]}/{path.stem}] ".encode()
                        await resp.write(b"".join(tag + ln for ln in data.splitlines(True)))
        await resp.write_eof()
        return resp

    app.router.add_get("/internal/logs/{namespace}/{service}", logs)
