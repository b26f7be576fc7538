"""A fast event subscriber for the eventing benchmark: records each CloudEvent's id and latency.

aiohttp on uvloop, `PORT` from the environment. POST (any path) answers 202 at once and records
the event's `ce-id` with its receive time; when the data is JSON with a send timestamp `t`
(unix seconds) the end-to-end latency is kept too. `GET /stats` returns the counts, the unique
ids seen and the first/last receive times; `GET /ids` the ids; `POST /reset` clears everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time

import uvloop
from aiohttp import web

ids: set[str] = set()
received = [0]
first_last = [0.0, 0.0]
latencies: list[float] = []


async def event(request: web.Request) -> web.Response:
    now = time.time()
    body = await request.read()
    eid = request.headers.get("ce-id", "")
    received[0] += 1
    ids.add(eid)
    if not first_last[0]:
        first_last[0] = now
    first_last[1] = now
    if body[:1] == b"{" and b'"t"' in body[:64]:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            latencies.append(now - float(json.loads(body)["t"]))
    return web.Response(status=202)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "received": received[0],
            "unique": len(ids),
            "first": first_last[0],
            "last": first_last[1],
            "latencies": latencies if request.query.get("latencies") else len(latencies),
        }
    )


async def get_ids(request: web.Request) -> web.Response:
    return web.Response(text="\n".join(sorted(ids)))


async def reset(request: web.Request) -> web.Response:
    ids.clear()
    latencies.clear()
    received[0] = 0
    first_last[:] = [0.0, 0.0]
    return web.Response(status=204)


async def main() -> None:
    app = web.Application(client_max_size=8 << 20)
    app.router.add_get("/stats", stats)
    app.router.add_get("/ids", get_ids)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", event)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(os.environ["PORT"]), backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("eventsink ready", flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(main())
