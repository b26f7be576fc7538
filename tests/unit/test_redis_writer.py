"""The Redis stream writer's batching without sockets: a fake transport stands for the pipeline."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

import pytest

from gateway.channels.redis_writer import (
    Pending,
    RedisStreamWriter,
    StreamAppendError,
    StreamGone,
    settle,
    take_batch,
)


class FakeTransport:
    """Records each pipeline; replies `n-0`, `n-1`… per XADD (and `replicas` to WAIT). With
    `gated`, each pipeline waits for `release()` before replying; `fail` raises instead."""

    def __init__(self, *, gated: bool = False, replicas: int = 0) -> None:
        self.pipelines: list[tuple[list[tuple[str, bytes]], int, int]] = []
        self.gated = gated
        self.replicas = replicas
        self.fail: Exception | None = None
        self.refuse: set[bytes] = set()
        """Records whose XADD Redis refuses (its error in place of the reply)."""
        self.gates: list[asyncio.Event] = []
        self.sent = asyncio.Event()
        self.warmed = 0
        self.closed = False
        self.count = 0

    async def send(
        self, entries: Sequence[tuple[str, bytes]], wait_replicas: int, wait_timeout_ms: int
    ) -> Sequence[object]:
        self.pipelines.append((list(entries), wait_replicas, wait_timeout_ms))
        self.sent.set()
        if self.gated:
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()
        if self.fail is not None:
            raise self.fail
        replies: list[object] = []
        for _, record in entries:
            self.count += 1
            replies.append(Exception(f"OOM for {record!r}") if record in self.refuse
                           else f"{self.count}-0".encode())
        if wait_replicas > 0:
            replies.append(self.replicas)
        return replies

    def release(self) -> None:
        self.gates.pop(0).set()

    def warm_up(self) -> None:
        self.warmed += 1

    async def close(self) -> None:
        self.closed = True


def pending(stream: str, *records: bytes) -> Pending:
    return Pending(stream, records, sum(map(len, records)), asyncio.get_running_loop().create_future())


async def until(check: Callable[[], bool], what: str) -> None:
    """Yield to the loop until `check()` holds (bounded in loop turns, not in time)."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0)
    pytest.fail(f"never: {what}")


# -- the pure parts ------------------------------------------------------------------------------


async def test_take_batch_takes_whole_requests_up_to_the_caps() -> None:
    q = deque([pending("s", b"a", b"b"), pending("s", b"c"), pending("t", b"d", b"e"), pending("s", b"f")])
    assert [p.records for p in take_batch(q, max_entries=3, max_bytes=100)] == [(b"a", b"b"), (b"c",)]
    assert [p.records for p in take_batch(q, max_entries=3, max_bytes=100)] == [(b"d", b"e"), (b"f",)]
    assert not q and take_batch(q, 3, 100) == []


async def test_take_batch_caps_bytes_and_sends_an_oversized_request_alone() -> None:
    q = deque([pending("s", b"x" * 10), pending("s", b"y" * 10), pending("s", b"z" * 50)])
    assert [len(p.records) for p in take_batch(q, max_entries=100, max_bytes=25)] == [1, 1]
    [big] = take_batch(q, max_entries=100, max_bytes=25)  # alone, whole, though over the cap
    assert big.records == (b"z" * 50,)
    q = deque([pending("s", *[b"r"] * 5), pending("s", b"r")])
    assert [len(p.records) for p in take_batch(q, max_entries=2, max_bytes=100)] == [5]


async def test_settle_gives_each_request_its_own_ids() -> None:
    batch = [pending("s", b"a", b"b"), pending("t", b"c")]
    assert settle(batch, [b"1-0", b"1-1", b"2-0"], 0, 1000) == [["1-0", "1-1"], ["2-0"]]


async def test_settle_a_refused_xadd_fails_its_request_only() -> None:
    batch = [pending("s", b"a"), pending("t", b"b", b"c"), pending("s", b"d")]
    out = settle(batch, [b"1-0", b"2-0", ValueError("READONLY You can't write against a read only replica."),
                         b"3-0"], 0, 1000)
    assert out[0] == ["1-0"] and out[2] == ["3-0"]
    assert isinstance(out[1], StreamAppendError) and "READONLY" in str(out[1]) and "to t" in str(out[1])


