"""Broker ingress: request classification, TTL/arrival stamping and storing events in a broker's log.

The log and the dispatcher wake-up are in-memory fakes; no sockets, no SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from flint_common.channellog.format import CHANNEL
from flint_common.channellog.wake import WakeSender
from flint_common.cloudevents.codec import Event, InvalidEvent
from flint_common.cloudevents.knative import DEFAULT_TTL
from flint_common.snapshot import BrokerEntry, Snapshot
from gateway.channels.base import ChannelLog
from gateway.home import home_index
from gateway.ingress import Answer, BrokerIngress, classify, home_key, stamp

NOW = 1_700_000_000.5
"""2023-11-14T22:13:20.5Z"""


# ------------------------------------------------------------------------------------------
# fakes
# ------------------------------------------------------------------------------------------


class FakeLog:
    """A minimal in-memory ChannelLog: records per channel, each `append` call remembered."""

    def __init__(self, *, fail: Exception | None = None) -> None:
        self.channels: dict[str, list[bytes]] = {}
        self.appends: list[tuple[str, list[bytes]]] = []
        self.closed = 0
        self.fail = fail

    async def append(self, channel: str, records: Sequence[bytes]) -> list[int]:
        if self.fail is not None:
            raise self.fail
        self.appends.append((channel, list(records)))
        stored = self.channels.setdefault(channel, [])
        first = len(stored) + 1
        stored.extend(records)
        return list(range(first, first + len(records)))

    async def read(self, channel: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        stored = self.channels.get(channel, [])
        return [(i + 1, r) for i, r in enumerate(stored) if i + 1 > after][:limit]

    async def tail(self, channel: str) -> int:
        return len(self.channels.get(channel, []))

    async def wait(self, channel: str, after: int, timeout: float) -> bool:  # noqa: ASYNC109 - the API
        return len(self.channels.get(channel, [])) > after

    async def compact(self, channel: str, below: int) -> int:
        return 0

    async def apply_retention(
        self, channel: str, *, max_age_s: float | None, max_records: int | None, keep_from: int
    ) -> int:
        return 0

    async def delete_channel(self, channel: str) -> None:
        self.channels.pop(channel, None)

    async def close(self) -> None:
        self.closed += 1


class FakeWake(WakeSender):
    """Records the wake-ups. Subclasses the real sender only so that mypy checks the overrides'
    signatures; never calls its __init__, so no socket is made."""

    def __init__(self) -> None:
        self.notified: list[str] = []
        self.closed = False

    def notify(self, log_id: str) -> None:
        self.notified.append(log_id)

    def close(self) -> None:
        self.closed = True


class LogFactory:
    """`open_log=`: a new FakeLog per call, remembering which entry each was opened for."""

    def __init__(self, *, fail: Exception | None = None) -> None:
        self.opened: list[tuple[BrokerEntry, FakeLog]] = []
        self.fail = fail

    def __call__(self, entry: BrokerEntry) -> ChannelLog:
        log = FakeLog(fail=self.fail)
        self.opened.append((entry, log))
        return log


def entry(uid: str = "uid-1", name: str = "default", namespace: str = "ns") -> BrokerEntry:
    return BrokerEntry(namespace=namespace, name=name, uid=uid, log=f"eventing/logs/{uid}.db")


def snapshot(*brokers: BrokerEntry, version: int = 1) -> Snapshot:
    return Snapshot(version=version, routes=(), revisions=(), brokers=brokers)


def make_ingress(
    tmp_path: Path, factory: LogFactory, *, max_event_bytes: int = 64 * 1024, workers: int = 1, index: int = 0
) -> tuple[BrokerIngress, FakeWake]:
    wake = FakeWake()
    ingress = BrokerIngress(
        tmp_path,
        "localhost",
        worker_index=index,
        workers=workers,
        max_event_bytes=max_event_bytes,
        wake=wake,
        clock=lambda: NOW,
        open_log=factory,
    )
    return ingress, wake


def binary(event_id: str = "e1", *, ttl: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"ce-specversion", b"1.0"),
        (b"ce-id", event_id.encode()),
        (b"ce-source", b"/test"),
        (b"ce-type", b"com.example.test"),
        (b"content-type", b"application/json"),
    ]
    if ttl is not None:
        headers.append((b"ce-knativebrokerttl", ttl.encode()))
    return headers


def structured(event_id: str, **extra: object) -> dict[str, object]:
    return {"specversion": "1.0", "id": event_id, "source": "/test", "type": "com.example.test", **extra}


def ev(**extra: object) -> Event:
    return Event({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", **extra})  # type: ignore[dict-item]


# ------------------------------------------------------------------------------------------
# classify
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [b"/ns/name", b"/ns/name/", b"/ns/name?x=1", b"/ns/name/?x=1&y=2"]
)
def test_classify_post_to_a_broker_path_names_it(path: bytes) -> None:
    assert classify(b"POST", path) == ("ns", "name")


@pytest.mark.parametrize("method", [b"GET", b"PUT", b"DELETE", b"PATCH", b"HEAD"])
def test_classify_other_methods_are_405_with_allow(method: bytes) -> None:
    answer = classify(method, b"/ns/name")
    assert isinstance(answer, Answer)
    assert answer.status == 405
    assert (b"Allow", b"POST, OPTIONS") in answer.headers
    assert method.decode() in answer.message


def test_classify_options_is_200_with_allow_only_without_webhook_origin() -> None:
    answer = classify(b"OPTIONS", b"/ns/name")
    assert isinstance(answer, Answer)
    assert answer.status == 200
    assert answer.headers == ((b"Allow", b"POST, OPTIONS"),)


def test_classify_options_answers_webhook_validation() -> None:
    answer = classify(b"OPTIONS", b"/ns/name", [(b"WebHook-Request-Origin", b"eventemitter.example.com")])
    assert isinstance(answer, Answer)
    assert answer.status == 200
    headers = dict(answer.headers)
    assert headers[b"Allow"] == b"POST, OPTIONS"
    assert headers[b"WebHook-Allowed-Origin"] == b"eventemitter.example.com"
    assert headers[b"WebHook-Allowed-Rate"] == b"*"


def test_classify_webhook_origin_header_name_is_case_insensitive() -> None:
    answer = classify(b"OPTIONS", b"/ns/name", [(b"webhook-request-origin", b"o.example")])
    assert isinstance(answer, Answer)
    assert dict(answer.headers)[b"WebHook-Allowed-Origin"] == b"o.example"


@pytest.mark.parametrize("path", [b"/", b"", b"/ns", b"/ns/", b"/a/b/c", b"//name", b"ns/name"])
@pytest.mark.parametrize("method", [b"POST", b"GET", b"OPTIONS"])
def test_classify_bad_paths_are_404(path: bytes, method: bytes) -> None:
    answer = classify(method, path)
    assert isinstance(answer, Answer)
    assert answer.status == 404


# ------------------------------------------------------------------------------------------
# stamp
# ------------------------------------------------------------------------------------------


def test_stamp_sets_arrival_time_and_default_ttl() -> None:
    out = stamp(ev(), NOW)
    assert out is not None
    assert out.get("knativebrokerttl") == DEFAULT_TTL == 255
    arrival = out.get("knativearrivaltime")
    assert isinstance(arrival, str)
    assert arrival.endswith("Z")
    parsed = datetime.fromisoformat(arrival)
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == UTC.utcoffset(None)
    assert parsed.timestamp() == pytest.approx(NOW)
    assert arrival.startswith("2023-11-14T22:13:20")


def test_stamp_keeps_the_original_event_unchanged() -> None:
    original = ev()
    stamp(original, NOW)
    assert "knativebrokerttl" not in original.attributes
    assert "knativearrivaltime" not in original.attributes


@pytest.mark.parametrize(("given", "kept"), [(7, 7), ("7", 7), (" 12 ", 12), (1, 1), ("255", 255)])
def test_stamp_keeps_a_given_ttl(given: object, kept: int) -> None:
    out = stamp(ev(knativebrokerttl=given), NOW)
    assert out is not None
    assert out.get("knativebrokerttl") == kept


@pytest.mark.parametrize("ttl", [0, -1, "0", "-3"])
def test_stamp_exhausted_ttl_is_none(ttl: object) -> None:
    assert stamp(ev(knativebrokerttl=ttl), NOW) is None


@pytest.mark.parametrize("ttl", ["abc", "1.5", "", True, False])
def test_stamp_non_integer_ttl_is_invalid(ttl: object) -> None:
    with pytest.raises(InvalidEvent):
        stamp(ev(knativebrokerttl=ttl), NOW)


def test_stamp_overwrites_a_sent_arrival_time() -> None:
    out = stamp(ev(knativearrivaltime="2000-01-01T00:00:00Z"), NOW)
    assert out is not None
    assert out.get("knativearrivaltime") != "2000-01-01T00:00:00Z"


# ------------------------------------------------------------------------------------------
# accept
# ------------------------------------------------------------------------------------------


async def test_accept_binary_event_is_stored_stamped_and_wakes_the_dispatcher(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, wake = make_ingress(tmp_path, factory)
    broker = entry()
    answer = await ingress.accept(broker, binary("e1"), b'{"n": 1}')
    assert answer == Answer(202)
    assert len(factory.opened) == 1
    opened_for, log = factory.opened[0]
    assert opened_for == broker
    assert len(log.appends) == 1
    channel, records = log.appends[0]
    assert channel == CHANNEL
    assert len(records) == 1
    stored = Event.from_log(records[0])
    assert stored.id == "e1"
    assert stored.source == "/test"
    assert stored.type == "com.example.test"
    assert stored.datacontenttype == "application/json"
    assert stored.get("knativebrokerttl") == 255
    assert stored.get("knativearrivaltime") == stamp(ev(), NOW).get("knativearrivaltime")  # type: ignore[union-attr]
    assert stored.json() == {"n": 1}
    assert wake.notified == [broker.uid]
    assert ingress.metrics.accepted == {"ns/default": 1}
    assert ingress.metrics.rejected == {}


async def test_accept_binary_json_typed_data_that_is_not_json_is_stored_byte_for_byte(
    tmp_path: Path,
) -> None:
    factory = LogFactory()
    ingress, _ = make_ingress(tmp_path, factory)
    body = b"{ this is not JSON"
    assert await ingress.accept(entry(), binary("e1"), body) == Answer(202)
    stored = Event.from_log(factory.opened[0][1].appends[0][1][0])
    assert stored.data == body and not stored.data_is_json
    assert stored.datacontenttype == "application/json"
    assert stored.to_binary()[1] == body


async def test_accept_cloudevents_0_3_is_stored_as_0_3_and_stamped(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, _ = make_ingress(tmp_path, factory)
    doc = structured("v3", specversion="0.3", schemaurl="/s", datacontentencoding="base64", data="AAE=")
    headers = [(b"content-type", b"application/cloudevents+json")]
    assert await ingress.accept(entry(), headers, orjson.dumps(doc)) == Answer(202)
    stored = Event.from_log(factory.opened[0][1].appends[0][1][0])
    assert stored.attributes["specversion"] == "0.3" and stored.attributes["schemaurl"] == "/s"
    assert stored.data == b"\x00\x01" and stored.get("knativebrokerttl") == 255
    assert orjson.loads(stored.to_structured())["data"] == "AAE="


async def test_accept_reuses_the_log_for_the_same_broker(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, wake = make_ingress(tmp_path, factory)
    broker = entry()
    for i in range(3):
        assert (await ingress.accept(broker, binary(f"e{i}"), b"{}")).status == 202
    assert len(factory.opened) == 1
    assert len(factory.opened[0][1].channels[CHANNEL]) == 3
    assert wake.notified == [broker.uid] * 3
    assert ingress.metrics.accepted == {"ns/default": 3}


async def test_accept_batch_is_one_append(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, wake = make_ingress(tmp_path, factory)
    body = orjson.dumps([structured("a"), structured("b", data={"x": 2}), structured("c")])
    headers = [(b"content-type", b"application/cloudevents-batch+json")]
    answer = await ingress.accept(entry(), headers, body)
    assert answer.status == 202
    log = factory.opened[0][1]
    assert len(log.appends) == 1
    records = log.appends[0][1]
    events = [Event.from_log(r) for r in records]
    assert [e.id for e in events] == ["a", "b", "c"]
    assert all(e.get("knativebrokerttl") == 255 for e in events)
    assert events[1].json() == {"x": 2}
    assert wake.notified == ["uid-1"]
    assert ingress.metrics.accepted == {"ns/default": 3}


async def test_accept_invalid_event_is_400_and_stores_nothing(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, wake = make_ingress(tmp_path, factory)
    headers = [h for h in binary("e1") if h[0] != b"ce-source"]
    answer = await ingress.accept(entry(), headers, b"{}")
    assert answer.status == 400
    assert "source" in answer.message
    assert not answer.retry_after
    assert all(not log.appends for _, log in factory.opened)
    assert wake.notified == []
    assert ingress.metrics.rejected == {("ns/default", "invalid-event"): 1}
    assert ingress.metrics.accepted == {}


async def test_accept_not_a_cloud_event_is_400(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, _ = make_ingress(tmp_path, factory)
    answer = await ingress.accept(entry(), [(b"content-type", b"text/plain")], b"hello")
    assert answer.status == 400
    assert ingress.metrics.rejected == {("ns/default", "invalid-event"): 1}


async def test_accept_non_integer_ttl_is_400(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, _ = make_ingress(tmp_path, factory)
    answer = await ingress.accept(entry(), binary("e1", ttl="lots"), b"{}")
    assert answer.status == 400
    assert "knativebrokerttl" in answer.message
    assert all(not log.appends for _, log in factory.opened)
    assert ingress.metrics.rejected == {("ns/default", "invalid-event"): 1}


async def test_accept_batch_with_one_bad_event_stores_none(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, _ = make_ingress(tmp_path, factory)
    bad = {"specversion": "1.0", "id": "b", "type": "t"}  # no source
    body = orjson.dumps([structured("a"), bad, structured("c")])
    answer = await ingress.accept(entry(), [(b"content-type", b"application/cloudevents-batch+json")], body)
    assert answer.status == 400
    assert "event 1" in answer.message
    assert all(not log.appends for _, log in factory.opened)


async def test_accept_batch_with_a_bad_ttl_names_the_event(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, _ = make_ingress(tmp_path, factory)
    body = orjson.dumps([structured("a"), structured("b", knativebrokerttl="lots")])
    answer = await ingress.accept(entry(), [(b"content-type", b"application/cloudevents-batch+json")], body)
    assert answer.status == 400
    assert "event 1" in answer.message


async def test_accept_too_large_is_413(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, wake = make_ingress(tmp_path, factory, max_event_bytes=64)
    answer = await ingress.accept(entry(), binary("e1"), b'{"pad": "' + b"x" * 200 + b'"}')
    assert answer.status == 413
    assert all(not log.appends for _, log in factory.opened)
    assert wake.notified == []
    assert ingress.metrics.rejected == {("ns/default", "too-large"): 1}


async def test_accept_unsupported_format_is_415(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, _ = make_ingress(tmp_path, factory)
    answer = await ingress.accept(entry(), [(b"content-type", b"application/cloudevents+xml")], b"<event/>")
    assert answer.status == 415
    assert all(not log.appends for _, log in factory.opened)
    assert ingress.metrics.rejected == {("ns/default", "unsupported-format"): 1}


async def test_accept_log_failure_is_503_with_retry_after(tmp_path: Path) -> None:
    factory = LogFactory(fail=OSError("disk full"))
    ingress, wake = make_ingress(tmp_path, factory)
    answer = await ingress.accept(entry(), binary("e1"), b"{}")
    assert answer.status == 503
    assert answer.retry_after is True
    assert "disk full" in answer.message
    assert wake.notified == []
    assert ingress.metrics.rejected == {("ns/default", "log-unavailable"): 1}
    assert ingress.metrics.accepted == {}


async def test_accept_reopens_the_log_after_a_failure(tmp_path: Path) -> None:
    factory = LogFactory(fail=OSError("disk full"))
    ingress, _ = make_ingress(tmp_path, factory)
    assert (await ingress.accept(entry(), binary("e1"), b"{}")).status == 503
    factory.fail = None
    assert (await ingress.accept(entry(), binary("e2"), b"{}")).status == 202
    assert len(factory.opened) == 2
    assert factory.opened[1][1].channels[CHANNEL]


async def test_accept_exhausted_ttl_is_202_but_dropped(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, wake = make_ingress(tmp_path, factory)
    answer = await ingress.accept(entry(), binary("e1", ttl="0"), b"{}")
    assert answer.status == 202
    assert all(not log.appends for _, log in factory.opened)
    assert wake.notified == []
    assert ingress.metrics.dropped_ttl == {"ns/default": 1}
    assert ingress.metrics.accepted.get("ns/default", 0) == 0


async def test_accept_batch_stores_only_events_with_ttl_left(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, wake = make_ingress(tmp_path, factory)
    body = orjson.dumps(
        [structured("a", knativebrokerttl=0), structured("b", knativebrokerttl=3), structured("c")]
    )
    answer = await ingress.accept(entry(), [(b"content-type", b"application/cloudevents-batch+json")], body)
    assert answer.status == 202
    records = factory.opened[0][1].appends[0][1]
    events = [Event.from_log(r) for r in records]
    assert [(e.id, e.get("knativebrokerttl")) for e in events] == [("b", 3), ("c", 255)]
    assert ingress.metrics.dropped_ttl == {"ns/default": 1}
    assert ingress.metrics.accepted == {"ns/default": 2}
    assert wake.notified == ["uid-1"]


async def test_close_closes_logs_and_wake(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, wake = make_ingress(tmp_path, factory)
    await ingress.accept(entry(), binary("e1"), b"{}")
    await ingress.close()
    assert factory.opened[0][1].closed == 1
    assert wake.closed


# ------------------------------------------------------------------------------------------
# matches
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"broker-ingress.localhost", True),
        (b"broker-ingress.localhost:8080", True),
        (b"broker-ingress.localhostx", False),
        (b"broker-ingress.localhostx:8080", False),
        (b"broker-ingress.localhost.evil", False),
        (b"other.localhost", False),
        (b"broker-ingress.", False),
        (b"", False),
    ],
)
def test_matches(tmp_path: Path, host: bytes, expected: bool) -> None:
    ingress, _ = make_ingress(tmp_path, LogFactory())
    assert ingress.matches(host) is expected


# ------------------------------------------------------------------------------------------
# apply
# ------------------------------------------------------------------------------------------


def touch_log_files(state_dir: Path, broker: BrokerEntry) -> list[Path]:
    base = state_dir / broker.log
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [Path(str(base) + suffix) for suffix in ("", "-wal", "-shm", ".lock")]
    for p in paths:
        p.write_bytes(b"x")
    return paths


async def test_apply_makes_brokers_known(tmp_path: Path) -> None:
    ingress, _ = make_ingress(tmp_path, LogFactory())
    broker = entry()
    ingress.apply(snapshot(broker))
    assert ingress.lookup("ns", "default") == broker
    assert ingress.lookup("ns", "other") is None
    assert ingress.lookup("other", "default") is None


async def test_apply_retires_a_deleted_broker_at_its_home(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, _ = make_ingress(tmp_path, factory)
    broker = entry()
    keep = entry(uid="uid-keep", name="keep")
    ingress.apply(snapshot(broker, keep))
    await ingress.accept(broker, binary("e1"), b"{}")
    paths = touch_log_files(tmp_path, broker)
    kept_paths = touch_log_files(tmp_path, keep)
    ingress.apply(snapshot(keep, version=2))
    await ingress.close()
    assert factory.opened[0][1].closed >= 1
    assert [p for p in paths if p.exists()] == []
    assert all(p.exists() for p in kept_paths)
    assert ingress.lookup("ns", "default") is None


async def test_apply_deletes_files_of_a_broker_never_written_here(tmp_path: Path) -> None:
    ingress, _ = make_ingress(tmp_path, LogFactory())
    broker = entry()
    ingress.apply(snapshot(broker))
    paths = touch_log_files(tmp_path, broker)
    ingress.apply(snapshot(version=2))
    await ingress.close()
    assert [p for p in paths if p.exists()] == []


async def test_apply_leaves_files_alone_away_from_home(tmp_path: Path) -> None:
    broker = entry()
    workers = 4
    home = home_index(home_key(broker), workers)
    ingress, _ = make_ingress(tmp_path, LogFactory(), workers=workers, index=(home + 1) % workers)
    assert not ingress.is_home(broker)
    ingress.apply(snapshot(broker))
    paths = touch_log_files(tmp_path, broker)
    ingress.apply(snapshot(version=2))
    await ingress.close()
    assert all(p.exists() for p in paths)


async def test_apply_unchanged_broker_keeps_its_log(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, _ = make_ingress(tmp_path, factory)
    broker = entry()
    ingress.apply(snapshot(broker))
    await ingress.accept(broker, binary("e1"), b"{}")
    paths = touch_log_files(tmp_path, broker)
    ingress.apply(snapshot(broker, version=2))
    await ingress.accept(broker, binary("e2"), b"{}")
    assert len(factory.opened) == 1
    assert factory.opened[0][1].closed == 0
    assert all(p.exists() for p in paths)
    await ingress.close()


async def test_apply_recreated_broker_gets_a_fresh_log(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, wake = make_ingress(tmp_path, factory)
    old = entry(uid="uid-old")
    new = entry(uid="uid-new")
    ingress.apply(snapshot(old))
    await ingress.accept(old, binary("e1"), b"{}")
    old_paths = touch_log_files(tmp_path, old)
    ingress.apply(snapshot(new, version=2))
    assert ingress.lookup("ns", "default") == new
    assert (await ingress.accept(new, binary("e2"), b"{}")).status == 202
    await ingress.close()
    assert [e.uid for e, _ in factory.opened] == ["uid-old", "uid-new"]
    old_log, new_log = factory.opened[0][1], factory.opened[1][1]
    assert old_log is not new_log
    assert old_log.closed >= 1
    assert [Event.from_log(r).id for r in old_log.channels[CHANNEL]] == ["e1"]
    assert [Event.from_log(r).id for r in new_log.channels[CHANNEL]] == ["e2"]
    assert [p for p in old_paths if p.exists()] == []
    assert wake.notified == ["uid-old", "uid-new"]


async def test_accept_with_a_new_uid_before_apply_switches_logs(tmp_path: Path) -> None:
    factory = LogFactory()
    ingress, _ = make_ingress(tmp_path, factory)
    await ingress.accept(entry(uid="uid-old"), binary("e1"), b"{}")
    await ingress.accept(entry(uid="uid-new"), binary("e2"), b"{}")
    await ingress.close()
    assert [e.uid for e, _ in factory.opened] == ["uid-old", "uid-new"]
    assert factory.opened[0][1].closed >= 1
    assert [Event.from_log(r).id for r in factory.opened[1][1].channels[CHANNEL]] == ["e2"]


def test_fake_log_is_a_channel_log() -> None:
    assert isinstance(FakeLog(), ChannelLog)
