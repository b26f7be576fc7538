"""Eventing end to end: `flint up`, a Broker, Triggers, real subscribers, real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.events import apply, broker, recorder, trigger
from support.harness import APPS, Flint, fetch, poll, procs_mentioning, start_flint, stop_flint

SINK = str(APPS / "eventsink")
INGRESS = "broker-ingress.localhost"
STRUCTURED = "application/cloudevents+json"
BATCHED = "application/cloudevents-batch+json"


@pytest.fixture(scope="module")
def flint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flint]:
    # Fast autoscaling so the scale-from-zero case is quick.
    f = start_flint(
        tmp_path_factory.mktemp("flint-eventing"),
        "--autoscaler",
        "stable-window=6s",
        "--autoscaler",
        "scale-to-zero-grace-period=0s",
    )
    try:
        yield f
    finally:
        stop_flint(f)


def ready(flint: Flint, kind: str, name: str) -> bool:
    obj = flint.get(kind, name)
    conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
    return bool(conds.get("Ready", {}).get("status") == "True")


def wait_ready(flint: Flint, kind: str, name: str, timeout: float = 60) -> None:
    poll(lambda: ready(flint, kind, name), timeout, f"{kind} {name} Ready")


def send(
    flint: Flint,
    broker_name: str,
    *,
    id: str,
    type: str = "test.event",
    data: bytes = b'{"n": 1}',
    extra: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": id,
        "ce-source": "/tests",
        "ce-type": type,
        "Content-Type": "application/json",
        **(extra or {}),
    }
    status, _, body = asyncio.run(
        fetch(flint.port, INGRESS, f"/default/{broker_name}", method="POST", headers=headers, data=data)
    )
    return status, body


def test_broker_gets_its_address_and_the_ingress_refuses_bad_requests(flint: Flint) -> None:
    apply(flint, broker("plain"))
    wait_ready(flint, "broker", "plain")
    b = flint.get("broker", "plain")
    assert b["status"]["address"]["url"] == f"http://broker-ingress.localhost:{flint.port}/default/plain"
    ok, _ = send(flint, "plain", id="a-1")
    assert ok == 202
    status, body = send(flint, "missing", id="x")
    assert status == 404 and b"default/missing" in body
    status, _, body = asyncio.run(fetch(flint.port, INGRESS, "/default/plain"))
    assert status == 405
    # An event without a type is refused with the reason.
    status, _, body = asyncio.run(
        fetch(
            flint.port,
            INGRESS,
            "/default/plain",
            method="POST",
            data=b"{}",
            headers={
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-source": "/s",
                "Content-Type": "application/json",
            },
        )
    )
    assert status == 400 and b"type" in body
    status, _, body = asyncio.run(
        fetch(
            flint.port,
            INGRESS,
            "/default/plain",
            method="POST",
            data=b"<x/>",
            headers={"Content-Type": "application/cloudevents+xml"},
        )
    )
    assert status == 415


def test_events_reach_a_filtered_trigger_and_a_service_at_zero_scales_up(
    flint: Flint, tmp_path: Path
) -> None:
    sink_file = tmp_path / "sink.jsonl"
    flint.cli("service", "create", "sink", "--image", SINK, "--env", f"SINK_FILE={sink_file}")
    apply(flint, broker("default"))
    with recorder() as rec:
        apply(
            flint,
            trigger(
                "to-service",
                "default",
                {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "sink"}},
            ),
            trigger("only-orders", "default", {"uri": rec.url}, filter={"attributes": {"type": "order"}}),
        )
        for name in ("to-service", "only-orders"):
            wait_ready(flint, "trigger", name)
        t = flint.get("trigger", "to-service")
        assert t["status"]["subscriberUri"] == f"http://sink.default.localhost:{flint.port}"
        # Let the service scale to zero, so the first event has to wake it.
        poll(
            lambda: (
                not [
                    r
                    for r in flint.replica_records()
                    if str(r.get("revision_key", "")).startswith("default/sink-")
                ]
            ),
            60,
            "the sink service to scale to zero",
        )
        for i in range(20):
            status, body = send(flint, "default", id=f"e-{i}", type="order" if i % 2 else "other")
            assert status == 202, body

        def lines() -> list[dict[str, Any]]:
            if not sink_file.exists():
                return []
            return [json.loads(x) for x in sink_file.read_text().splitlines() if x.strip()]

        poll(lambda: len({x["headers"]["ce-id"] for x in lines()}) == 20, 60, "all 20 events at the service")
        got = lines()[0]["headers"]
        assert got["ce-knativebrokerttl"] == "255"
        assert got["ce-knativearrivaltime"].endswith("Z")
        assert got["ce-source"] == "/tests"
        poll(lambda: sorted(rec.ids()) == sorted(f"e-{i}" for i in range(1, 20, 2)), 30, "the orders")
        assert len(rec.ids()) == 10


def test_retries_recover_every_event_and_the_rest_goes_to_the_dead_letter_sink(flint: Flint) -> None:
    apply(flint, broker("retry"))
    delivery = {"retry": 5, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"}
    # The first two attempts of every event fail (500): each event needs two of its five retries.
    with recorder(fail_first=2) as flaky, recorder() as dls, recorder(statuses=[400] * 100) as refusing:
        apply(
            flint,
            trigger("flaky", "retry", {"uri": flaky.url}, delivery=delivery),
            trigger(
                "refusing",
                "retry",
                {"uri": refusing.url},
                delivery={**delivery, "deadLetterSink": {"uri": dls.url}},
            ),
        )
        wait_ready(flint, "trigger", "flaky")
        wait_ready(flint, "trigger", "refusing")
        ids = [f"r-{i}" for i in range(30)]
        for i in ids:
            assert send(flint, "retry", id=i)[0] == 202
        poll(lambda: sorted(set(flaky.ids())) == sorted(ids), 60, "every event despite two failures each")
        # Recovered by retrying: every event was attempted at least three times (500, 500, 202).
        counts = flaky.attempt_counts()
        assert sorted(counts) == sorted(ids) and all(counts[i] >= 3 for i in ids), counts
        # 400 is not retried: straight to the dead-letter sink, with Knative's extensions.
        poll(lambda: sorted(dls.ids()) == sorted(ids), 60, "every refused event dead-lettered")
        assert refusing.requests == 30
        h = dls.events[0]["headers"]
        assert h["ce-knativeerrorcode"] == "400"
        assert h["ce-knativeerrordest"] == refusing.url


def test_without_a_dead_letter_sink_a_failed_event_is_kept_and_can_be_redelivered(flint: Flint) -> None:
    apply(flint, broker("keep"))
    with recorder(statuses=[400]) as rec:
        apply(flint, trigger("keeper", "keep", {"uri": rec.url}, delivery={"retry": 0}))
        wait_ready(flint, "trigger", "keeper")
        assert send(flint, "keep", id="k-1")[0] == 202
        url = f"http://127.0.0.1:{flint.dispatcher_port}/dead-letters/default/keeper"

        def letters() -> list[dict[str, Any]]:
            import urllib.request

            request = urllib.request.Request(url, headers=flint.api_headers())
            with urllib.request.urlopen(request, timeout=5) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]

        poll(lambda: len(letters()) == 1, 30, "the dead letter")
        letter = letters()[0]
        assert letter["status"] == 400 and letter["reason"] == "not-retryable"
        assert letter["event"]["id"] == "k-1"
        listed = json.loads(flint.cli("trigger", "dead-letters", "keeper", "-o", "json").stdout)
        assert [d["event"]["id"] for d in listed] == ["k-1"]  # through the API's proxy
        out = flint.cli("trigger", "redeliver", "keeper").stdout
        assert out.strip() == "1 dead letter(s) queued for redelivery"
        poll(lambda: rec.ids() == ["k-1"], 30, "the redelivered event")
        assert letters() == []


def test_a_reply_loop_is_stopped_by_the_ttl(flint: Flint, tmp_path: Path) -> None:
    sink_file = tmp_path / "loop.jsonl"
    flint.cli(
        "service",
        "create",
        "looper",
        "--image",
        SINK,
        "--env",
        f"SINK_FILE={sink_file}",
        "--env",
        "REPLY_TYPE=loop",
        "--scale-min",
        "1",
    )
    apply(flint, broker("loop"))
    apply(
        flint,
        trigger(
            "looping",
            "loop",
            {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "looper"}},
            filter={"attributes": {"type": "loop"}},
        ),
    )
    wait_ready(flint, "trigger", "looping")
    assert send(flint, "loop", id="seed", type="loop", extra={"ce-knativebrokerttl": "5"})[0] == 202

    def count() -> int:
        return len(sink_file.read_text().splitlines()) if sink_file.exists() else 0

    poll(lambda: count() == 5, 30, "five passes of the loop")
    ttls = [json.loads(x)["headers"]["ce-knativebrokerttl"] for x in sink_file.read_text().splitlines()]
    assert ttls == ["5", "4", "3", "2", "1"]
    dropped = (
        "flint_dispatcher_events_dropped_total"
        '{namespace="default",reason="ttl-exhausted",trigger="looping"} 1.0'
    )

    def metrics() -> str:
        return asyncio.run(fetch(flint.dispatcher_port, "127.0.0.1", "/metrics"))[2].decode()

    poll(lambda: dropped in metrics(), 10, "the TTL drop to be counted")
    assert count() == 5  # and nothing after it


def test_events_survive_a_dispatcher_killed_mid_stream(flint: Flint) -> None:
    apply(flint, broker("crash"))
    with recorder() as rec:
        apply(flint, trigger("survivor", "crash", {"uri": rec.url}))
        wait_ready(flint, "trigger", "survivor")
        ids = [f"c-{i}" for i in range(300)]
        for i in ids[:150]:
            assert send(flint, "crash", id=i)[0] == 202
        pids = flint_pids(flint, " -m controller.eventing ")
        assert pids, "the dispatcher process"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for i in ids[150:]:
            assert send(flint, "crash", id=i)[0] == 202
        try:
            poll(lambda: set(rec.ids()) == set(ids), 60, "every event after the dispatcher restarted")
        except AssertionError as exc:
            missing = sorted(set(ids) - set(rec.ids()), key=lambda x: int(x[2:]))
            raise AssertionError(f"{exc}; missing {len(missing)}: {missing[:10]}...{missing[-3:]}") from None


def test_structured_and_batched_events_keep_their_data(flint: Flint) -> None:
    apply(flint, broker("modes"))
    with recorder() as rec:
        apply(flint, trigger("modes", "modes", {"uri": rec.url}))
        wait_ready(flint, "trigger", "modes")
        one = {"specversion": "1.0", "id": "s-1", "source": "/s", "type": "t", "data": {"a": [1, 2]}}
        two = {
            "specversion": "1.0",
            "id": "s-2",
            "source": "/s",
            "type": "t",
            "datacontenttype": "application/octet-stream",
            "data_base64": base64.b64encode(b"\x00\xff").decode(),
        }
        status, _, _ = asyncio.run(
            fetch(
                flint.port,
                INGRESS,
                "/default/modes",
                method="POST",
                headers={"Content-Type": "application/cloudevents+json"},
                data=json.dumps(one).encode(),
            )
        )
        assert status == 202
        status, _, _ = asyncio.run(
            fetch(
                flint.port,
                INGRESS,
                "/default/modes",
                method="POST",
                headers={"Content-Type": "application/cloudevents-batch+json"},
                data=json.dumps([two]).encode(),
            )
        )
        assert status == 202
        poll(lambda: sorted(rec.ids()) == ["s-1", "s-2"], 30, "both events")
        by_id = {e["headers"]["ce-id"]: e for e in rec.events}
        assert json.loads(by_id["s-1"]["body"]) == {"a": [1, 2]}
        assert by_id["s-2"]["body"] == b"\x00\xff"
        assert by_id["s-2"]["headers"]["content-type"] == "application/octet-stream"


def test_binary_mode_data_is_opaque_and_delivered_byte_for_byte(flint: Flint) -> None:
    """HTTP binding 3.1: a binary event's body is its data, even when its type says JSON and it
    is not JSON; it is accepted and delivered as it came (binary) or as base64 (structured)."""
    apply(flint, broker("opaque"))
    with recorder() as bin_rec, recorder() as json_rec:
        apply(
            flint,
            trigger("opaque-binary", "opaque", {"uri": bin_rec.url}),
            trigger("opaque-json", "opaque", {"uri": json_rec.url}, delivery={"format": "json"}),
        )
        for name in ("opaque-binary", "opaque-json"):
            wait_ready(flint, "trigger", name)
        data = b'{"truncated": [1, 2\n'
        status, body = send(flint, "opaque", id="op-1", data=data)
        assert status == 202, body
        poll(lambda: bin_rec.ids() == ["op-1"], 30, "the binary delivery")
        got = bin_rec.events[0]
        assert got["body"] == data and got["headers"]["content-type"] == "application/json"
        poll(lambda: len(json_rec.events) == 1, 30, "the structured delivery")
        doc = json.loads(json_rec.events[0]["body"])
        assert doc["id"] == "op-1" and doc["datacontenttype"] == "application/json"
        assert base64.b64decode(doc["data_base64"]) == data


def test_a_binary_reply_with_opaque_json_typed_data_goes_back_to_the_broker_byte_for_byte(
    flint: Flint,
) -> None:
    """A subscriber's binary reply follows the binary-mode rule: its body is opaque data. It is
    a reply (not a 502 failure), goes into the broker and reaches the reply's trigger as it came."""
    data = b"{not: json}"
    reply_headers = {
        "ce-specversion": "1.0",
        "ce-source": "/replier",
        "ce-type": "opaque.answer",
        "Content-Type": "application/json",
    }
    apply(flint, broker("answers"))
    with recorder(reply=(reply_headers, data)) as replier, recorder() as sink:
        apply(
            flint,
            trigger("ask", "answers", {"uri": replier.url}, filter={"attributes": {"type": "ask"}}),
            trigger(
                "answered", "answers", {"uri": sink.url}, filter={"attributes": {"type": "opaque.answer"}}
            ),
        )
        for name in ("ask", "answered"):
            wait_ready(flint, "trigger", name)
        assert send(flint, "answers", id="q-1", type="ask")[0] == 202
        poll(lambda: sink.ids() == ["r-q-1"], 30, "the reply at the reply's trigger")
        got = sink.events[0]
        assert got["body"] == data and got["headers"]["content-type"] == "application/json"
        assert got["headers"]["ce-knativebrokerttl"] == "254"
        assert replier.attempt_counts() == {"q-1": 1}  # delivered once: no retry