async def test_settle_a_nil_xadd_says_the_stream_is_gone_for_its_request_only() -> None:
    # XADD … NOMKSTREAM answers nil for a stream that does not exist: never made again here.
    batch = [pending("gone", b"a", b"b"), pending("there", b"c")]
    out = settle(batch, [b"1-0", None, b"2-0"], 0, 1000)
    assert isinstance(out[0], StreamGone) and "gone does not exist" in str(out[0])
    assert out[1] == ["2-0"]


async def test_settle_missing_replies_fail_every_request() -> None:
    out = settle([pending("s", b"a"), pending("s", b"b")], [b"1-0"], 0, 1000)
    assert all(isinstance(o, StreamAppendError) and "1 replies to a pipeline of 2" in str(o) for o in out)


@pytest.mark.parametrize("acked", [0, 1])
async def test_settle_too_few_replicas_fail_every_request(acked: int) -> None:
    out = settle([pending("s", b"a"), pending("s", b"b")], [b"1-0", b"1-1", acked], 2, 250)
    assert all(isinstance(o, StreamAppendError) for o in out)
    assert f"only {acked} of the 2 Redis replicas" in str(out[0]) and "250 ms" in str(out[0])


async def test_settle_enough_replicas_pass() -> None:
    assert settle([pending("s", b"a")], [b"1-0", 2], 2, 1000) == [["1-0"]]
    assert settle([pending("s", b"a")], [b"1-0", 3], 2, 1000) == [["1-0"]]


# -- the writer ------------------------------------------------------------------------------------


async def test_requests_of_one_loop_turn_share_one_pipeline() -> None:
    t = FakeTransport()
    w = RedisStreamWriter(t)
    ids = await asyncio.gather(w.append("s", [b"a"]), w.append("t", [b"b", b"c"]), w.append("s", [b"d"]))
    assert list(ids) == [["1-0"], ["2-0", "3-0"], ["4-0"]]
    assert t.pipelines == [([("s", b"a"), ("t", b"b"), ("t", b"c"), ("s", b"d")], 0, 1000)]
    assert (w.pipelines, w.entries) == (1, 4)


async def test_requests_during_a_pipeline_go_together_in_the_next() -> None:
    t = FakeTransport(gated=True)
    w = RedisStreamWriter(t)
    first = asyncio.ensure_future(w.append("s", [b"a"]))
    await until(lambda: len(t.gates) == 1, "the first pipeline in flight")
    later = [asyncio.ensure_future(w.append("s", [r])) for r in (b"b", b"c", b"d")]
    await until(lambda: len(w._queue) == 3, "three requests queued")
    assert len(t.pipelines) == 1 and not first.done()  # no reply yet: nobody is answered
    t.release()
    assert await first == ["1-0"]
    await until(lambda: len(t.gates) == 1, "the second pipeline")
    assert t.pipelines[1][0] == [("s", b"b"), ("s", b"c"), ("s", b"d")]
    assert not any(f.done() for f in later)
    t.release()
    assert [await f for f in later] == [["2-0"], ["3-0"], ["4-0"]]
    assert w.pipelines == 2 and w._task is None


async def test_a_transport_failure_fails_every_request_of_its_pipeline_and_the_next_one_recovers() -> None:
    t = FakeTransport()
    t.fail = ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
    w = RedisStreamWriter(t)
    results = await asyncio.gather(w.append("s", [b"a"]), w.append("s", [b"b"]), return_exceptions=True)
    assert all(isinstance(r, StreamAppendError) for r in results)
    assert "Redis did not answer (ConnectionError)" in str(results[0]) and "6390" not in str(results[0])
    assert isinstance(results[0], StreamAppendError)
    assert "Error 111 connecting to 127.0.0.1:6390" in results[0].detail  # for the log only
    t.fail = None
    assert await w.append("s", [b"c"]) == ["1-0"]


