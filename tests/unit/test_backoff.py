"""The shared retry backoff: doubling from the first delay, capped, safe for any count."""

from __future__ import annotations

from flint_common.backoff import backoff_delay


def test_doubles_from_the_first_delay_up_to_the_cap() -> None:
    assert [backoff_delay(0.1, 1.0, n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_negative_count_is_the_first_retry() -> None:
    assert backoff_delay(0.5, 30.0, -3) == 0.5


def test_any_count_is_capped_without_overflow() -> None:
    assert backoff_delay(1.0, 30.0, 10_000) == 30.0
    assert backoff_delay(1e300, 30.0, 2000) == 30.0  # the product overflows to inf: still the cap


def test_a_first_delay_over_the_cap_is_the_cap() -> None:
    assert backoff_delay(10.0, 5.0, 0) == 5.0