def post(flint: Flint, host: str, path: str, headers: dict[str, str], data: bytes) -> None:
    status, _, body = asyncio.run(fetch(flint.port, host, path, method="POST", headers=headers, data=data))
    assert status == 202, body


def test_cloudevents_0_3_in_every_mode_is_delivered_as_0_3(flint: Flint) -> None:
    """eventing broker and channel data_plane.go: ingress "MUST conform to CloudEvents 0.3 or
    1.0"; a 0.3 event reaches the subscriber as 0.3, with 0.3's attribute names."""
    v03 = {"specversion": "0.3", "source": "/old", "type": "legacy", "schemaurl": "/schemas/legacy"}
    binary = {**{f"ce-{k}": v for k, v in v03.items()}, "ce-id": "v3-1", "Content-Type": "application/json"}
    blob = b"\x00\xffraw"
    structured_one = {
        **v03,
        "id": "v3-s",
        "datacontenttype": "application/octet-stream",
        "datacontentencoding": "base64",
        "data": base64.b64encode(blob).decode(),
    }
    batch = [{**v03, "id": "v3-b", "data": {"in": "batch"}}]
    channel = {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "metadata": {"name": "legacy"}}
    apply(flint, broker("legacy"), channel)
    with recorder() as bin_rec, recorder() as json_rec, recorder() as chan_rec:
        subscription = {
            "apiVersion": "messaging.knative.dev/v1",
            "kind": "Subscription",
            "metadata": {"name": "legacy"},
            "spec": {
                "channel": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "legacy"},
                "subscriber": {"uri": chan_rec.url},
            },
        }
        apply(
            flint,
            trigger("legacy-binary", "legacy", {"uri": bin_rec.url}),
            trigger("legacy-json", "legacy", {"uri": json_rec.url}, delivery={"format": "json"}),
            subscription,
        )
        for name in ("legacy-binary", "legacy-json"):
            wait_ready(flint, "trigger", name)
        wait_ready(flint, "subscription", "legacy")
        for host in (INGRESS, "channel-ingress.localhost"):
            path = "/default/legacy"
            post(flint, host, path, binary, b'{"n": 3}')
            post(flint, host, path, {"Content-Type": STRUCTURED}, json.dumps(structured_one).encode())
            post(flint, host, path, {"Content-Type": BATCHED}, json.dumps(batch).encode())
        ids = ["v3-1", "v3-b", "v3-s"]
        for rec in (bin_rec, json_rec, chan_rec):
            poll(lambda rec=rec: len(rec.events) == 3, 30, "the three 0.3 events")  # type: ignore[misc]
        assert sorted(bin_rec.ids()) == sorted(chan_rec.ids()) == ids
        assert sorted(json.loads(e["body"])["id"] for e in json_rec.events) == ids
        for rec in (bin_rec, chan_rec):  # binary delivery: 0.3 headers, the data as the body
            by_id = {e["headers"]["ce-id"]: e for e in rec.events}
            for e in by_id.values():
                assert e["headers"]["ce-specversion"] == "0.3"
                assert e["headers"]["ce-schemaurl"] == "/schemas/legacy"
                assert "ce-dataschema" not in e["headers"]
            assert json.loads(by_id["v3-1"]["body"]) == {"n": 3}
            assert json.loads(by_id["v3-b"]["body"]) == {"in": "batch"}
            assert by_id["v3-s"]["body"] == blob
            assert by_id["v3-s"]["headers"]["ce-datacontentencoding"] == "base64"
        docs = {d["id"]: d for d in (json.loads(e["body"]) for e in json_rec.events)}
        assert all(d["specversion"] == "0.3" and d["schemaurl"] == "/schemas/legacy" for d in docs.values())
        assert docs["v3-s"]["datacontentencoding"] == "base64" and "data_base64" not in docs["v3-s"]
        assert base64.b64decode(docs["v3-s"]["data"]) == blob
        assert docs["v3-1"]["data"] == {"n": 3}
        flint.cli("delete", "channel", "legacy")


