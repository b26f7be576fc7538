"""The dispatcher's Redis flags (`python -m controller.eventing`): leases and claims in seconds."""

from __future__ import annotations

import argparse

import pytest

from controller.eventing.__main__ import consumer_settings, lease_s, main
from controller.eventing.redis_consumer import RedisConsumerSettings


def test_the_claim_flags_reach_the_consumer_settings() -> None:
    s = consumer_settings(2.0, 1.5, 0.3)
    assert (s.lease_s, s.claim_after_s, s.claim_heartbeat_s) == (2.0, 1.5, 0.3)
    assert s.block_ms == RedisConsumerSettings().block_ms  # the rest as by default


def test_a_claim_under_three_heartbeats_is_refused_naming_both_flags() -> None:
    with pytest.raises(ValueError, match=r"--redis-claim-after-s \(2\) must be at least three heartbeats "
                                         r"\(--redis-claim-heartbeat-s 1\)"):
        consumer_settings(30.0, 2.0, 1.0)
    assert consumer_settings(30.0, 3.0, 1.0).claim_after_s == 3.0  # exactly three is enough


@pytest.mark.parametrize("value", ["0", "-1", "inf", "soon"])
def test_seconds_must_be_a_positive_finite_number(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        lease_s(value)


def test_the_command_line_refuses_a_claim_under_three_heartbeats(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--redis-claim-after-s", "2", "--redis-claim-heartbeat-s", "1"])
    assert exc.value.code == 2
    assert "at least three heartbeats" in capsys.readouterr().err
