"""Leader election on a Lease (`controller.leader`): one leader at a time, a released Lease taken
at once, a dead leader's taken after the lease duration, a lost Lease given up and campaigned for
again. Against the contract fake (or a cluster: FLINT_KUBECONFIG), with the shortest timings the
library allows with two leaders never overlapping (lease 5 s, renew deadline 2 s, retry 1 s)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from support.kubeapi.session import KubeTarget, eventually

from controller.leader import LeaderElector, LeaderSettings

FAST: dict[str, Any] = {"lease_duration_s": 5, "renew_deadline_s": 2.0, "retry_period_s": 1.0}
DEADLINE_S = 20.0


class Candidate:
    """An elector whose `lead` records that it runs, and whether it was cancelled."""

    def __init__(self, kube: KubeTarget, name: str) -> None:
        self.running = False
        self.cancelled = 0
        self.changes: list[bool] = []
        self.elector = LeaderElector(
            kube.api, LeaderSettings(lease="flint-controller", namespace=kube.namespace,
                                     identity=name, **FAST),
            self.lead, changed=self.changes.append)

    async def lead(self) -> None:
        self.running = True
        try:
            await asyncio.Event().wait()  # leads until cancelled
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running = False


@pytest.fixture
async def pair(kube: KubeTarget) -> AsyncIterator[tuple[Candidate, Candidate]]:
    a, b = Candidate(kube, "a"), Candidate(kube, "b")
    try:
        yield a, b
    finally:
        await a.elector.close()
        await b.elector.close()


def leases(kube: KubeTarget) -> Any:
    return client.CoordinationV1Api(kube.api)


async def holder(kube: KubeTarget) -> str | None:
    try:
        lease = await leases(kube).read_namespaced_lease("flint-controller", kube.namespace)
    except client.ApiException:
        return None
    return lease.spec.holder_identity  # type: ignore[no-any-return]


async def one_leader(a: Candidate, b: Candidate) -> Candidate:
    async def who() -> list[Candidate]:
        return [c for c in (a, b) if c.elector.leading]

    leaders = await eventually(who, lambda got: len(got) == 1, DEADLINE_S, "one leader")
    return leaders[0]


def test_timings_are_checked() -> None:
    with pytest.raises(ValueError, match="renew_deadline_s"):
        LeaderSettings(lease_duration_s=10, renew_deadline_s=10)
    with pytest.raises(ValueError, match=r"1\.2"):
        LeaderSettings(lease_duration_s=10, renew_deadline_s=2, retry_period_s=2)
    with pytest.raises(ValueError, match="at least 1 s"):
        LeaderSettings(retry_period_s=0.5)
    with pytest.raises(ValueError, match="whole seconds"):
        LeaderSettings(lease_duration_s=15.5)  # type: ignore[arg-type]


async def test_one_leader_runs_and_holds_the_lease(
        kube: KubeTarget, pair: tuple[Candidate, Candidate]) -> None:
    a, b = pair
    a.elector.start()
    b.elector.start()
    leader = await one_leader(a, b)
    standby = b if leader is a else a
    assert leader.running and not standby.running
    assert await holder(kube) == leader.elector.identity
    # Renewals go on: still exactly one leader a few retry periods later.
    await eventually(lambda: holder(kube), lambda h: h == leader.elector.identity, 1.0)
    assert leader.elector.leading and not standby.elector.leading and leader.elector.terms == 1


async def test_a_released_lease_is_taken_at_once(kube: KubeTarget, pair: tuple[Candidate, Candidate]) -> None:
    a, b = pair
    a.elector.start()
    await eventually(lambda: holder(kube), lambda h: h == "a", DEADLINE_S, "a leads")
    b.elector.start()
    await a.elector.close()  # SIGTERM: a gives the Lease up
    assert not a.running and a.cancelled == 1 and a.changes == [True, False]
    released = await leases(kube).read_namespaced_lease("flint-controller", kube.namespace)
    assert released.spec.holder_identity in (None, "b")
    # b takes it within a retry period or two, not a lease duration after a's last renewal.
    await eventually(lambda: holder(kube), lambda h: h == "b", 2 * FAST["retry_period_s"] + 1.5,
                     "b takes the released lease")
    await eventually(_running(b), bool, DEADLINE_S, "b leads")


async def test_a_dead_leader_s_lease_is_taken_after_it_expires(
        kube: KubeTarget, pair: tuple[Candidate, Candidate]) -> None:
    a, b = pair
    a.elector.start()
    await eventually(lambda: holder(kube), lambda h: h == "a", DEADLINE_S, "a leads")
    b.elector.start()
    # a dies without releasing (SIGKILL): its campaign stops, the Lease still names it.
    assert a.elector._task is not None
    a.elector._task.cancel()
    await asyncio.gather(a.elector._task, return_exceptions=True)
    a.elector._task = None
    assert await holder(kube) == "a"
    await eventually(lambda: holder(kube), lambda h: h == "b", DEADLINE_S, "b takes the expired lease")
    await eventually(_running(b), bool, DEADLINE_S, "b leads")


async def test_a_leader_that_loses_the_lease_stops_leading_and_campaigns_again(
        kube: KubeTarget, pair: tuple[Candidate, Candidate]) -> None:
    a, _ = pair
    a.elector.start()
    await eventually(_running(a), bool, DEADLINE_S, "a leads")
    # Someone else takes the Lease over (a partition healed the other way) and keeps renewing.
    intruder = Candidate(kube, "intruder")
    api = leases(kube)

    async def overwrite() -> None:
        lease = await api.read_namespaced_lease("flint-controller", kube.namespace)
        lease.spec.holder_identity = "intruder"
        lease.spec.renew_time = lease.spec.renew_time  # unchanged: only the holder moves
        await api.replace_namespaced_lease("flint-controller", kube.namespace, lease)

    async def renewing() -> None:
        while True:
            with contextlib.suppress(client.ApiException):  # a's renewal won: again
                await overwrite()
            await asyncio.sleep(0.2)

    stealer = asyncio.create_task(renewing())
    try:
        await eventually(_not_running(a), bool, DEADLINE_S, "a gives up leading")
        assert a.cancelled == 1 and not a.elector.leading
    finally:
        stealer.cancel()
        await asyncio.gather(stealer, return_exceptions=True)
        await intruder.elector.close()
    # The intruder stopped renewing: a, still campaigning, leads again.
    await eventually(_running(a), bool, DEADLINE_S, "a leads again")
    assert a.elector.terms == 2 and a.changes == [True, False, True]


def _running(c: Candidate) -> Any:
    async def probe() -> bool:
        return c.running and c.elector.leading

    return probe


def _not_running(c: Candidate) -> Any:
    async def probe() -> bool:
        return not c.running and not c.elector.leading

    return probe


class FreezableProxy:
    """A TCP relay on loopback to the API server that can go silent (a dead node, no reset): the
    bytes stop flowing both ways while the connections stay open."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for t in (asyncio.create_task(pump(reader, up_writer)), asyncio.create_task(pump(up_reader, writer))):
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        self.flowing.set()
        if self.server is not None:
            self.server.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.mark.fake_only