def test_every_accepted_event_is_delivered_when_the_gateway_is_killed_mid_ingest(flint: Flint) -> None:
    apply(flint, broker("ingest"))
    with recorder() as rec:
        apply(flint, trigger("ingested", "ingest", {"uri": rec.url}))
        wait_ready(flint, "trigger", "ingested")
        accepted: set[str] = set()
        killed = asyncio.Event()

        async def client(k: int, session: Any) -> None:
            for i in range(60):
                eid = f"g-{k}-{i}"
                if k == 0 and i == 20:
                    pids = await asyncio.to_thread(flint_pids, flint, " -m gateway ")
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    if pids:
                        killed.set()
                with contextlib.suppress(Exception):
                    async with session.post(
                        f"http://127.0.0.1:{flint.port}/default/ingest",
                        data=b'{"n": 1}',
                        headers={
                            "Host": INGRESS,
                            "ce-specversion": "1.0",
                            "ce-id": eid,
                            "ce-source": "/t",
                            "ce-type": "t",
                            "Content-Type": "application/json",
                        },
                        timeout=aiohttp.ClientTimeout(total=5),
                    ) as r:
                        if r.status == 202:
                            accepted.add(eid)

        async def main() -> None:
            async with aiohttp.ClientSession() as session:
                await asyncio.gather(*(client(k, session) for k in range(8)))

        asyncio.run(main())
        assert killed.is_set() and len(accepted) > 50
        # The gateway comes back (flint up restarts it) and serves the broker from its snapshot.
        poll(lambda: send(flint, "ingest", id="after")[0] == 202, 60, "the restarted gateway")
        accepted.add("after")
        try:
            poll(lambda: accepted <= set(rec.ids()), 60, "every accepted event")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; missing {sorted(accepted - set(rec.ids()))[:10]}") from None


