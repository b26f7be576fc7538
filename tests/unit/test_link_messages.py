"""The link protocol (`flint_common.wire`) and the worker's snapshot persistence, without sockets."""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from flint_common.snapshot import (
    BrokerEntry,
    Endpoint,
    Peer,
    RevisionTarget,
    RouteEntry,
    Snapshot,
    TagTarget,
    TrafficSplit,
)
from flint_common.wire import (
    Ack,
    BucketLoad,
    Hello,
    LearnedLimits,
    Poke,
    SnapshotMessage,
    Stats,
    UpMessage,
    WireError,
    decode_down,
    decode_snapshot,
    decode_up,
    encode_snapshot,
)
from gateway.snapshot_journal import load_snapshot_file, persist_snapshot_file


def snapshot(version: int = 3) -> Snapshot:
    return Snapshot(
        version=version,
        routes=(
            RouteEntry(
                namespace="default",
                name="hello",
                hosts=("hello.default.localhost",),
                traffic=(TrafficSplit("hello-00001", 90), TrafficSplit("hello-00002", 10)),
                tags=(TagTarget("blue", "hello-00002", ("blue-hello.default.localhost",)),),
            ),
        ),
        revisions=(
            RevisionTarget(
                namespace="default",
                name="hello-00001",
                service="hello",
                timeout_s=300.0,
                response_start_timeout_s=0.0,
                idle_timeout_s=0.0,
                container_concurrency=0,
                endpoints=(Endpoint("r1", "127.0.0.1", 40001),),
            ),
            RevisionTarget(
                namespace="default",
                name="hello-00002",
                service="hello",
                timeout_s=30.0,
                response_start_timeout_s=5.0,
                idle_timeout_s=10.0,
                container_concurrency=2,
                endpoints=(),
            ),
        ),
    )


def down(snap: Snapshot) -> bytes:
    return orjson.dumps({"type": "snapshot", "snapshot": snap})


FIXTURES = Path(__file__).parent / "fixtures" / "wire"
"""Frames and files as the link wrote them before the typed link messages existed (commit 3281443;
they were `gateway.wire` then, `flint_common.wire` now): a gateway and a controller of either
side of the change must understand each other, and a persisted snapshot must still load."""


def fixture_snapshot() -> Snapshot:
    """The snapshot in fixtures/wire/snapshot-*.json: every field, optional ones set too."""
    return Snapshot(
        version=1733480000123,
        routes=(
            RouteEntry(
                "default", "hello", ("hello.default.localhost",),
                (TrafficSplit("hello-00001", 90), TrafficSplit("hello-00002", 10)),
                (TagTarget("blue", "hello-00002", ("blue-hello.default.localhost",)),),
            ),
            RouteEntry(
                "default", "internal", ("internal.default.localhost",),
                (TrafficSplit("internal-00001", 100),), (), cluster_local=True,
            ),
        ),
        revisions=(
            RevisionTarget(
                "default", "hello-00001", "hello", 300.0, 300.0, 0.0, 0,
                (Endpoint("r1", "127.0.0.1", 40001), Endpoint("r2", "127.0.0.1", 40002, starting=True)),
            ),
            RevisionTarget(
                "default", "hello-00002", "hello", 30.0, 5.0, 10.0, 2, (),
                failure="replica exited before becoming ready",
            ),
            RevisionTarget("default", "internal-00001", "internal", 300.0, 300.0, 0.0, 0, ()),
        ),
        brokers=(
            BrokerEntry("default", "default", "uid-1", "eventing/logs/uid-1.db"),
            BrokerEntry("default", "ch", "uid-2", "eventing/logs/uid-2.db", durable=False,
                        kind="channel"),
        ),
    )