async def test_a_leader_whose_api_server_goes_silent_stops_before_a_standby_takes_over(
        kube: KubeTarget) -> None:
    assert kube.fake is not None
    proxy = FreezableProxy(int(kube.fake.url.rsplit(":", 1)[1]))
    configuration = client.Configuration()
    configuration.host = await proxy.start()
    api_a = client.ApiClient(configuration)
    a, b = Candidate(kube, "a"), Candidate(kube, "b")
    a.elector = LeaderElector(api_a, a.elector.settings, a.lead, changed=a.changes.append)
    try:
        a.elector.start()
        await eventually(_running(a), bool, DEADLINE_S, "a leads")
        b.elector.start()
        proxy.flowing.clear()  # a's requests hang from now on; kubernetes-asyncio sets no timeout
        leading_both: list[bool] = []

        async def b_leads() -> bool:
            leading_both.append(a.elector.leading and b.elector.leading)
            return b.elector.leading

        await eventually(b_leads, bool, DEADLINE_S, "b takes the Lease a no longer renews")
        assert not a.running and not any(leading_both), "a still led while b did"
    finally:
        await a.elector.close()
        await b.elector.close()
        await proxy.stop()
        await api_a.close()


async def test_a_lead_that_fails_gives_the_lease_up(kube: KubeTarget) -> None:
    failures: list[int] = []

    async def failing() -> None:
        failures.append(1)
        if len(failures) == 1:
            raise RuntimeError("the reconcilers could not start")
        await asyncio.Event().wait()

    a = LeaderElector(kube.api, LeaderSettings(lease="flint-controller", namespace=kube.namespace,
                                               identity="a", **FAST), failing)
    b = Candidate(kube, "b")
    try:
        a.start()
        await eventually(lambda: holder(kube), lambda h: h == "a", DEADLINE_S, "a leads")
        b.elector.start()
        # a's lead failed at once: it released the Lease, which one of them takes again at once.
        await eventually(lambda: _value(len(failures) >= 2 or b.running), bool, DEADLINE_S,
                         "a campaigned again or b took over")
        assert failures[0] == 1 and (b.running or a.leading)
    finally:
        await a.close()
        await b.elector.close()


async def _value(v: bool) -> bool:
    return v