def flint_pids(flint: Flint, needle: str) -> list[int]:
    """This Flint's processes whose command line has `needle` (the gateway and its workers, say)."""
    return [pid for pid, cmd in procs_mentioning(str(flint.state_dir)).items() if needle in cmd]


def test_a_channel_delivers_to_its_subscriptions_and_replies_go_to_reply(
    flint: Flint, tmp_path: Path
) -> None:
    sink_file = tmp_path / "replier.jsonl"
    flint.cli(
        "service",
        "create",
        "replier",
        "--image",
        SINK,
        "--env",
        f"SINK_FILE={sink_file}",
        "--env",
        "REPLY_TYPE=answer",
        "--scale-min",
        "1",
    )
    channel = {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "metadata": {"name": "orders"}}
    with recorder() as direct, recorder() as replies:
        subs = [
            {
                "apiVersion": "messaging.knative.dev/v1",
                "kind": "Subscription",
                "metadata": {"name": "direct"},
                "spec": {
                    "channel": {
                        "apiVersion": "messaging.knative.dev/v1",
                        "kind": "Channel",
                        "name": "orders",
                    },
                    "subscriber": {"uri": direct.url},
                },
            },
            {
                "apiVersion": "messaging.knative.dev/v1",
                "kind": "Subscription",
                "metadata": {"name": "answers"},
                "spec": {
                    "channel": {
                        "apiVersion": "messaging.knative.dev/v1",
                        "kind": "Channel",
                        "name": "orders",
                    },
                    "subscriber": {
                        "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "replier"}
                    },
                    "reply": {"uri": replies.url},
                },
            },
        ]
        apply(flint, channel, *subs)
        wait_ready(flint, "channel", "orders")
        for name in ("direct", "answers"):
            wait_ready(flint, "subscription", name)
        ch = flint.get("channel", "orders")
        assert (
            ch["status"]["address"]["url"] == f"http://channel-ingress.localhost:{flint.port}/default/orders"
        )
        assert ch["status"]["channel"]["kind"] == "InMemoryChannel"
        imc = flint.get("imc", "orders")
        assert len(imc["status"]["subscribers"]) == 2
        sub = flint.get("subscription", "answers")
        assert sub["status"]["physicalSubscription"]["subscriberUri"] == (
            f"http://replier.default.localhost:{flint.port}"
        )
        for i in range(10):
            status, _, body = asyncio.run(
                fetch(
                    flint.port,
                    "channel-ingress.localhost",
                    "/default/orders",
                    method="POST",
                    data=b'{"n": 1}',
                    headers={
                        "ce-specversion": "1.0",
                        "ce-id": f"o-{i}",
                        "ce-source": "/t",
                        "ce-type": "order",
                        "Content-Type": "application/json",
                    },
                )
            )
            assert status == 202, body
        ids = [f"o-{i}" for i in range(10)]
        poll(lambda: sorted(direct.ids()) == sorted(ids), 30, "every event at the direct subscriber")
        poll(lambda: sorted(replies.ids()) == sorted(f"r-{i}" for i in ids), 30, "every reply at reply")
        # A channel stores events as they came: no broker extensions.
        assert "ce-knativebrokerttl" not in direct.events[0]["headers"]
        flint.cli("delete", "channel", "orders")
        poll(
            lambda: flint.cli("get", "imc", "orders", check=False).returncode != 0,
            30,
            "the backing InMemoryChannel to go with its Channel",
        )


