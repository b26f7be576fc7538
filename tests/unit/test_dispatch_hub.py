"""The controller's end of the dispatcher link: plan versions, the long poll and the dispatcher's acks.

Requests are aiohttp mocked requests handed to `DispatchHub.handle` directly (no sockets); the
clock is fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from controller import dispatchhub
from controller.dispatchhub import SEEN_TIMEOUT_S, DispatchHub
from controller.eventing.plan import PLAN_PATH, ConsumerPlan, DispatchPlan, SqliteLog

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tplan(uid: str, name: str = "t") -> ConsumerPlan:
    return ConsumerPlan(
        uid=uid,
        namespace="ns",
        name=name,
        broker="default",
        log_uid="b1",
        log=SqliteLog("eventing/logs/b1.db"),
        subscriber="http://sub.ns.localhost",
        reply="http://broker-ingress.localhost/ns/default",
        filter_attributes=None,
        filters=None,
        delivery={"retry": 1},
        dead_letter_uri=None,
        ordered=False,
    )


def plan(*uids: str) -> DispatchPlan:
    return DispatchPlan(version=0, triggers=tuple(tplan(u, f"t-{u}") for u in uids))


def request(query: str = "") -> web.Request:
    return make_mocked_request("GET", PLAN_PATH + (f"?{query}" if query else ""))


def body(resp: web.StreamResponse) -> DispatchPlan:
    assert isinstance(resp, web.Response)
    assert resp.content_type == "application/json"
    assert isinstance(resp.body, bytes)
    return DispatchPlan.from_wire(orjson.loads(resp.body))


async def settle(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def finished(task: Awaitable[web.StreamResponse]) -> web.StreamResponse:
    return await asyncio.wait_for(task, 1.0)


# ------------------------------------------------------------------------------------------
# publishing
# ------------------------------------------------------------------------------------------


async def test_initial_plan_is_empty_version_zero() -> None:
    hub = DispatchHub(clock=Clock())
    assert hub.plan == DispatchPlan(version=0)


async def test_publish_versions_start_at_the_clock_in_ms_and_increase() -> None:
    clock = Clock()
    hub = DispatchHub(clock=clock)
    v1 = hub.publish(plan("a"))
    assert v1 >= int(T0 * 1000)
    assert hub.plan.version == v1
    assert hub.plan.triggers == plan("a").triggers
    v2 = hub.publish(plan("a", "b"))  # same clock: still newer
    assert v2 > v1
    clock.t += 5.0
    v3 = hub.publish(plan("b"))
    assert v3 > v2
    assert v3 >= int(clock.t * 1000)
    assert hub.plan.version == v3


async def test_publish_ignores_the_version_of_the_given_plan() -> None:
    hub = DispatchHub(clock=Clock())
    v = hub.publish(DispatchPlan(version=5, triggers=plan("a").triggers))
    assert v >= int(T0 * 1000)


async def test_publish_even_an_empty_plan_gets_a_version() -> None:
    hub = DispatchHub(clock=Clock())
    v = hub.publish(plan())
    assert v >= int(T0 * 1000)
    assert hub.plan.version == v


async def test_publishing_equal_content_keeps_the_version() -> None:
    clock = Clock()
    hub = DispatchHub(clock=clock)
    v1 = hub.publish(plan("a", "b"))
    clock.t += 10.0
    assert hub.publish(plan("a", "b")) == v1
    assert hub.plan.version == v1


async def test_clock_going_back_still_increases_versions() -> None:
    clock = Clock()
    hub = DispatchHub(clock=clock)
    v1 = hub.publish(plan("a"))
    clock.t -= 3600.0
    assert hub.publish(plan("b")) == v1 + 1


# ------------------------------------------------------------------------------------------
# the long poll
# ------------------------------------------------------------------------------------------


async def test_answers_at_once_when_the_dispatcher_has_another_version() -> None:
    hub = DispatchHub(clock=Clock())
    v = hub.publish(plan("a"))
    for have in ("0", str(v - 1), str(v + 1)):
        task = asyncio.create_task(hub.handle(request(f"version={have}&id=d1")))
        await settle()
        assert task.done(), have
        got = body(task.result())
        assert got.version == v
        assert [t.uid for t in got.triggers] == ["a"]


async def test_no_version_is_version_zero() -> None:
    hub = DispatchHub(clock=Clock())
    v = hub.publish(plan("a"))
    got = body(await finished(hub.handle(request())))
    assert got.version == v


async def test_long_polls_until_a_new_plan_is_published() -> None:
    hub = DispatchHub(clock=Clock())
    v1 = hub.publish(plan("a"))
    task = asyncio.create_task(hub.handle(request(f"version={v1}")))
    await settle()
    assert not task.done()
    v2 = hub.publish(plan("a", "b"))
    got = body(await finished(task))
    assert got.version == v2
    assert [t.uid for t in got.triggers] == ["a", "b"]


async def test_equal_publish_does_not_end_the_long_poll() -> None:
    hub = DispatchHub(clock=Clock())
    v1 = hub.publish(plan("a"))
    task = asyncio.create_task(hub.handle(request(f"version={v1}")))
    await settle()
    hub.publish(plan("a"))
    await settle()
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_several_pollers_all_get_the_new_plan() -> None:
    hub = DispatchHub(clock=Clock())
    v1 = hub.publish(plan("a"))
    tasks = [asyncio.create_task(hub.handle(request(f"version={v1}&id={i}"))) for i in range(3)]
    await settle()
    assert not any(t.done() for t in tasks)
    v2 = hub.publish(plan("b"))
    results = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert [body(r).version for r in results] == [v2] * 3


async def test_long_poll_times_out_with_the_same_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatchhub, "LONG_POLL_S", 0.05)
    hub = DispatchHub(clock=Clock())
    v1 = hub.publish(plan("a"))
    got = body(await finished(hub.handle(request(f"version={v1}"))))
    assert got.version == v1
    assert [t.uid for t in got.triggers] == ["a"]


@pytest.mark.parametrize("version", ["abc", "1.5", ""])
async def test_bad_version_is_400(version: str) -> None:
    hub = DispatchHub(clock=Clock())
    hub.publish(plan("a"))
    with pytest.raises(web.HTTPBadRequest) as exc:
        await hub.handle(request(f"version={version}"))
    assert exc.value.status == 400
    assert not hub.connected()


# ------------------------------------------------------------------------------------------
# acks
# ------------------------------------------------------------------------------------------


async def test_not_connected_before_any_request() -> None:
    hub = DispatchHub(clock=Clock())
    v = hub.publish(plan("a"))
    assert not hub.connected()
    assert not hub.applied(v)
    assert not hub.runs("a")


async def test_request_records_the_dispatchers_version() -> None:
    clock = Clock()
    hub = DispatchHub(clock=clock)
    v1 = hub.publish(plan("a"))
    # The dispatcher still runs the empty plan: answered at once with v1, nothing applied yet.
    await finished(hub.handle(request("version=0")))
    assert hub.connected()
    assert not hub.applied(v1)
    assert hub.applied(0)
    assert not hub.runs("a")
    # It applied v1 and polls again: that is the ack.
    task = asyncio.create_task(hub.handle(request(f"version={v1}")))
    await settle()
    assert hub.applied(v1)
    assert hub.runs("a")
    assert not hub.runs("b")
    # A new plan: not applied until the dispatcher says so.
    v2 = hub.publish(plan("a", "b"))
    await finished(task)
    assert not hub.applied(v2)
    assert not hub.runs("a")
    assert not hub.runs("b")
    poll = asyncio.create_task(hub.handle(request(f"version={v2}")))
    await settle()
    assert hub.applied(v2)
    assert hub.applied(v1)
    assert hub.runs("b")
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll


async def test_disconnected_after_the_seen_timeout() -> None:
    clock = Clock()
    hub = DispatchHub(clock=clock)
    v = hub.publish(plan("a"))
    poll = asyncio.create_task(hub.handle(request(f"version={v}")))
    await settle()
    assert hub.connected()
    assert hub.runs("a")
    clock.t += SEEN_TIMEOUT_S - 1
    assert hub.connected()
    clock.t += 2
    assert not hub.connected()
    assert not hub.applied(v)
    assert not hub.runs("a")
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll


async def test_on_progress_is_called_on_connect_and_on_a_newer_ack() -> None:
    calls: list[int] = []
    clock = Clock()
    hub = DispatchHub(clock=clock, on_progress=lambda: calls.append(1))
    v1 = hub.publish(plan("a"))
    await finished(hub.handle(request("version=0")))  # connects
    assert len(calls) == 1
    await finished(hub.handle(request("version=1")))  # a newer version than acked
    assert len(calls) == 2
    await finished(hub.handle(request("version=1")))  # nothing new
    assert len(calls) == 2
    task = asyncio.create_task(hub.handle(request(f"version={v1}")))
    await settle()
    assert len(calls) == 3
    clock.t += SEEN_TIMEOUT_S + 1  # silent too long: the next request is a reconnect
    hub.publish(plan("b"))
    await finished(task)
    assert len(calls) == 4


async def test_a_fresh_controller_never_hands_out_its_empty_unpublished_plan() -> None:
    # A dispatcher that ran a plan of the previous controller must not be told "no triggers".
    hub = DispatchHub(clock=Clock())
    task = asyncio.create_task(hub.handle(request("version=1700000000000")))
    await settle()
    assert not task.done()
    v = hub.publish(plan("a"))
    got = body(await finished(task))
    assert got.version == v and [t.uid for t in got.triggers] == ["a"]
