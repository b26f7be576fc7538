"""The controller's end of the dispatcher link: plan versions, the long poll and the dispatcher's acks.

Requests are aiohttp mocked requests handed to `DispatchHub.handle` directly (no sockets); the
clock is fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from controller import dispatchhub
from controller.dispatchhub import SEEN_TIMEOUT_S, DispatchHub
from controller.eventing.plan import PLAN_PATH, ConsumerPlan, DispatchPlan, SqliteLog, dispatcher_id
from controller.reconcilers.conditions import run_by

T0 = 1_700_000_000.0
EMB = "host/embedded"
"""The embedded dispatcher's id (the hub is told it; the dispatcher sends it)."""


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


def request(query: str = "", dispatcher: str = EMB) -> web.Request:
    """A poll of the plan by `dispatcher` (default: the embedded one)."""
    query = "&".join(q for q in (query, f"id={dispatcher}") if q)
    return make_mocked_request("GET", f"{PLAN_PATH}?{query}")


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
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    assert hub.plan == DispatchPlan(version=0)


async def test_publish_versions_start_at_the_clock_in_ms_and_increase() -> None:
    clock = Clock()
    hub = DispatchHub(embedded_id=EMB, clock=clock)
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
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v = hub.publish(DispatchPlan(version=5, triggers=plan("a").triggers))
    assert v >= int(T0 * 1000)


async def test_publish_even_an_empty_plan_gets_a_version() -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v = hub.publish(plan())
    assert v >= int(T0 * 1000)
    assert hub.plan.version == v


async def test_publishing_equal_content_keeps_the_version() -> None:
    clock = Clock()
    hub = DispatchHub(embedded_id=EMB, clock=clock)
    v1 = hub.publish(plan("a", "b"))
    clock.t += 10.0
    assert hub.publish(plan("a", "b")) == v1
    assert hub.plan.version == v1


async def test_clock_going_back_still_increases_versions() -> None:
    clock = Clock()
    hub = DispatchHub(embedded_id=EMB, clock=clock)
    v1 = hub.publish(plan("a"))
    clock.t -= 3600.0
    assert hub.publish(plan("b")) == v1 + 1


# ------------------------------------------------------------------------------------------
# the long poll
# ------------------------------------------------------------------------------------------


async def test_answers_at_once_when_the_dispatcher_has_another_version() -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v = hub.publish(plan("a"))
    for have in ("0", str(v - 1), str(v + 1)):
        task = asyncio.create_task(hub.handle(request(f"version={have}&id=d1")))
        await settle()
        assert task.done(), have
        got = body(task.result())
        assert got.version == v
        assert [t.uid for t in got.triggers] == ["a"]


async def test_no_version_is_version_zero() -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v = hub.publish(plan("a"))
    got = body(await finished(hub.handle(request())))
    assert got.version == v


async def test_long_polls_until_a_new_plan_is_published() -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v1 = hub.publish(plan("a"))
    task = asyncio.create_task(hub.handle(request(f"version={v1}")))
    await settle()
    assert not task.done()
    v2 = hub.publish(plan("a", "b"))
    got = body(await finished(task))
    assert got.version == v2
    assert [t.uid for t in got.triggers] == ["a", "b"]


async def test_equal_publish_does_not_end_the_long_poll() -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
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
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v1 = hub.publish(plan("a"))
    tasks = [asyncio.create_task(hub.handle(request(f"version={v1}&id={i}"))) for i in range(3)]
    await settle()
    assert not any(t.done() for t in tasks)
    v2 = hub.publish(plan("b"))
    results = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert [body(r).version for r in results] == [v2] * 3


async def test_long_poll_times_out_with_the_same_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatchhub, "LONG_POLL_S", 0.05)
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v1 = hub.publish(plan("a"))
    got = body(await finished(hub.handle(request(f"version={v1}"))))
    assert got.version == v1
    assert [t.uid for t in got.triggers] == ["a"]


@pytest.mark.parametrize("version", ["abc", "1.5", ""])
async def test_bad_version_is_400(version: str) -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    hub.publish(plan("a"))
    with pytest.raises(web.HTTPBadRequest) as exc:
        await hub.handle(request(f"version={version}"))
    assert exc.value.status == 400
    assert not hub.connected()


# ------------------------------------------------------------------------------------------
# acks
# ------------------------------------------------------------------------------------------


async def test_not_connected_before_any_request() -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v = hub.publish(plan("a"))
    assert not hub.connected()
    assert not hub.applied(v)
    assert not hub.runs("a")


async def test_request_records_the_dispatchers_version() -> None:
    clock = Clock()
    hub = DispatchHub(embedded_id=EMB, clock=clock)
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
    hub = DispatchHub(embedded_id=EMB, clock=clock)
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
    hub = DispatchHub(embedded_id=EMB, clock=clock, on_progress=lambda: calls.append(1))
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
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    task = asyncio.create_task(hub.handle(request("version=1700000000000")))
    await settle()
    assert not task.done()
    v = hub.publish(plan("a"))
    got = body(await finished(task))
    assert got.version == v and [t.uid for t in got.triggers] == ["a"]


# ------------------------------------------------------------------------------------------
# one record per dispatcher id; the embedded dispatcher alone runs SQLite consumers
# ------------------------------------------------------------------------------------------


