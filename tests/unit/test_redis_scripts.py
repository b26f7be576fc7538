"""The pure parts of the Redis consumer backend: stream ids, lease values, default settings, and
that every script touches only the keys it is given (one log's slot on a Redis Cluster)."""

from __future__ import annotations

import re

import pytest

from controller.eventing import redis_scripts
from controller.eventing.redis_consumer import RedisConsumerSettings
from controller.eventing.redis_scripts import (
    floor_score,
    lease_value,
    min_stream_id,
    parse_stream_id,
    text,
)


def test_stream_ids_sort_as_redis_orders_them() -> None:
    assert parse_stream_id(b"1700000000000-12") == (1700000000000, 12)
    assert parse_stream_id("5") == (5, 0)
    assert min_stream_id(["10-0", "9-5", "9-10"]) == "9-5"  # not the string order
    assert min_stream_id([]) is None
    with pytest.raises(ValueError):
        parse_stream_id("not-an-id")


def test_a_retry_s_floor_score_is_its_stream_id_s_millisecond_exactly() -> None:
    assert floor_score("1700000000123-7") == "1700000000123"
    assert float(floor_score("1700000000123-7") or 0) == 1700000000123  # a double holds it
    assert floor_score("0005-0") == "5"
    for not_a_stream_id in ("7", "abc", "1-x", "-1", "1--2", "１-0", "1234567890123456-0"):
        assert floor_score(not_a_stream_id) is None, not_a_stream_id


def test_text_and_lease_values() -> None:
    assert text(b"d-a") == "d-a" and text("d-a") == "d-a" and text(3) == "3"
    assert lease_value("host/abc", 7) == "host/abc|7"


def test_settings_defaults_follow_the_issue() -> None:
    s = RedisConsumerSettings()
    assert (s.claim_after_s, s.claim_heartbeat_s, s.lease_s) == (30.0, 5.0, 30.0)
    assert s.claim_heartbeat_s * 3 < s.claim_after_s  # a live holder beats well before a takeover
    assert s.block_ms / 1000 < 5.0  # below redis_conn's default socket timeout


SCRIPTS = [name for name in redis_scripts.__all__ if name.isupper()]


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_name_no_key_of_their_own(name: str) -> None:
    source = getattr(redis_scripts, name)
    assert "flint:" not in source
    for call in re.findall(r"redis\.call\('(\w+)', ([^,)]+)", source):
        command, first = call
        if command in {"XGROUP", "XINFO"}:
            continue  # their first argument is a subcommand; the key follows it
        assert first.startswith("KEYS["), f"{name}: {command} on {first}"
