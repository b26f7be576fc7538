"""Eventing on the Kubernetes engine end to end: a Broker of class `Flint` (so Redis, the engine's
default backend) and a Trigger whose subscriber is a Knative Service running the event sink as a
pod of the kubelet stand-in. The controller (`engine="kubernetes"`, in this process) keeps its
objects in the contract fake; a real gateway process appends the broker's ingress to a Redis
stream (XADD) and two dispatcher processes deliver from the Trigger's consumer group, posting
through the gateway (the subscriber's URL is of the route domain). One dispatcher is SIGKILLed
mid-stream: the other takes over its pending entries (short claim settings), nothing is lost."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.kube_engine import DispatcherProcess, GatewayProcess, Process, running_engine
from support.kubeapi.session import KubeTarget, eventually
from support.kubelet import Kubelet
from support.redis_server import RedisServer, start_redis, stop_redis

from controller.api.registry import admit, registry_for
from controller.app import Controller
from controller.eventing.plan import dispatcher_id
from controller.reconcilers.conditions import run_by
from controller.reconcilers.context import BROKERS, SERVICES, TRIGGERS
from controller.store.base import NotFound, Store
from flint_common import redis_conn
from flint_common.redis_config import RedisSettings
from flint_common.redis_keys import stream_key

pytestmark = [pytest.mark.fake_only, pytest.mark.timeout(240)]

DEADLINE_S = 60.0
EVENTS = 200
REDIS_ARGS = ("--redis-lease-s", "2", "--redis-claim-after-s", "1.5", "--redis-claim-heartbeat-s", "0.3")
"""A dead dispatcher's entries are taken over after 1.5 s without its heartbeat (default 30 s)."""
INGRESS_HOST = "broker-ingress.localhost"


@dataclass
class Engine:
    """What a test drives: the controller and its store, the processes, the stand-in, Redis."""

    controller: Controller
    store: Store
    gateway: GatewayProcess
    dispatchers: list[DispatcherProcess]
    kubelet: Kubelet
    redis: RedisServer