# Up frames exactly as gateway/link.py and gateway/stats.py encoded them at commit 3281443.
OLD_UP_FRAMES: list[tuple[str, UpMessage]] = [
    ('{"type":"hello","worker":"gw/1","version":7}', Hello("gw/1", 7)),
    ('{"type":"hello","worker":"gw/0","version":0}', Hello("gw/0", 0)),
    ('{"type":"ack","version":4,"draining":{"r1":2,"r9":1}}', Ack(4, {"r1": 2, "r9": 1})),
    ('{"type":"ack","version":1,"draining":{}}', Ack(1, {})),
    ('{"type":"stats","bucket":1733480000,"revisions":{"default/hello-00001":{"concurrency":'
     '2.333333,"requests":7},"default/idle-00001":{"concurrency":0.0,"requests":0}}}',
     Stats(1733480000, {"default/hello-00001": BucketLoad(2.333333, 7),
                        "default/idle-00001": BucketLoad(0.0, 0)})),
    ('{"type":"stats","bucket":5,"revisions":{}}', Stats(5, {})),
    ('{"type":"poke","revision":"default/hello-00001","waiting":1}',
     Poke("default/hello-00001", 1)),
]


# --- up messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(("frame", "message"), OLD_UP_FRAMES)
def test_up_messages_encode_byte_for_byte_as_before(frame: str, message: UpMessage) -> None:
    assert message.encode() == frame


@pytest.mark.parametrize(("frame", "message"), OLD_UP_FRAMES)
def test_the_previous_gateways_frames_decode(frame: str, message: UpMessage) -> None:
    assert decode_up(frame) == message
    assert decode_up(frame.encode()) == message
    assert type(message).decode(frame) == message


@pytest.mark.parametrize(
    "message",
    [Hello("gw/3", 10**15), Ack(9, {"a": 1}), Stats(1, {"ns/a": BucketLoad(0.5, 1)}), Poke("ns/a", 4)],
)
def test_up_messages_round_trip(message: UpMessage) -> None:
    assert decode_up(message.encode()) == message
    assert type(message).from_wire(message.to_wire()) == message
    assert isinstance(message.encode(), str)  # websocket text frames


def test_stats_with_learned_limits_round_trip_and_name_them_on_the_wire() -> None:
    msg = Stats(
        7,
        {"ns/a": BucketLoad(1.5, 3)},
        {"ns/a": LearnedLimits({"r1": 4, "r2": 1}, lowered=3, raised=1), "ns/b": LearnedLimits({})},
    )
    assert msg.encode() == (
        '{"type":"stats","bucket":7,"revisions":{"ns/a":{"concurrency":1.5,"requests":3}},'
        '"limits":{"ns/a":{"replicas":{"r1":4,"r2":1},"lowered":3,"raised":1},'
        '"ns/b":{"replicas":{},"lowered":0,"raised":0}}}'
    )
    assert decode_up(msg.encode()) == msg
    assert Stats.from_wire(msg.to_wire()) == msg


def test_stats_without_limits_leave_them_off_the_wire() -> None:
    # An older controller never sees the field; a message without it decodes as no limits.
    wire = Stats(5, {}).to_wire()
    assert "limits" not in wire
    decoded = decode_up('{"type":"stats","bucket":5,"revisions":{}}')
    assert isinstance(decoded, Stats) and decoded.limits == {}


def test_learned_limits_counts_default_to_zero() -> None:
    decoded = decode_up('{"type":"stats","bucket":1,"revisions":{},"limits":{"ns/a":{"replicas":{"r":2}}}}')
    assert isinstance(decoded, Stats)
    assert decoded.limits == {"ns/a": LearnedLimits({"r": 2}, 0, 0)}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('{"type":"stats","bucket":1,"revisions":{},"limits":[]}',
         "stats.limits: expected an object, got array"),
        ('{"type":"stats","bucket":1,"revisions":{},"limits":{"ns/a":{}}}',
         "stats.limits['ns/a'].replicas: missing"),
        ('{"type":"stats","bucket":1,"revisions":{},"limits":{"ns/a":{"replicas":{"r":"2"}}}}',
         "stats.limits['ns/a'].replicas['r']: expected an integer, got string"),
        ('{"type":"stats","bucket":1,"revisions":{},"limits":{"ns/a":{"replicas":{},"lowered":1.5}}}',
         "stats.limits['ns/a'].lowered: expected an integer, got number"),
    ],
)
def test_malformed_learned_limits_are_refused_with_the_reason(frame: str, reason: str) -> None:
    with pytest.raises(WireError) as err:
        decode_up(frame)
    assert reason in str(err.value)