async def test_a_refused_record_fails_only_its_request() -> None:
    t = FakeTransport()
    t.refuse = {b"bad"}
    w = RedisStreamWriter(t)
    ok, bad = await asyncio.gather(w.append("s", [b"a"]), w.append("s", [b"x", b"bad"]),
                                   return_exceptions=True)
    assert ok == ["1-0"] and isinstance(bad, StreamAppendError) and "OOM" in str(bad)


async def test_min_replicas_sends_wait_last_and_fails_when_short() -> None:
    t = FakeTransport(replicas=0)
    w = RedisStreamWriter(t, min_replicas=1, wait_timeout_ms=300)
    with pytest.raises(StreamAppendError, match=r"only 0 of the 1 Redis replicas"):
        await w.append("s", [b"a"])
    assert t.pipelines == [([("s", b"a")], 1, 300)]
    t.replicas = 1
    assert await w.append("s", [b"b"]) == ["2-0"]


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    t = FakeTransport(gated=True)
    w = RedisStreamWriter(t)
    gone = asyncio.ensure_future(w.append("s", [b"a"]))
    kept = asyncio.ensure_future(w.append("s", [b"b"]))
    await until(lambda: len(t.gates) == 1, "the pipeline in flight")
    gone.cancel()
    t.release()
    assert await kept == ["2-0"]  # the cancelled request's entry was written all the same
    assert gone.cancelled()


async def test_empty_appends_send_nothing() -> None:
    t = FakeTransport()
    w = RedisStreamWriter(t)
    assert await w.append("s", []) == [] and t.pipelines == []


async def test_close_answers_what_is_in_flight_then_refuses() -> None:
    t = FakeTransport(gated=True)
    w = RedisStreamWriter(t)
    w.warm_up()
    assert t.warmed == 1
    flying = asyncio.ensure_future(w.append("s", [b"a"]))
    await until(lambda: len(t.gates) == 1, "the pipeline in flight")
    closing = asyncio.ensure_future(w.close())
    await asyncio.sleep(0)
    with pytest.raises(StreamAppendError, match="closed"):
        await w.append("s", [b"b"])
    t.release()
    await closing
    assert await flying == ["1-0"] and t.closed


async def test_a_cancelled_pipeline_fails_its_requests_and_the_queue() -> None:
    t = FakeTransport(gated=True)
    w = RedisStreamWriter(t)
    flying = asyncio.ensure_future(w.append("s", [b"a"]))
    await until(lambda: len(t.gates) == 1, "the pipeline in flight")
    queued = asyncio.ensure_future(w.append("s", [b"b"]))
    await asyncio.sleep(0)
    assert w._task is not None
    w._task.cancel()
    for f in (flying, queued):
        with pytest.raises(StreamAppendError, match="closed"):
            await f
    assert w._task is None and not w._queue


async def test_a_full_queue_refuses_at_once() -> None:
    t = FakeTransport(gated=True)
    w = RedisStreamWriter(t, max_queued_bytes=10)
    flying = asyncio.ensure_future(w.append("s", [b"x" * 8]))
    await until(lambda: len(t.gates) == 1, "the pipeline in flight")
    assert w.queued_bytes == 0  # sent: no longer queued
    queued = asyncio.ensure_future(w.append("s", [b"y" * 8]))
    await asyncio.sleep(0)
    assert w.queued_bytes == 8
    with pytest.raises(StreamAppendError, match="too many events are waiting for Redis"):
        await w.append("s", [b"z" * 4])
    t.release()
    await until(lambda: len(t.gates) == 1, "the next pipeline")
    t.release()
    assert await flying == ["1-0"] and await queued == ["2-0"] and w.queued_bytes == 0
    big = RedisStreamWriter(FakeTransport(), max_queued_bytes=10)
    assert await big.append("s", [b"w" * 50]) == ["1-0"]  # alone, an oversized request still goes


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RedisStreamWriter(FakeTransport(), max_entries=0)