def subscription(name: str, channel: str, subscriber_uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "messaging.knative.dev/v1",
        "kind": "Subscription",
        "metadata": {"name": name},
        "spec": {
            "channel": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": channel},
            "subscriber": {"uri": subscriber_uri},
        },
    }


def test_subscriptions_are_added_to_their_channels_spec_subscribers(flint: Flint) -> None:
    """eventing channel/control_plane.go: Spec.Subscribers MUST be appended by the subscription,
    and status.subscribers reports each ready; a removed subscription takes its entry with it;
    an entry a user wrote stays, reported not delivered."""
    channel = {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "metadata": {"name": "listed"}}
    with recorder() as one, recorder() as two:
        subs = (subscription("first", "listed", one.url), subscription("second", "listed", two.url))
        apply(flint, channel, *subs)
        uids = {n: flint.get("subscription", n)["metadata"]["uid"] for n in ("first", "second")}
        urls = {uids["first"]: one.url, uids["second"]: two.url}

        def listed(kind: str) -> dict[str, Any]:
            obj = flint.get(kind, "listed")
            spec = {e.get("uid"): e for e in obj["spec"].get("subscribers") or []}
            status = {e.get("uid"): e for e in obj.get("status", {}).get("subscribers") or []}
            return {"spec": spec, "status": status, "generation": obj["metadata"]["generation"]}

        def all_ready(kind: str, want: set[str]) -> bool:
            got = listed(kind)
            return set(got["spec"]) == want and all(
                got["status"].get(u, {}).get("ready") == "True" for u in want
            )

        both = set(uids.values())
        for kind in ("channel", "imc"):
            poll(lambda kind=kind: all_ready(kind, both), 30, f"both on the {kind}")  # type: ignore[misc]
            got = listed(kind)
            for uid, entry in got["spec"].items():
                assert entry["subscriberUri"] == urls[uid] and entry["generation"] == 1
                assert got["status"][uid]["observedGeneration"] == 1
        # A user's own entry coexists: kept as written, reported as not delivered.
        mine = {"uid": "users-own", "subscriberUri": "http://127.0.0.1:9/"}
        apply(flint, {**channel, "spec": {"subscribers": [mine]}})
        want = {*uids.values(), "users-own"}
        poll(lambda: set(listed("channel")["spec"]) == want, 30, "the user's entry next to Flint's")
        got = listed("channel")
        assert got["spec"]["users-own"] == mine
        poll(lambda: listed("channel")["status"].get("users-own", {}).get("ready") == "False", 30,
             "the user's entry reported")
        flint.cli("delete", "subscription", "first")
        for kind, left in (("channel", {uids["second"], "users-own"}), ("imc", {uids["second"]})):
            poll(lambda kind=kind, left=left: set(listed(kind)["spec"]) == left  # type: ignore[misc]
                 and set(listed(kind)["status"]) == left, 30, f"the removed subscription off the {kind}")
        flint.cli("delete", "subscription", "second")
        flint.cli("delete", "channel", "listed")