def test_an_ack_without_draining_means_nothing_drains() -> None:
    assert decode_up('{"type": "ack", "version": 3}') == Ack(3, {})


def test_a_float_that_is_an_integer_in_the_json_is_a_float() -> None:
    stats = decode_up('{"type":"stats","bucket":1,"revisions":{"ns/a":{"concurrency":2,"requests":0}}}')
    assert isinstance(stats, Stats)
    assert stats.revisions["ns/a"].concurrency == 2.0
    assert isinstance(stats.revisions["ns/a"].concurrency, float)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ('{"type": "hello", "worker": "gw/0", "version": 2, "features": ["zstd"]}', Hello("gw/0", 2)),
        ('{"type": "ack", "version": 2, "draining": {}, "queued": 5}', Ack(2, {})),
        ('{"type": "stats", "bucket": 9, "revisions": {"ns/a": {"concurrency": 1.5, '
         '"requests": 3, "p99_ms": 12}}, "worker_lag_s": 0.01}',
         Stats(9, {"ns/a": BucketLoad(1.5, 3)})),
        ('{"type": "poke", "revision": "ns/a", "waiting": 2, "reason": "cold"}', Poke("ns/a", 2)),
    ],
)
def test_unknown_fields_of_a_newer_gateway_are_ignored(frame: str, message: UpMessage) -> None:
    assert decode_up(frame) == message


def test_unknown_up_message_types_are_ignored() -> None:
    assert decode_up('{"type": "metrics", "x": 1}') is None


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "message: expected an object, got array"),
        ("{}", "'type' is missing"),
        ('{"type": 5}', "'type' is missing or not a string"),
        ('{"type": "hello", "version": 1}', "hello.worker: missing"),
        ('{"type": "hello", "worker": 7, "version": 1}', "hello.worker: expected a string, got integer"),
        ('{"type": "hello", "worker": "gw/0", "version": "1"}',
         "hello.version: expected an integer, got string"),
        ('{"type": "hello", "worker": "gw/0", "version": true}',
         "hello.version: expected an integer, got boolean"),
        ('{"type": "ack", "version": 1.5}', "ack.version: expected an integer, got number"),
        ('{"type": "ack", "version": 1, "draining": []}', "ack.draining: expected an object, got array"),
        ('{"type": "ack", "version": 1, "draining": {"r1": null}}',
         "ack.draining['r1']: expected an integer, got null"),
        ('{"type": "stats", "bucket": 1}', "stats.revisions: missing"),
        ('{"type": "stats", "bucket": 1, "revisions": {"ns/a": {"requests": 1}}}',
         "stats.revisions['ns/a'].concurrency: missing"),
        ('{"type": "stats", "bucket": 1, "revisions": {"ns/a": 3}}',
         "stats.revisions['ns/a']: expected an object, got integer"),
        ('{"type": "poke", "revision": "ns/a"}', "poke.waiting: missing"),
    ],
)
def test_malformed_up_messages_are_refused_with_the_reason(frame: str, reason: str) -> None:
    with pytest.raises(WireError) as err:
        decode_up(frame)
    assert reason in str(err.value)


def test_decoding_one_type_refuses_another() -> None:
    with pytest.raises(WireError, match="expected a 'hello' message, got 'ack'"):
        Hello.decode(Ack(1).encode())


# --- down messages -------------------------------------------------------------------------

BROKER_FIELDS_ADDED = {"backend": "sqlite", "stream": ""}
"""Broker entry fields added after the fixtures were written, with their defaults."""