def test_a_reconnect_under_the_same_id_replaces_its_record() -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v = hub.publish(plan("a"))
    assert hub.note(EMB, 0, T0)
    assert not hub.note(EMB, 0, T0 + 1)  # the same poll again: nothing changed
    assert hub.note(EMB, v, T0 + 2)  # applied the plan
    assert [(r.id, r.acked, r.seen, r.embedded) for r in hub.dispatchers(T0 + 2)] == [
        (EMB, v, T0 + 2, True)
    ]
    assert hub.runners("a", T0 + 2) == 1


def test_a_dispatcher_silent_past_the_timeout_is_dropped() -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v = hub.publish(plan("a"))
    hub.note(EMB, v, T0)
    hub.note("other/1", v, T0)
    assert [r.id for r in hub.dispatchers(T0 + SEEN_TIMEOUT_S - 1)] == [EMB, "other/1"]
    # the other keeps polling; the embedded one is silent
    assert not hub.note("other/1", v, T0 + SEEN_TIMEOUT_S - 1)
    assert hub.note("other/1", v, T0 + SEEN_TIMEOUT_S)  # drops the silent one: readiness changed
    assert [r.id for r in hub.dispatchers(T0 + SEEN_TIMEOUT_S)] == ["other/1"]
    assert hub.connected(T0 + SEEN_TIMEOUT_S)
    assert not hub.runs("a", T0 + SEEN_TIMEOUT_S)  # only the embedded one could run it
    assert hub.note(EMB, v, T0 + SEEN_TIMEOUT_S + 1)  # back: a new record
    assert hub.runners("a", T0 + SEEN_TIMEOUT_S + 1) == 1


def test_another_dispatchers_ack_does_not_count_for_a_sqlite_consumer() -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v = hub.publish(plan("a"))
    hub.note("elsewhere/abc", v, T0)
    hub.note("", v, T0)  # a poll without an id is not the embedded dispatcher either
    assert hub.applied(v, T0) and hub.connected(T0)
    assert hub.runners("a", T0) == 0 and not hub.runs("a", T0)
    hub.note(EMB, v, T0)
    assert hub.runners("a", T0) == 1


def test_runners_need_the_current_plan_which_has_the_consumer() -> None:
    hub = DispatchHub(embedded_id=EMB, clock=Clock())
    v1 = hub.publish(plan("a"))
    hub.note(EMB, v1, T0)
    assert hub.runners("b", T0) == 0  # not in the plan
    hub.publish(plan("a", "b"))
    assert hub.runners("a", T0) == 0  # the embedded dispatcher runs an older plan
    assert hub.runners("a", T0 + SEEN_TIMEOUT_S) == 0


def test_without_an_embedded_id_no_dispatcher_runs_sqlite_consumers() -> None:
    hub = DispatchHub(clock=Clock())
    v = hub.publish(plan("a"))
    hub.note(EMB, v, T0)
    assert hub.connected(T0) and hub.runners("a", T0) == 0


async def test_the_poll_keys_the_record_by_the_id_it_sends() -> None:
    clock = Clock()
    hub = DispatchHub(embedded_id=EMB, clock=clock)
    hub.publish(plan("a"))
    for who in (EMB, "other/1", EMB):
        await finished(hub.handle(request("version=0", dispatcher=who)))
    assert [r.id for r in hub.dispatchers()] == [EMB, "other/1"]
    v = hub.plan.version
    poll = asyncio.create_task(hub.handle(request(f"version={v}", dispatcher="other/1")))
    await settle()
    assert hub.runners("a") == 0  # other/1 applied it, but it may not run a SQLite consumer
    hub.close()
    await finished(poll)


def test_dispatcher_id_is_stable_per_host_and_state_dir(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    assert dispatcher_id(a, "h1") == dispatcher_id(tmp_path / "a", "h1")
    assert dispatcher_id(a, "h1").startswith("h1/")
    assert dispatcher_id(a, "h1") != dispatcher_id(a, "h2")
    assert dispatcher_id(a, "h1") != dispatcher_id(tmp_path / "b", "h1")


def test_run_by_says_how_many_dispatchers() -> None:
    assert run_by(1) == "run by 1 dispatcher"
    assert run_by(2) == "run by 2 dispatchers"



# ------------------------------------------------------------------------------------------
# a standby controller (not the leader)
# ------------------------------------------------------------------------------------------


async def test_a_standby_answers_503_and_a_lost_term_ends_the_waiting_polls_with_it() -> None:
    leading = [False]
    hub = DispatchHub(embedded_id=EMB, clock=Clock(), accepting=lambda: leading[0])
    v1 = hub.publish(plan("a"))
    resp = await hub.handle(request(f"version={v1}"))
    assert isinstance(resp, web.Response) and resp.status == 503
    assert resp.headers["Retry-After"] == "1" and not hub.connected()  # no ack from a refused poll
    assert isinstance(resp.body, bytes) and b"standby" in resp.body

    leading[0] = True
    task = asyncio.create_task(hub.handle(request(f"version={v1}")))
    await settle()
    assert not task.done()  # the leader holds the long poll
    leading[0] = False  # the term ends
    hub.refuse_all()
    ended = await finished(task)
    assert isinstance(ended, web.Response) and ended.status == 503
