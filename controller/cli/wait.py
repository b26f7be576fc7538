"""`--wait`: follow an object until the written generation is Ready, failed or timed out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from controller.cli.client import ApiClient, ApiError, CliError
from controller.cli.kinds import ResourceInfo
from controller.cli.output import condition, conditions, meta, status

Obj = dict[str, Any]
POLL_INTERVAL_S = 0.25
"""How often the object is re-read while waiting (seconds)."""
DEFAULT_TIMEOUT_S = 600.0
"""kn's default `--wait-timeout` (seconds)."""
DEFAULT_WINDOW_S = 2.0
"""kn's `--wait-window`: how long Ready=False must last before it counts as failure (seconds)."""


@dataclass(frozen=True)
class Verdict:
    state: Literal["pending", "ready", "failed"]
    reason: str = ""
    message: str = ""


def observed(obj: Obj, generation: int) -> bool:
    """Whether the controller has seen at least `generation` of the object."""
    return int(status(obj).get("observedGeneration") or 0) >= generation


def assess(obj: Obj, generation: int) -> Verdict:
    """Ready only when the written generation was observed, Ready is True and (for kinds
    with revisions) the latest created revision is the latest ready one; failed when Ready
    is False for that generation; pending otherwise (an old Ready state does not count)."""
    if not observed(obj, generation):
        return Verdict("pending")
    ready = condition(obj, "Ready")
    if ready is None:
        return Verdict("pending")
    st = status(obj)
    if ready.get("status") == "True":
        created, latest = st.get("latestCreatedRevisionName"), st.get("latestReadyRevisionName")
        if created and created != latest:
            return Verdict("pending")
        return Verdict("ready")
    if ready.get("status") == "False":
        return Verdict("failed", str(ready.get("reason") or ""), str(ready.get("message") or ""))
    return Verdict("pending")


def progress_messages(obj: Obj, generation: int) -> list[str]:
    """The messages of the not-yet-True conditions of the written generation, Ready last."""
    if not observed(obj, generation):
        return []
    cs = sorted(conditions(obj), key=lambda c: c.get("type") == "Ready")
    return [str(c["message"]) for c in cs if c.get("status") != "True" and c.get("message")]


def failure_text(kind: str, name: str, verdict: Verdict) -> str:
    detail = ": ".join(p for p in (verdict.reason, verdict.message) if p)
    return f"{kind} '{name}' failed to become ready: {detail or 'Ready is False'}"


async def wait_ready(
    api: ApiClient,
    info: ResourceInfo,
    namespace: str,
    name: str,
    generation: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    window_s: float = DEFAULT_WINDOW_S,
    echo: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    interval: float = POLL_INTERVAL_S,
) -> Obj:
    """Poll the object, echoing each new condition message with the elapsed time; return it
    when Ready. Ready=False lasting `window_s` seconds or the timeout raise CliError."""
    start = clock()
    seen: set[str] = set()
    failing_since: float | None = None
    while True:
        try:
            obj = await api.get(info, namespace, name)
        except ApiError as e:
            if e.code_http == 404:
                raise CliError(f"{info.kind} '{name}' was deleted while waiting for it") from None
            raise
        elapsed = clock() - start
        for message in progress_messages(obj, generation):
            if message not in seen:
                seen.add(message)
                echo(f"{elapsed:7.3f}s {message}")
        verdict = assess(obj, generation)
        if verdict.state == "ready":
            echo(f"{elapsed:7.3f}s Ready to serve.")
            return obj
        if verdict.state == "failed":
            failing_since = elapsed if failing_since is None else failing_since
            if elapsed - failing_since >= window_s:
                raise CliError(failure_text(info.kind, name, verdict))
        else:
            failing_since = None
        if elapsed >= timeout_s:
            raise CliError(
                f"timeout: {info.kind.lower()} '{name}' not ready after {timeout_s:g} seconds"
            )
        await asyncio.sleep(interval)


def generation_of(obj: Obj) -> int:
    return int(meta(obj).get("generation") or 1)
