"""The link's choice of controller and pause (`gateway.failover`): one pass over the controllers
at the shortest pause, then backoff per pass, capped at a second while a standby answers."""

from __future__ import annotations

import pytest

from gateway.failover import FIRST_S, MAX_S, STANDBY_MAX_S, Failover


def test_one_controller_backs_off_as_before_and_comes_back_quickly_after_serving() -> None:
    f = Failover(1)
    assert [f.failed() for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, MAX_S, MAX_S]
    assert f.index == 0
    assert f.served() == FIRST_S
    assert f.failed() == FIRST_S  # the backoff starts over


def test_several_controllers_are_each_tried_once_per_pass_before_any_backoff() -> None:
    f = Failover(3)
    seen = []
    for _ in range(9):
        seen.append((f.index, f.failed()))
    assert [i for i, _ in seen] == [0, 1, 2] * 3
    assert [d for _, d in seen] == [FIRST_S, FIRST_S, 0.1, FIRST_S, FIRST_S, 0.2, FIRST_S, FIRST_S, 0.4]


def test_a_pass_with_a_standby_waits_a_second_at_most_one_without_the_usual_cap() -> None:
    f = Failover(2)
    for _ in range(10):  # the leader is dead (refused), the other is a standby, for a while
        f.failed()
        last = f.failed(standby=True)
    assert last == STANDBY_MAX_S
    f.failed()
    assert f.failed() == MAX_S  # a pass with nobody answering: the usual cap again


def test_a_served_link_that_ends_is_tried_again_on_the_same_controller() -> None:
    f = Failover(2)
    f.failed()  # the first is away
    assert f.index == 1
    f.served()
    assert f.index == 1


def test_at_least_one_controller() -> None:
    with pytest.raises(ValueError):
        Failover(0)
