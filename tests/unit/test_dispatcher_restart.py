"""A failing runner is restarted with a back-off (a Redis outage fails every Redis runner)."""

from __future__ import annotations

from controller.eventing.dispatcher import RESTART_DELAY_S, RESTART_MAX_DELAY_S, restart_delay


def test_a_runner_failing_in_a_row_is_restarted_ever_later_up_to_the_cap() -> None:
    delays = [restart_delay(n) for n in range(10)]
    assert delays[0] == RESTART_DELAY_S
    assert delays == sorted(delays) and delays[1] == 2 * RESTART_DELAY_S
    assert delays[-1] == RESTART_MAX_DELAY_S and restart_delay(10_000) == RESTART_MAX_DELAY_S