def test_ordered_delivery_keeps_the_order_through_retries_and_large_events_arrive_whole(flint: Flint) -> None:
    apply(flint, broker("order"))
    big = bytes(range(256)) * 400  # 100 KiB of binary data
    # The first attempt of every event fails: in ordered mode it is retried before the next.
    with recorder(fail_first=1) as rec:
        t = trigger(
            "in-order",
            "order",
            {"uri": rec.url},
            delivery={"retry": 5, "backoffPolicy": "linear", "backoffDelay": "PT0.02S"},
        )
        t["metadata"]["annotations"] = {"kafka.eventing.knative.dev/delivery.order": "ordered"}
        apply(flint, t)
        wait_ready(flint, "trigger", "in-order")
        ids = [f"o-{i}" for i in range(20)]
        for i in ids:
            assert send(flint, "order", id=i)[0] == 202
        status, _, body = asyncio.run(
            fetch(
                flint.port,
                INGRESS,
                "/default/order",
                method="POST",
                data=big,
                headers={
                    "ce-specversion": "1.0",
                    "ce-id": "big",
                    "ce-source": "/t",
                    "ce-type": "t",
                    "Content-Type": "application/octet-stream",
                },
            )
        )
        assert status == 202, body
        poll(lambda: len(rec.ids()) == 21, 30, "all events, in order")
        assert rec.ids() == [*ids, "big"]
        # Every event was retried, in place: all its attempts came before the next event's first.
        counts = rec.attempt_counts()
        assert sorted(counts) == sorted([*ids, "big"]) and all(n >= 2 for n in counts.values()), counts
        log = [ce_id for ce_id, _ in rec.attempt_log()]
        assert [k for k, _ in itertools.groupby(log)] == [*ids, "big"], log
        assert rec.events[-1]["body"] == big
