"""The Redis key layout of a log: one hash tag per log, consumer parts validated."""

from __future__ import annotations

import pytest

from flint_common.redis_keys import (
    consumer_key,
    consumer_pattern,
    log_pattern,
    stream_key,
    trim_lock_key,
)


def test_every_key_of_a_log_carries_its_hash_tag() -> None:
    keys = [stream_key("u1"), consumer_key("u1", "t1", "retries"), consumer_key("u1", "t1", "lease"),
            trim_lock_key("u1")]
    assert all("{u1}" in k and k.startswith("flint:{u1}:") for k in keys)
    assert trim_lock_key("u1") == "flint:{u1}:trim"
    assert stream_key("u1") == "flint:{u1}:events"
    assert consumer_key("u1", "t1", "dead") == "flint:{u1}:c:t1:dead"
    assert consumer_key("u1", "t1", "retryfloor") == "flint:{u1}:c:t1:retryfloor"
    assert log_pattern("u1") == "flint:{u1}:*"
    assert consumer_pattern("u1", "t1") == "flint:{u1}:c:t1:*"


@pytest.mark.parametrize("uid", ["", "a}b", "a{b", "a*", "a b"])
def test_a_uid_that_would_break_the_tag_or_a_pattern_is_refused(uid: str) -> None:
    with pytest.raises(ValueError, match="not a log uid"):
        stream_key(uid)
    with pytest.raises(ValueError, match="not a consumer uid"):
        consumer_key("u1", uid or ":", "retries")


def test_an_unknown_part_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown consumer key part"):
        consumer_key("u1", "t1", "positions")
