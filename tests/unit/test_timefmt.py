"""RFC 3339 timestamps: Kubernetes' whole seconds and the ingress's microseconds, from one formatter."""

from __future__ import annotations

from datetime import UTC, datetime

from flint_common.timefmt import rfc3339, rfc3339_micros

T0 = 1_700_000_000.0


def test_rfc3339_is_whole_seconds_in_utc() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(T0) == "2023-11-14T22:13:20Z"
    assert rfc3339(T0 + 0.999) == "2023-11-14T22:13:20Z"  # truncated, never rounded up


def test_rfc3339_micros_keeps_the_fraction() -> None:
    assert rfc3339_micros(T0 + 0.5) == "2023-11-14T22:13:20.500000Z"
    assert rfc3339_micros(T0) == "2023-11-14T22:13:20.000000Z"
    assert rfc3339_micros(T0 + 1.25) == "2023-11-14T22:13:21.250000Z"


def test_both_forms_share_the_cached_second_and_agree_with_datetime() -> None:
    for now in (T0 + 0.1, T0 + 0.2, T0 + 86_400.75, T0 + 0.3, 0.0):
        micros = rfc3339_micros(now)
        seconds = rfc3339(now)
        assert micros[:19] == seconds[:19]
        assert seconds == datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