def without_added_fields(encoded: bytes) -> object:
    """`encoded` parsed, the fields added since the fixtures dropped (each at its default): the
    brokers' backend fields, the endpoints' `owner` and the snapshot's `peers` (subsetting)."""
    obj = orjson.loads(encoded)
    snap = obj.get("snapshot", obj)
    for broker in snap.get("brokers", []):
        for name, default in BROKER_FIELDS_ADDED.items():
            assert broker.pop(name) == default
    for rev in snap.get("revisions", []):
        for ep in rev["endpoints"]:
            assert ep.pop("owner") == ""
    assert snap.pop("peers") == []
    return obj


def test_the_previous_controllers_snapshot_frame_decodes_and_encodes_the_same() -> None:
    frame = (FIXTURES / "snapshot-message.json").read_bytes()
    message = decode_down(frame)
    assert message == SnapshotMessage(fixture_snapshot())
    assert without_added_fields(message.encode().encode()) == orjson.loads(frame)
    assert SnapshotMessage.decode(frame.decode()) == message


def test_snapshot_round_trips_through_orjson() -> None:
    snap = snapshot()
    assert decode_down(down(snap)) == SnapshotMessage(snap)
    assert decode_down(down(snap).decode()) == SnapshotMessage(snap)
    assert decode_down(SnapshotMessage(snap).encode()) == SnapshotMessage(snap)
    assert SnapshotMessage(snap).encode().encode() == down(snap)


def test_empty_snapshot_decodes() -> None:
    assert decode_down(down(Snapshot(version=1, routes=(), revisions=()))) == SnapshotMessage(
        Snapshot(1, (), ()))


def test_unknown_message_types_are_ignored() -> None:
    assert decode_down('{"type": "resync-please", "x": 1}') is None


def test_unknown_fields_of_a_newer_controller_are_ignored() -> None:
    wire = orjson.loads((FIXTURES / "snapshot-message.json").read_bytes())
    wire["compression"] = "none"
    wire["snapshot"]["generation"] = 4
    wire["snapshot"]["routes"][0]["retries"] = {"attempts": 3}
    wire["snapshot"]["revisions"][0]["endpoints"][0]["zone"] = "a"
    wire["snapshot"]["brokers"][0]["ordering"] = "unordered"
    assert decode_down(orjson.dumps(wire)) == SnapshotMessage(fixture_snapshot())


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "invalid JSON"),
        ("", "invalid JSON"),
        ("[1, 2]", "expected an object, got array"),
        ('"snapshot"', "expected an object, got string"),
        ("{}", "'type' is missing"),
        ('{"type": 5}', "'type' is missing or not a string"),
        ('{"type": "snapshot"}', "snapshot: missing"),
        ('{"type": "snapshot", "snapshot": []}', "snapshot: expected an object, got array"),
        ('{"type": "snapshot", "snapshot": {"version": 1}}', "snapshot.routes: missing"),
        ('{"type": "snapshot", "snapshot": {"version": "x", "routes": [], "revisions": []}}',
         "snapshot.version: expected an integer, got string"),
        ('{"type": "snapshot", "snapshot": {"version": 1, "routes": [{"name": "a"}], '
         '"revisions": []}}', "snapshot.routes[0].namespace: missing"),
        ('{"type": "snapshot", "snapshot": {"version": 1, "routes": [{"namespace": "d", '
         '"name": "a", "hosts": "a.d.localhost", "traffic": [], "tags": []}], "revisions": []}}',
         "snapshot.routes[0].hosts: expected an array, got string"),
        ('{"type": "snapshot", "snapshot": {"version": 1, "routes": [], "revisions": [], '
         '"brokers": null}}', "snapshot.brokers: expected an array, got null"),
    ],
)
def test_malformed_down_messages_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(WireError) as err:
        decode_down(text)
    assert reason in str(err.value)


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("revisions", 0, "timeout_s"), "300", "snapshot.revisions[0].timeout_s: expected a number"),
        (("revisions", 0, "endpoints", 1, "port"), 1.5,
         "snapshot.revisions[0].endpoints[1].port: expected an integer, got number"),
        (("revisions", 0, "endpoints", 1, "starting"), 1,
         "snapshot.revisions[0].endpoints[1].starting: expected a boolean, got integer"),
        (("routes", 0, "traffic", 1, "percent"), None,
         "snapshot.routes[0].traffic[1].percent: expected an integer, got null"),
        (("routes", 0, "tags", 0, "hosts", 0), 5, "snapshot.routes[0].tags[0].hosts[0]: expected a string"),
        (("routes", 1, "cluster_local"), "yes", "snapshot.routes[1].cluster_local: expected a boolean"),
        (("brokers", 1, "durable"), 0, "snapshot.brokers[1].durable: expected a boolean"),
    ],
)
def test_a_bad_field_deep_in_a_snapshot_is_named(
    path: tuple[str | int, ...], value: object, reason: str
) -> None:
    wire = orjson.loads((FIXTURES / "snapshot-message.json").read_bytes())
    node = wire["snapshot"]
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    with pytest.raises(WireError) as err:
        decode_down(orjson.dumps(wire))
    assert reason in str(err.value)


