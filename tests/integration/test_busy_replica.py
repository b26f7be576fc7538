"""A burst at one warm replica of a thread-per-request app with a listen backlog of 5 (issue 10 §2).

The app (`tests/apps/backlog5`) speaks HTTP/1.0, so each request is a fresh connection, and its
accept queue holds 6: a burst of 1,000 overflows it at once. Without the gateway's connect cap,
accept-stall timeout and learned per-replica limits most of the burst was answered 502 after
about 100 s; every request must now be answered 200, with `containerConcurrency: 0`, with one
gateway worker and with two (whose limits are learned apart).
"""

from __future__ import annotations

import asyncio
import collections
import re
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest
from support.harness import APPS, Flint, fetch, poll, start_flint, stop_flint

BURST = 1000
BODY = b"0123456789" * 100  # posted by every other request: sent again if a replica drops it


@pytest.fixture(scope="module", params=[1, 2], ids=["workers1", "workers2"])
def flint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flint]:
    workers = int(request.param)
    f = start_flint(tmp_path_factory.mktemp(f"busy{workers}"), workers=workers)
    try:
        yield f
    finally:
        stop_flint(f)


async def _burst(port: int, host: str, n: int) -> collections.Counter[str]:
    """`n` requests at once, each on its own connection; outcome → count."""
    out: collections.Counter[str] = collections.Counter()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:

        async def one(i: int) -> None:
            url = f"http://127.0.0.1:{port}/?i={i}"
            try:
                if i % 2:
                    async with s.post(url, data=BODY, headers={"Host": host}) as r:
                        text = await r.text()
                        ok = r.status == 200 and text == f"got {len(BODY)} bytes ending 23456789\n"
                else:
                    async with s.get(url, headers={"Host": host}) as r:
                        text = await r.text()
                        ok = r.status == 200 and text == "ok\n"
                out["200" if ok else f"{r.status} {text[:100]!r}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                out[type(exc).__name__] += 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return out


def _metric(f: Flint, pattern: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{f.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(pattern + r" ([0-9.e+]+)$", text, re.M))


def test_a_burst_at_one_warm_replica_with_a_backlog_of_5_is_answered_200(flint: Flint) -> None:
    flint.cli("service", "create", "thready", "--image", str(APPS / "backlog5"))
    host = flint.host("thready")
    poll(lambda: asyncio.run(fetch(flint.port, host))[0] == 200, 60, "the warm replica")
    ready = [r for r in flint.replica_records() if r["revision_key"] == "default/thready-00001"]
    assert len(ready) == 1  # one warm replica takes the burst

    outcomes = asyncio.run(_burst(flint.port, host, BURST))

    assert outcomes == {"200": BURST}
    # The burst did overflow the backlog: the gateway learned a limit (and says so).
    lowered = _metric(flint, r'flint_gateway_learned_limit_changes_total\{direction="lowered",'
                             r'revision="default/thready-00001"\}')
    assert lowered >= 1
    assert _metric(flint, r"flint_gateway_upstream_requeues_total") >= 1

    def described() -> bool:
        text = flint.cli("describe", "rev", "thready-00001").stdout
        line = next((x for x in text.splitlines() if "Learned limit:" in x), "")
        return ("lowered" in line and "in flight per replica" in line) or "none now" in line

    poll(described, 30, "`flint describe revision` to show the learned limit")
