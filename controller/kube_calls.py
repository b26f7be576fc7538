"""One kubernetes-asyncio call as (HTTP status, JSON body), for the controller's parts that make
their own objects (the leader's EndpointSlice, the cluster certificates): they decide on the
status, so errors come back as statuses, never as exceptions."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client

Obj = dict[str, Any]


async def call(method: Any, *args: Any, timeout_s: float, event: str,
               log: logging.Logger) -> tuple[int, Obj]:
    """(HTTP status, JSON body) of `method(*args)`; 0 when the API server did not answer within
    `timeout_s` (logged as `event=<event>` with the error's type)."""
    try:
        async with asyncio.timeout(timeout_s):
            response = await method(*args, _preload_content=False)
            try:
                data = await response.read()
            finally:
                response.release()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("event=%s error=%s", event, type(exc).__name__)
        return 0, {}
    except client.ApiException as exc:  # kubernetes-asyncio raises on errors even unloaded
        return int(exc.status or 0), {}
    try:
        body = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        body = {}
    return response.status, body if isinstance(body, dict) else {}
