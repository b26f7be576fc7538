"""The dispatcher's delivery policy: DeliverySpec defaults, which failures are retried, linear and
exponential backoff, Retry-After (seconds, HTTP-date, capped, ignored), when retries run out, and
the dead-letter extensions."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.api.duck import DEFAULT_BROKER_DELIVERY, parse_iso8601_duration, resolve_delivery
from controller.eventing.delivery import (
    DEAD_LETTER_ATTEMPTS,
    DEFAULT_BACKOFF_DELAY_S,
    DEFAULT_TIMEOUT_S,
    ERROR_DATA_MAX_BYTES,
    RETRYABLE_STATUSES,
    DeliveryPolicy,
    GiveUp,
    Retry,
    after_failure,
    backoff_s,
    dead_letter_extensions,
    dead_letter_retry_s,
    is_retryable,
    parse_retry_after,
)

NOW = 1_000_000.0
# 2015-10-21 07:28:00 UTC, computed without the parser under test.
DATE_TS = datetime(2015, 10, 21, 7, 28, tzinfo=UTC).timestamp()
DATE_IMF = "Wed, 21 Oct 2015 07:28:00 GMT"


def policy(**overrides: Any) -> DeliveryPolicy:
    fields: dict[str, Any] = {
        "retry": 3,
        "backoff_policy": "exponential",
        "backoff_delay_s": 0.5,
        "timeout_s": 10.0,
        "retry_after_max_s": None,
        "format": "binary",
        "dead_letter_uri": None,
    }
    fields.update(overrides)
    return DeliveryPolicy(**fields)


def run(p: DeliveryPolicy, statuses: list[int | None]) -> tuple[list[float], GiveUp | None]:
    """Drive the delivery loop the way the dispatcher does: attempt 1, then one more per Retry.
    `statuses` are the failures in order; returns the waits between attempts and the GiveUp."""
    now, attempt = NOW, 1
    waits: list[float] = []
    for status in statuses:
        decision = after_failure(p, attempt, status, None, now)
        if isinstance(decision, GiveUp):
            return waits, decision
        waits.append(decision.at - now)
        now, attempt = decision.at, decision.attempt
    return waits, None


# ---------------------------------------------------------------------------------------------
# DeliveryPolicy.from_spec
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [None, {}])
def test_from_spec_without_fields_makes_one_attempt_with_defaults(spec: dict[str, Any] | None) -> None:
    assert DeliveryPolicy.from_spec(spec) == DeliveryPolicy(
        retry=0,
        backoff_policy="exponential",
        backoff_delay_s=0.2,
        timeout_s=DEFAULT_TIMEOUT_S,
        retry_after_max_s=None,
        format="binary",
        dead_letter_uri=None,
    )


def test_default_timeout_covers_a_cold_start() -> None:
    assert DEFAULT_TIMEOUT_S == 60.0


def test_from_spec_of_the_broker_default_retries_ten_times() -> None:
    for spec in (resolve_delivery(None, None), dict(DEFAULT_BROKER_DELIVERY)):
        p = DeliveryPolicy.from_spec(spec)
        assert (p.retry, p.backoff_policy, p.backoff_delay_s) == (10, "exponential", 0.2)


def test_default_backoff_delay_is_the_broker_defaults() -> None:
    assert parse_iso8601_duration(DEFAULT_BROKER_DELIVERY["backoffDelay"]) == DEFAULT_BACKOFF_DELAY_S


def test_from_spec_reads_every_field() -> None:
    spec = {
        "retry": 4,
        "backoffPolicy": "linear",
        "backoffDelay": "PT1.5S",
        "timeout": "PT10S",
        "retryAfterMax": "PT2M",
        "format": "json",
        "deadLetterSink": {"uri": "http://dls.example"},
    }
    p = DeliveryPolicy.from_spec(spec, dead_letter_uri="http://dls.example/")
    assert p == DeliveryPolicy(
        retry=4,
        backoff_policy="linear",
        backoff_delay_s=1.5,
        timeout_s=10.0,
        retry_after_max_s=120.0,
        format="json",
        dead_letter_uri="http://dls.example/",
    )


def test_from_spec_retry_alone_keeps_backoff_defaults() -> None:
    p = DeliveryPolicy.from_spec({"retry": 5})
    assert (p.retry, p.backoff_policy, p.backoff_delay_s) == (5, "exponential", 0.2)


def test_from_spec_timeout_default_is_the_callers_and_the_spec_wins() -> None:
    assert DeliveryPolicy.from_spec({}, default_timeout_s=5.0).timeout_s == 5.0
    assert DeliveryPolicy.from_spec({"timeout": "PT1M"}, default_timeout_s=5.0).timeout_s == 60.0


def test_from_spec_retry_after_max_zero_is_kept() -> None:
    assert DeliveryPolicy.from_spec({"retryAfterMax": "PT0S"}).retry_after_max_s == 0.0


@pytest.mark.parametrize(
    ("spec", "field", "expected"),
    [
        ({"retry": "three"}, "retry", 0),
        ({"retry": -2}, "retry", 0),
        ({"retry": 2.0}, "retry", 2),
        ({"backoffPolicy": "cubic"}, "backoff_policy", "exponential"),
        ({"backoffDelay": "soon"}, "backoff_delay_s", 0.2),
        ({"backoffDelay": "-PT1S"}, "backoff_delay_s", 0.0),
        ({"backoffDelay": "PT0S"}, "backoff_delay_s", 0.0),
        ({"timeout": "PT0S"}, "timeout_s", DEFAULT_TIMEOUT_S),
        ({"timeout": "never"}, "timeout_s", DEFAULT_TIMEOUT_S),
        ({"retryAfterMax": "-PT1S"}, "retry_after_max_s", None),
        ({"retryAfterMax": "lots"}, "retry_after_max_s", None),
        ({"format": "xml"}, "format", "binary"),
    ],
)
def test_from_spec_malformed_values_fall_back(spec: dict[str, Any], field: str, expected: object) -> None:
    assert getattr(DeliveryPolicy.from_spec(spec), field) == expected


def test_from_spec_empty_dead_letter_uri_is_none() -> None:
    assert DeliveryPolicy.from_spec({}, dead_letter_uri="").dead_letter_uri is None


@pytest.mark.parametrize(
    "bad",
    [
        {"retry": -1},
        {"backoff_policy": "cubic"},
        {"backoff_delay_s": -0.1},
        {"timeout_s": 0.0},
        {"retry_after_max_s": -1.0},
        {"format": "xml"},
    ],
)
def test_policy_refuses_impossible_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        policy(**bad)


# ---------------------------------------------------------------------------------------------
# Backoff
# ---------------------------------------------------------------------------------------------


def test_linear_backoff_is_delay_times_retry_number() -> None:
    p = policy(backoff_policy="linear", backoff_delay_s=2.5)
    assert [backoff_s(p, n) for n in range(1, 6)] == [2.5, 5.0, 7.5, 10.0, 12.5]


@pytest.mark.parametrize(
    ("delay", "expected"),
    [(0.5, [1.0, 2.0, 4.0, 8.0, 16.0]), (1.5, [3.0, 6.0, 12.0, 24.0, 48.0])],
)
def test_exponential_backoff_is_delay_times_two_to_the_retry_number(
    delay: float, expected: list[float]
) -> None:
    p = policy(backoff_policy="exponential", backoff_delay_s=delay)
    assert [backoff_s(p, n) for n in range(1, 6)] == expected


def test_exponential_backoff_overflow_is_infinite_unless_delay_is_zero() -> None:
    assert backoff_s(policy(backoff_delay_s=0.2), 5000) == math.inf
    assert backoff_s(policy(backoff_delay_s=0.0), 5000) == 0.0


@pytest.mark.parametrize("policy_name", ["linear", "exponential"])
def test_backoff_retry_numbers_start_at_one(policy_name: str) -> None:
    with pytest.raises(ValueError):
        backoff_s(policy(backoff_policy=policy_name), 0)


# ---------------------------------------------------------------------------------------------
# Retryable statuses
# ---------------------------------------------------------------------------------------------


def test_retryable_4xx_are_knatives() -> None:
    assert frozenset({404, 408, 409, 429}) == RETRYABLE_STATUSES


@pytest.mark.parametrize("status", [None, 404, 408, 409, 429, 500, 501, 502, 503, 504, 599])
def test_retryable(status: int | None) -> None:
    assert is_retryable(status) is True


@pytest.mark.parametrize(
    "status", [100, 200, 201, 202, 204, 300, 301, 302, 304, 307, 308, 400, 401, 403, 405, 410, 413, 422]
)
def test_not_retryable(status: int) -> None:
    assert is_retryable(status) is False


# ---------------------------------------------------------------------------------------------
# Retry-After
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("-5", 0.0)])
def test_retry_after_delta_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "value",
    [DATE_IMF, "Wednesday, 21-Oct-15 07:28:00 GMT", "Wed Oct 21 07:28:00 2015"],
)
def test_retry_after_http_date_counts_from_now(value: str) -> None:
    assert parse_retry_after(value, DATE_TS - 90.0) == pytest.approx(90.0)


def test_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after(DATE_IMF, DATE_TS + 3600.0) == 0.0


@pytest.mark.parametrize(
    "value", [None, "", "   ", "soon", "1.5", "12abc", "Mon, 99 Foo 2015", "Wed, 21 Oct 99999 07:28:00 GMT"]
)
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


# ---------------------------------------------------------------------------------------------
# after_failure
# ---------------------------------------------------------------------------------------------


def test_retry_zero_gives_up_after_the_first_failure() -> None:
    p = policy(retry=0)
    assert after_failure(p, 1, 500, None, NOW) == GiveUp("retries-exhausted")
    assert run(p, [500, 500]) == ([], GiveUp("retries-exhausted"))


def test_retry_two_makes_three_attempts() -> None:
    p = policy(retry=2, backoff_policy="linear", backoff_delay_s=1.0)
    assert after_failure(p, 1, 503, None, NOW) == Retry(at=NOW + 1.0, attempt=2)
    assert after_failure(p, 2, 503, None, NOW) == Retry(at=NOW + 2.0, attempt=3)
    assert after_failure(p, 3, 503, None, NOW) == GiveUp("retries-exhausted")
    waits, outcome = run(p, [503, None, 500, 500])
    assert waits == [1.0, 2.0]  # two retries, so three attempts
    assert outcome == GiveUp("retries-exhausted")


def test_broker_default_schedule() -> None:
    waits, outcome = run(DeliveryPolicy.from_spec(resolve_delivery()), [500] * 20)
    assert waits == pytest.approx([0.2 * 2**n for n in range(1, 11)])
    assert outcome == GiveUp("retries-exhausted")


@pytest.mark.parametrize("status", [400, 401, 403, 301, 200])
def test_not_retryable_gives_up_with_retries_left(status: int) -> None:
    assert after_failure(policy(retry=10), 1, status, None, NOW) == GiveUp("not-retryable")


def test_not_retryable_wins_over_exhausted() -> None:
    assert after_failure(policy(retry=0), 1, 400, None, NOW) == GiveUp("not-retryable")


def test_connection_error_is_retried() -> None:
    assert after_failure(policy(), 1, None, None, NOW) == Retry(at=NOW + 1.0, attempt=2)


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError):
        after_failure(policy(), 0, 500, None, NOW)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_lengthens_the_backoff(status: int) -> None:
    assert after_failure(policy(), 1, status, "30", NOW) == Retry(at=NOW + 30.0, attempt=2)


def test_retry_after_http_date_lengthens_the_backoff() -> None:
    decision = after_failure(policy(), 1, 429, DATE_IMF, DATE_TS - 45.0)
    assert isinstance(decision, Retry)
    assert decision.attempt == 2
    assert abs(decision.at - DATE_TS) < 1e-6


def test_retry_after_smaller_than_backoff_is_ignored() -> None:
    # backoff for retry 3 is 0.5 × 2³ = 4 s
    assert after_failure(policy(), 3, 429, "2", NOW) == Retry(at=NOW + 4.0, attempt=4)


def test_retry_after_is_capped_by_retry_after_max() -> None:
    p = policy(retry_after_max_s=10.0)
    assert after_failure(p, 1, 503, "3600", NOW) == Retry(at=NOW + 10.0, attempt=2)
    assert after_failure(p, 1, 503, "5", NOW) == Retry(at=NOW + 5.0, attempt=2)


def test_retry_after_max_zero_ignores_retry_after() -> None:
    assert after_failure(policy(retry_after_max_s=0.0), 1, 429, "60", NOW) == Retry(at=NOW + 1.0, attempt=2)


def test_retry_after_cap_never_shortens_the_backoff() -> None:
    # cap 2 s, backoff for retry 3 is 4 s
    assert after_failure(policy(retry_after_max_s=2.0), 3, 503, "60", NOW) == Retry(at=NOW + 4.0, attempt=4)


@pytest.mark.parametrize("status", [500, 502, 504, 404, 408, None])
def test_retry_after_only_counts_on_429_and_503(status: int | None) -> None:
    assert after_failure(policy(), 1, status, "60", NOW) == Retry(at=NOW + 1.0, attempt=2)


@pytest.mark.parametrize("header", [None, "", "soon", "1.5"])
def test_retry_after_garbage_keeps_the_backoff(header: str | None) -> None:
    assert after_failure(policy(), 1, 429, header, NOW) == Retry(at=NOW + 1.0, attempt=2)


# ---------------------------------------------------------------------------------------------
# Dead-letter extensions
# ---------------------------------------------------------------------------------------------

DEST = "http://sub.default.svc.cluster.local/path"


def test_dead_letter_extensions_with_status_and_body() -> None:
    ext = dead_letter_extensions(DEST, 500, b"boom \xff\x00")
    assert ext == {
        "knativeerrordest": DEST,
        "knativeerrorcode": "500",
        "knativeerrordata": base64.b64encode(b"boom \xff\x00").decode(),
    }
    assert base64.b64decode(ext["knativeerrordata"], validate=True) == b"boom \xff\x00"


def test_dead_letter_extensions_omit_code_without_a_response() -> None:
    assert dead_letter_extensions(DEST, None, None) == {"knativeerrordest": DEST}


@pytest.mark.parametrize("body", [None, b""])
def test_dead_letter_extensions_omit_empty_data(body: bytes | None) -> None:
    assert dead_letter_extensions(DEST, 404, body) == {"knativeerrordest": DEST, "knativeerrorcode": "404"}


@pytest.mark.parametrize("size", [767, 768, 769, 1024, 5000])
def test_dead_letter_data_is_truncated_base64(size: int) -> None:
    body = bytes(i % 251 for i in range(size))
    data = dead_letter_extensions(DEST, 500, body)["knativeerrordata"]
    # Knative's rule: the base64 text of the whole body, cut at ERROR_DATA_MAX_BYTES characters.
    assert data == base64.b64encode(body).decode()[:ERROR_DATA_MAX_BYTES]
    assert len(data) <= ERROR_DATA_MAX_BYTES
    assert base64.b64decode(data, validate=True) == body[: min(size, 768)]


def test_error_data_max_is_knatives() -> None:
    assert ERROR_DATA_MAX_BYTES == 1024


# ------------------------------------------------------------------------------------------
# the dead-letter sink's own attempts
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backoff_policy", ["exponential", "linear"])
def test_the_dead_letter_sink_gets_three_attempts_with_doubling_waits(backoff_policy: str) -> None:
    p = policy(backoff_policy=backoff_policy, backoff_delay_s=0.5)
    assert DEAD_LETTER_ATTEMPTS == 3
    waits = [dead_letter_retry_s(p, n) for n in range(1, DEAD_LETTER_ATTEMPTS + 1)]
    assert waits == [0.5, 1.0, None]  # after the third failure the event is kept as a dead letter


def test_dead_letter_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        dead_letter_retry_s(policy(), 0)
