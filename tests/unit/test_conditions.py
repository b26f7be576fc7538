"""Knative-style status conditions: set (transition times, order) and roll up."""

from __future__ import annotations

from typing import Any

import pytest

from controller.reconcilers.conditions import (
    get_condition,
    is_true,
    roll_up,
    set_condition,
)
from flint_common.timefmt import rfc3339

T0 = 1_700_000_000.0
T1 = T0 + 60
T2 = T0 + 3600


def types(status: dict[str, Any]) -> list[str]:
    return [c["type"] for c in status["conditions"]]


def test_set_new_condition() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "Ready", "False", "Boom", "it broke", now=T0)
    assert status["conditions"] == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Boom",
            "message": "it broke",
            "lastTransitionTime": rfc3339(T0),
        }
    ]


def test_empty_reason_and_message_are_left_out() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "Ready", "True", now=T0)
    assert status["conditions"] == [
        {"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(T0)}
    ]


def test_transition_time_kept_while_status_unchanged() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "Ready", "Unknown", "Deploying", "starting", now=T0)
    set_condition(status, "Ready", "Unknown", "Probing", "still starting", now=T1)
    c = get_condition(status, "Ready")
    assert c == {
        "type": "Ready",
        "status": "Unknown",
        "reason": "Probing",
        "message": "still starting",
        "lastTransitionTime": rfc3339(T0),
    }


def test_transition_time_changes_when_status_flips() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "Ready", "Unknown", "Deploying", now=T0)
    set_condition(status, "Ready", "True", now=T1)
    c = get_condition(status, "Ready")
    assert c is not None
    assert c["lastTransitionTime"] == rfc3339(T1)
    # the old reason does not survive the flip
    assert "reason" not in c
    set_condition(status, "Ready", "True", now=T2)
    assert (get_condition(status, "Ready") or {})["lastTransitionTime"] == rfc3339(T1)


def test_missing_transition_time_is_filled_even_if_status_unchanged() -> None:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True"}]}
    set_condition(status, "Ready", "True", now=T1)
    assert (get_condition(status, "Ready") or {})["lastTransitionTime"] == rfc3339(T1)


def test_one_condition_per_type_and_others_untouched() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "ContainerHealthy", "True", now=T0)
    set_condition(status, "Active", "False", "NoTraffic", now=T0)
    set_condition(status, "ContainerHealthy", "False", "ExitCode", "exit 1", now=T1)
    assert sorted(types(status)) == ["Active", "ContainerHealthy"]
    active = get_condition(status, "Active")
    assert active == {
        "type": "Active",
        "status": "False",
        "reason": "NoTraffic",
        "lastTransitionTime": rfc3339(T0),
    }


@pytest.mark.parametrize(
    "order",
    [
        ["Zeta", "Ready", "Alpha"],
        ["Ready", "Zeta", "Alpha"],
        ["Alpha", "Zeta", "Ready"],
    ],
)
def test_ready_first_then_by_type(order: list[str]) -> None:
    status: dict[str, Any] = {}
    for t in order:
        set_condition(status, t, "True", now=T0)
    assert types(status) == ["Ready", "Alpha", "Zeta"]


def test_existing_unordered_conditions_are_sorted() -> None:
    status: dict[str, Any] = {
        "conditions": [
            {"type": "RoutesReady", "status": "True", "lastTransitionTime": rfc3339(T0)},
            {"type": "ConfigurationsReady", "status": "True", "lastTransitionTime": rfc3339(T0)},
        ]
    }
    set_condition(status, "Ready", "True", now=T1)
    assert types(status) == ["Ready", "ConfigurationsReady", "RoutesReady"]


def test_get_condition_returns_a_copy_and_is_true() -> None:
    status: dict[str, Any] = {}
    assert get_condition(status, "Ready") is None
    assert not is_true(status, "Ready")
    set_condition(status, "Ready", "True", now=T0)
    assert is_true(status, "Ready")
    c = get_condition(status, "Ready")
    assert c is not None
    c["status"] = "False"
    assert is_true(status, "Ready")
    set_condition(status, "Ready", "Unknown", now=T0)
    assert not is_true(status, "Ready")


# ------------------------------------------------------------------------------------------
# roll_up
# ------------------------------------------------------------------------------------------


def test_roll_up_all_true() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "A", "True", now=T0)
    set_condition(status, "B", "True", now=T0)
    roll_up(status, ["A", "B"], now=T1)
    assert get_condition(status, "Ready") == {
        "type": "Ready",
        "status": "True",
        "lastTransitionTime": rfc3339(T1),
    }


def test_roll_up_missing_dependent_is_unknown() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "A", "True", now=T0)
    roll_up(status, ["A", "B"], now=T1)
    assert (get_condition(status, "Ready") or {})["status"] == "Unknown"


def test_roll_up_unknown_carries_reason_and_message() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "A", "True", now=T0)
    set_condition(status, "B", "Unknown", "Deploying", "waiting", now=T0)
    roll_up(status, ["A", "B"], now=T1)
    c = get_condition(status, "Ready")
    assert c is not None
    assert (c["status"], c["reason"], c["message"]) == ("Unknown", "Deploying", "waiting")


@pytest.mark.parametrize("deps", [["A", "B", "C"], ["C", "B", "A"], ["B", "A", "C"]])
def test_roll_up_false_wins_over_unknown_in_any_order(deps: list[str]) -> None:
    status: dict[str, Any] = {}
    set_condition(status, "A", "Unknown", "Deploying", "waiting", now=T0)
    set_condition(status, "B", "False", "ExitCode", "exit status 3", now=T0)
    set_condition(status, "C", "True", now=T0)
    roll_up(status, deps, now=T1)
    c = get_condition(status, "Ready")
    assert c is not None
    assert (c["status"], c["reason"], c["message"]) == ("False", "ExitCode", "exit status 3")


def test_roll_up_into_another_happy_condition() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "A", "False", "Nope", now=T0)
    roll_up(status, ["A"], now=T1, happy="Succeeded")
    assert get_condition(status, "Ready") is None
    c = get_condition(status, "Succeeded")
    assert c is not None
    assert (c["status"], c["reason"]) == ("False", "Nope")
    assert "message" not in c


def test_roll_up_keeps_transition_time_and_drops_stale_reason() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "A", "Unknown", "Deploying", "waiting", now=T0)
    roll_up(status, ["A"], now=T0)
    set_condition(status, "A", "Unknown", "Probing", "probing", now=T1)
    roll_up(status, ["A"], now=T1)
    c = get_condition(status, "Ready")
    assert c is not None
    assert (c["reason"], c["lastTransitionTime"]) == ("Probing", rfc3339(T0))
    set_condition(status, "A", "True", now=T2)
    roll_up(status, ["A"], now=T2)
    c = get_condition(status, "Ready")
    assert c == {"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(T2)}
    assert types(status) == ["Ready", "A"]