@pytest.fixture
async def engine(kube: KubeTarget, tmp_path: Path) -> AsyncIterator[Engine]:
    redis = await asyncio.to_thread(start_redis, tmp_path / "redis")
    redis_env = RedisSettings(url=redis.url).env()
    procs: list[Process] = []
    try:
        async with running_engine(kube, tmp_path, redis=RedisSettings(url=redis.url)) as (
                controller, settings, kubelet):
            assert controller._store is not None
            token = settings.state_dir / "auth" / "token"
            urls = [f"http://127.0.0.1:{settings.api_port}"]
            gateway = GatewayProcess(urls, token, tmp_path / "gateway", settings.gateway_port, env=redis_env)
            procs.append(gateway)
            dispatchers = [DispatcherProcess(urls, token, tmp_path / f"dispatcher-{k}", settings.gateway_port,
                                             REDIS_ARGS, redis_env) for k in range(2)]
            procs.extend(dispatchers)
            try:
                yield Engine(controller, controller._store, gateway, dispatchers, kubelet, redis)
            finally:
                for p in procs:
                    await p.stop()
    finally:
        await asyncio.to_thread(stop_redis, redis)
    for pid in [*(p.proc.pid for p in procs), redis.proc.pid]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def admitted(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    made, _ = admit(registry_for("kubernetes").lookup(kind), obj)
    return made


async def condition(store: Store, kind: Any, namespace: str, name: str, type_: str) -> dict[str, Any]:
    try:
        obj = await store.get(kind, namespace, name)
    except NotFound:
        return {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def sink_records(sink_file: Path) -> list[dict[str, Any]]:
    """What the sink recorded of each request it accepted (headers, body), in arrival order."""
    if not sink_file.exists():
        return []
    records = []
    for line in sink_file.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return records


def sink_ids(sink_file: Path) -> list[str]:
    """The ce-id of every event the sink recorded (a redelivery shows twice)."""
    return [str(r["headers"].get("ce-id", "")) for r in sink_records(sink_file)]


def delivered(dispatcher: DispatcherProcess) -> float:
    """`flint_dispatcher_events_delivered_total` of a dispatcher, all its samples summed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{dispatcher.admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    name = "flint_dispatcher_events_delivered_total"
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


async def post_event(http: aiohttp.ClientSession, port: int, namespace: str, event_id: str) -> int:
    """POST one CloudEvent to the broker ingress through the gateway: binary mode for even
    numbers, structured for odd; its answer status (0: no answer)."""
    url = f"http://127.0.0.1:{port}/{namespace}/default"
    attrs = {"specversion": "1.0", "id": event_id, "source": "/tests/kube", "type": "test.kube"}
    if int(event_id.rsplit("-", 1)[1]) % 2 == 0:
        headers = {"Host": INGRESS_HOST, "Content-Type": "application/json",
                   **{f"ce-{k}": v for k, v in attrs.items()}}
        body = b'{"n": 1}'
    else:
        headers = {"Host": INGRESS_HOST, "Content-Type": "application/cloudevents+json"}
        body = json.dumps({**attrs, "datacontenttype": "application/json", "data": {"n": 1}}).encode()
    try:
        async with http.post(url, data=body, headers=headers,
                             timeout=aiohttp.ClientTimeout(total=10)) as r:
            await r.read()
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def send(port: int, namespace: str, ids: list[str]) -> dict[str, int]:
    """Each id's answer, 16 at a time; those not accepted are sent again (bounded)."""
    status: dict[str, int] = {}
    gate = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as http:
        async def one(event_id: str) -> None:
            async with gate:
                for _ in range(20):
                    status[event_id] = await post_event(http, port, namespace, event_id)
                    if status[event_id] == 202:
                        return
                    await asyncio.sleep(0.1)  # the gateway not linked or Redis busy: again
        await asyncio.gather(*(one(i) for i in ids))
    return status


async def test_broker_to_trigger_through_redis_to_a_pod_with_a_dispatcher_killed_mid_stream(
        kube: KubeTarget, engine: Engine, tmp_path: Path) -> None:
    ns, store = kube.namespace, engine.store
    sink_file = tmp_path / "sink.jsonl"
    await store.create(SERVICES, admitted("ksvc", {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "sink", "namespace": ns},
        "spec": {"template": {"spec": {"containers": [{
            "image": "flint.test/apps/eventsink",
            "env": [{"name": "SINK_FILE", "value": str(sink_file)},
                    {"name": "DELAY_S", "value": "0.1"}]}]}}}}))  # deliveries stay in flight
    await store.create(BROKERS, admitted("broker", {
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
        "metadata": {"name": "default", "namespace": ns,
                     "annotations": {"eventing.knative.dev/broker.class": "Flint"}}}))
    await store.create(TRIGGERS, admitted("trigger", {
        "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": {"name": "to-sink", "namespace": ns},
        "spec": {"broker": "default", "subscriber": {"ref": {
            "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "sink"}}}}))

    async def broker_backend() -> tuple[str, str]:
        b = await store.get(BROKERS, ns, "default")
        ready = await condition(store, BROKERS, ns, "default", "Ready")
        return (str(((b.get("status") or {}).get("annotations") or {}).get("eventing.flint.dev/backend")),
                str(ready.get("status")))

    await eventually(broker_backend, lambda b: b == ("redis", "True"), DEADLINE_S,
                     "the broker Ready on Redis")

    async def trigger_state() -> tuple[Any, Any, Any]:
        ready = await condition(store, TRIGGERS, ns, "to-sink", "Ready")
        sub = await condition(store, TRIGGERS, ns, "to-sink", "SubscriptionReady")
        t = await store.get(TRIGGERS, ns, "to-sink")
        return ready.get("status"), sub.get("message"), (t.get("status") or {}).get("subscriberUri")

    state = await eventually(trigger_state, lambda s: s[0] == "True" and s[1] == run_by(2), DEADLINE_S,
                             "the trigger Ready and run by both dispatchers")
    assert state[2] == f"http://sink.{ns}.localhost:{engine.gateway.port}", state

    ids = [f"e-{k}" for k in range(EVENTS)]
    first, rest = ids[:EVENTS // 2], ids[EVENTS // 2:]
    status = await send(engine.gateway.port, ns, first)
    assert all(s == 202 for s in status.values()), {i: s for i, s in status.items() if s != 202}
    await eventually(lambda: asyncio.to_thread(lambda: [delivered(d) for d in engine.dispatchers]),
                     lambda counts: all(c > 0 for c in counts), DEADLINE_S,
                     "both dispatchers delivering from the group")
    broker_uid = (await store.get(BROKERS, ns, "default"))["metadata"]["uid"]
    group = (await store.get(TRIGGERS, ns, "to-sink"))["metadata"]["uid"]
    killed, survivor = engine.dispatchers
    victim = dispatcher_id(killed.state_dir.resolve(), socket.gethostname())
    redis = redis_conn.client(RedisSettings(url=engine.redis.url))
    try:
        async def pending() -> dict[str, int]:
            """Entries read and not acked yet, by consumer (dispatcher id) of the trigger's group."""
            summary = await redis.xpending(stream_key(broker_uid), group)
            return {str(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}

        # Mid-stream: the second half is being sent, and one dispatcher dies with entries in flight.
        sending = asyncio.create_task(send(engine.gateway.port, ns, rest))
        try:
            await eventually(pending, lambda p: p.get(victim, 0) > 0, DEADLINE_S,
                             f"entries pending with {victim}")
            await killed.kill()
            status = await sending
        finally:
            sending.cancel()
        assert all(s == 202 for s in status.values()), {i: s for i, s in status.items() if s != 202}

        async def missing() -> list[str]:
            return sorted(set(ids) - set(await asyncio.to_thread(sink_ids, sink_file)))

        await eventually(missing, lambda left: not left, DEADLINE_S,
                         "every event at the sink (the survivor taking over the dead one's)")
        assert set(sink_ids(sink_file)) == set(ids)  # none other either
        # Binary and structured alike arrive with their data; the dead one's entries all taken over.
        assert {r["body"] for r in sink_records(sink_file)} == {'{"n": 1}'}
        await eventually(pending, lambda p: not any(p.values()), DEADLINE_S, "nothing pending")
    finally:
        await redis.aclose()
    assert await asyncio.to_thread(delivered, survivor) > 0
