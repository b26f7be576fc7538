"""The controller link's message codec and snapshot persistence, without sockets."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import orjson
import pytest

from gateway.config import (
    Endpoint,
    RevisionTarget,
    RouteEntry,
    Snapshot,
    TagTarget,
    TrafficSplit,
)
from gateway.link import (
    LinkProtocolError,
    decode_down,
    encode_ack,
    encode_hello,
    load_snapshot_file,
    persist_snapshot_file,
)


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


# --- up messages ---------------------------------------------------------------------------


def test_hello_names_worker_and_version() -> None:
    msg = orjson.loads(encode_hello("gw/1", 7))
    assert msg == {"type": "hello", "worker": "gw/1", "version": 7}


def test_hello_before_any_snapshot_says_version_zero() -> None:
    assert orjson.loads(encode_hello("gw/0", 0))["version"] == 0


def test_ack_carries_version_and_draining_map() -> None:
    assert orjson.loads(encode_ack(4, {"r1": 2, "r9": 1})) == {
        "type": "ack",
        "version": 4,
        "draining": {"r1": 2, "r9": 1},
    }


def test_ack_with_nothing_draining_has_an_empty_object() -> None:
    assert orjson.loads(encode_ack(1, {})) == {"type": "ack", "version": 1, "draining": {}}


def test_up_messages_are_text() -> None:
    assert isinstance(encode_hello("gw/0", 1), str)
    assert isinstance(encode_ack(1, {}), str)


# --- down messages -------------------------------------------------------------------------


def test_snapshot_round_trips_through_orjson() -> None:
    snap = snapshot()
    assert decode_down(down(snap)) == snap
    assert decode_down(down(snap).decode()) == snap


def test_empty_snapshot_decodes() -> None:
    assert decode_down(down(Snapshot(version=1, routes=(), revisions=()))) == Snapshot(1, (), ())


def test_unknown_message_types_are_ignored() -> None:
    assert decode_down('{"type": "resync-please", "x": 1}') is None


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "",
        "[1, 2]",
        '"snapshot"',
        "{}",
        '{"type": 5}',
        '{"type": "snapshot"}',
        '{"type": "snapshot", "snapshot": []}',
        '{"type": "snapshot", "snapshot": {"version": 1}}',
        '{"type": "snapshot", "snapshot": {"version": "x", "routes": [], "revisions": []}}',
        '{"type": "snapshot", "snapshot": {"version": 1, "routes": [{"name": "a"}], '
        '"revisions": []}}',
    ],
)
def test_malformed_down_messages_raise(text: str) -> None:
    with pytest.raises(LinkProtocolError):
        decode_down(text)


def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(LinkProtocolError, ValueError)


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
    with pytest.raises(orjson.JSONDecodeError):
        load_snapshot_file(path)
    assert persist_snapshot_file(path, snapshot(2))
    assert load_snapshot_file(path) == snapshot(2)


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
    assert decoded == snap and decoded.routes[0].cluster_local


def test_a_snapshot_written_before_cluster_local_existed_decodes_as_public(tmp_path: Path) -> None:
    wire = orjson.loads(orjson.dumps(snapshot(7)))
    for route in wire["routes"]:
        del route["cluster_local"]  # what an older Flint wrote
    assert Snapshot.from_wire(wire) == snapshot(7)
    assert not Snapshot.from_wire(wire).routes[0].cluster_local
    path = tmp_path / "gateway" / "snapshot.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(orjson.dumps(wire))  # a persisted snapshot left by the older gateway
    loaded = load_snapshot_file(path)
    assert loaded == snapshot(7) and not loaded.routes[0].cluster_local