def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(WireError, ValueError)


# --- persistence ---------------------------------------------------------------------------


def test_no_persisted_snapshot_loads_as_none(tmp_path: Path) -> None:
    assert load_snapshot_file(tmp_path / "gateway" / "snapshot.json") is None


def test_persisted_snapshot_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "gateway" / "snapshot.json"
    assert persist_snapshot_file(path, snapshot(3))
    assert load_snapshot_file(path) == snapshot(3)
    assert sorted(p.name for p in path.parent.iterdir()) == ["snapshot.json", "snapshot.json.lock"]


def test_persist_keeps_the_newest_version(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    assert persist_snapshot_file(path, snapshot(5))
    assert not persist_snapshot_file(path, snapshot(4))
    assert not persist_snapshot_file(path, snapshot(5))
    assert load_snapshot_file(path) == snapshot(5)
    assert persist_snapshot_file(path, snapshot(6))
    assert load_snapshot_file(path) == snapshot(6)


def test_persist_overwrites_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    path.write_bytes(b"{trunc")
    with pytest.raises(WireError, match="invalid JSON"):
        load_snapshot_file(path)
    assert persist_snapshot_file(path, snapshot(2))
    assert load_snapshot_file(path) == snapshot(2)


def test_the_previous_gateways_persisted_snapshot_loads(tmp_path: Path) -> None:
    fixture = (FIXTURES / "snapshot-file.json").read_bytes()
    path = tmp_path / "gateway" / "snapshot.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(fixture)
    assert load_snapshot_file(path) == fixture_snapshot()
    # and is written the same way, but for the fields added since (at their defaults)
    assert without_added_fields(encode_snapshot(fixture_snapshot())) == orjson.loads(fixture)
    assert not persist_snapshot_file(path, fixture_snapshot())  # same version: kept as it is
    assert path.read_bytes() == fixture


def test_a_snapshot_of_the_first_release_loads_with_the_later_fields_defaulted(
    tmp_path: Path,
) -> None:
    """Before `service`, `failure`, `starting`, `cluster_local` and `brokers` existed."""
    old = {
        "version": 3,
        "routes": [{"namespace": "default", "name": "hello", "hosts": ["hello.default.localhost"],
                    "traffic": [{"revision": "hello-00001", "percent": 100}], "tags": []}],
        "revisions": [{"namespace": "default", "name": "hello-00001", "timeout_s": 300.0,
                       "response_start_timeout_s": 300.0, "idle_timeout_s": 0.0,
                       "container_concurrency": 0,
                       "endpoints": [{"id": "r1", "host": "127.0.0.1", "port": 40001}]}],
    }
    path = tmp_path / "snapshot.json"
    path.write_bytes(orjson.dumps(old))
    loaded = load_snapshot_file(path)
    assert loaded == decode_snapshot(old) == Snapshot(
        3,
        (RouteEntry("default", "hello", ("hello.default.localhost",),
                    (TrafficSplit("hello-00001", 100),), ()),),
        (RevisionTarget("default", "hello-00001", "", 300.0, 300.0, 0.0, 0,
                        (Endpoint("r1", "127.0.0.1", 40001),)),),
    )


def test_concurrent_writers_end_with_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    versions = list(range(1, 41))
    threads = [
        threading.Thread(target=persist_snapshot_file, args=(path, snapshot(v)))
        for v in reversed(versions)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert load_snapshot_file(path) == snapshot(40)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


# --- cluster-local routes (a field newer than some persisted snapshots) ---------------------


def test_a_cluster_local_route_round_trips() -> None:
    snap = snapshot()
    local = dataclasses.replace(snap.routes[0], cluster_local=True)
    snap = dataclasses.replace(snap, routes=(local,))
    wire = orjson.loads(down(snap))["snapshot"]
    assert wire["routes"][0]["cluster_local"] is True
    decoded = decode_down(down(snap))
    assert isinstance(decoded, SnapshotMessage)
    assert decoded.snapshot == snap and decoded.snapshot.routes[0].cluster_local


def test_a_snapshot_written_before_cluster_local_existed_decodes_as_public(tmp_path: Path) -> None:
    wire = orjson.loads(orjson.dumps(snapshot(7)))
    for route in wire["routes"]:
        del route["cluster_local"]  # what an older Flint wrote
    assert decode_snapshot(wire) == snapshot(7)
    assert not decode_snapshot(wire).routes[0].cluster_local
    path = tmp_path / "gateway" / "snapshot.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(orjson.dumps(wire))  # a persisted snapshot left by the older gateway
    loaded = load_snapshot_file(path)
    assert loaded == snapshot(7) and not loaded.routes[0].cluster_local


# --- subsetting: Hello's peer, the endpoints' owner, the snapshot's peers -----------------


def test_a_hello_with_a_peer_listener_round_trips_and_names_its_gateway() -> None:
    for peer, text in ((("10.0.0.7", 8090), "10.0.0.7:8090"), (("fd00::7", 8090), "[fd00::7]:8090")):
        msg = Hello("gw-a/1", 3, peer)
        assert msg.to_wire()["peer"] == text
        assert decode_up(msg.encode()) == msg
    assert Hello("gw-a/1", 3).gateway == "gw-a" and Hello("solo", 0).gateway == "solo"
    assert "peer" not in Hello("gw/0", 0).to_wire()  # as an older controller expects


@pytest.mark.parametrize("peer", ["10.0.0.7", "name:80", "10.0.0.7:0", 8090])
def test_a_hello_with_a_bad_peer_is_refused_naming_the_field(peer: object) -> None:
    with pytest.raises(WireError, match=r"hello\.peer"):
        decode_up(orjson.dumps({"type": "hello", "worker": "gw/0", "version": 0, "peer": peer}))


def test_owners_and_peers_round_trip() -> None:
    base = fixture_snapshot()
    rev = base.revisions[0]
    owned = replace(base, peers=(Peer("gw-a", "10.0.0.1", 8090),), revisions=(
        replace(rev, endpoints=tuple(replace(e, owner="gw-a") for e in rev.endpoints)),
        *base.revisions[1:]))
    assert decode_snapshot(orjson.loads(encode_snapshot(owned))) == owned
    assert decode_down(SnapshotMessage(owned).encode()) == SnapshotMessage(owned)


def test_a_hello_says_which_replicas_its_gateway_owns_and_older_ones_say_none() -> None:
    hello = Hello("gw-a/0", 7, ("10.0.0.1", 8090), ("r1", "r2"))
    assert decode_up(hello.encode()) == hello
    old = orjson.dumps({"type": "hello", "worker": "gw-a/0", "version": 7})
    assert decode_up(old) == Hello("gw-a/0", 7)
    with pytest.raises(WireError, match=r"hello\.owned"):
        decode_up(orjson.dumps({"type": "hello", "worker": "gw/0", "version": 0, "owned": "r1"}))
