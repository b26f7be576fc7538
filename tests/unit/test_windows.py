"""Bucketed windows: plain averages, the trailing maximum, and the per-revision report rule
(a missing report is unknown, never zero)."""

from __future__ import annotations

import pytest

from controller.autoscaling.windows import RevisionMetrics, TimedBuckets, TimedMax


def test_timed_buckets_average_skips_empty_buckets() -> None:
    w = TimedBuckets(window_s=5)
    w.record(10.2, 2.0)
    w.record(10.7, 2.0)  # same bucket 10: summed to 4
    w.record(12.0, 6.0)
    # At 12.5 the window is buckets 8..12: 10 → 4, 12 → 6; 8, 9, 11 are unknown → (4 + 6) / 2 = 5.
    assert w.window_average(12.5) == 5.0
    assert not w.is_empty(12.5)
    # At 15.0 the window is 11..15: only bucket 12 → 6.
    assert w.window_average(15.0) == 6.0
    # At 17.0 the window is 13..17: nothing → None, empty.
    assert w.window_average(17.0) is None
    assert w.is_empty(17.0)


def test_timed_buckets_granularity() -> None:
    w = TimedBuckets(window_s=4, granularity_s=2)  # 2 buckets of 2 s
    w.record(0.5, 1.0)
    w.record(2.5, 3.0)
    assert w.window_average(3.0) == 2.0  # buckets 0 and 1
    assert w.window_average(4.0) == 3.0  # buckets 1 and 2


def test_timed_max_is_knatives_delay_window() -> None:
    # 10 s at 2 s granularity → 5 indexes: at t the window is indexes (t/2 - 5, t/2].
    m = TimedMax(10, 2)
    m.record(0, 5)
    for t in (2, 4, 6, 8):
        m.record(t, 2)
        assert m.current() == 5
    m.record(10, 2)  # index 5: index 0 leaves the window
    assert m.current() == 2
    m.record(10.5, 3)  # same index: the larger stays
    assert m.current() == 3


def test_timed_max_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        TimedMax(0, 2)


def _steady(m: RevisionMetrics, workers: dict[str, float], buckets: range, requests: int = 0) -> None:
    for b in buckets:
        for w, c in workers.items():
            m.record_report(w, b, c, requests)


def test_no_data_is_none() -> None:
    m = RevisionMetrics(60, 6)
    assert m.stable_average(100.0) is None
    assert m.panic_average(100.0) is None
    assert m.observed(100.0, "rps") == (None, None)


def test_sum_over_workers_and_window_average() -> None:
    m = RevisionMetrics(60, 6)
    _steady(m, {"a": 5.0, "b": 3.0}, range(0, 10), requests=4)
    # Each bucket: 5 + 3 = 8 concurrent, 4 + 4 = 8 requests/s.
    assert m.stable_average(10.0) == 8.0
    assert m.panic_average(10.0) == 8.0
    assert m.observed(10.0, "rps") == (8.0, 8.0)


def test_duplicate_report_overwrites() -> None:
    m = RevisionMetrics(60, 6)
    m.record_report("a", 0, 5.0, 1)
    m.record_report("a", 0, 2.0, 1)
    assert m.stable_average(0.5) == 2.0


def test_second_without_any_report_is_skipped_not_zero() -> None:
    m = RevisionMetrics(60, 6)
    m.record_report("a", 0, 6.0, 0)
    m.record_report("a", 2, 6.0, 0)  # bucket 1 lost: unknown
    # Counting bucket 1 as 0 would give 4; skipped it stays 6.
    assert m.stable_average(2.5) == 6.0


def test_missing_worker_report_is_unknown_not_zero() -> None:
    m = RevisionMetrics(60, 6)
    _steady(m, {"a": 5.0, "b": 5.0}, range(0, 10))
    m.record_report("a", 10, 5.0, 0)  # b's report for 10 has not arrived
    # Bucket 10 is incomplete (b is live: it reported 7..9) and skipped: 10, not (10×10 + 5)/11.
    assert m.stable_average(10.5) == 10.0
    # Panic window 6 s at 10.5: buckets 5..10 → 5..9 complete → 10.
    assert m.panic_average(10.5) == 10.0
    m.record_report("b", 10, 5.0, 0)  # late report: now counted
    assert m.stable_average(10.5) == 10.0


def test_worker_that_stops_reporting_stops_being_expected() -> None:
    m = RevisionMetrics(60, 6)
    _steady(m, {"a": 4.0, "b": 4.0}, range(0, 11))
    _steady(m, {"a": 8.0}, range(11, 20))  # b is gone after bucket 10; its traffic moved to a
    # Buckets 11, 12, 13 wait for b (it reported within the 3 s before them) and are skipped;
    # from 14 on only a is expected. Panic window at 19.5: buckets 14..19 → all a = 8.
    assert m.panic_average(19.5) == 8.0
    # Stable: 0..10 at 8 and 14..19 at 8 → 8 (no dip from the missing b).
    assert m.stable_average(19.5) == 8.0


def test_new_worker_is_not_expected_before_its_first_report() -> None:
    m = RevisionMetrics(60, 6)
    _steady(m, {"a": 2.0}, range(0, 10))
    _steady(m, {"a": 2.0, "b": 6.0}, range(10, 12))
    # b's absence before bucket 10 is not unknown: it had not seen the revision. (10×2 + 2×8) / 12 = 3.
    assert m.stable_average(11.5) == 3.0


def test_poke_counts_at_once_and_is_replaced() -> None:
    m = RevisionMetrics(60, 6)
    _steady(m, {"a": 0.0, "b": 0.0}, range(0, 20))
    assert m.stable_average(20.2) == 0.0
    m.record_poke("a", 20, waiting=3)
    # Bucket 20 holds a poke: it counts although b has not reported it. Stable 0..20: 3 / 21.
    assert m.stable_average(20.2) == pytest.approx(3 / 21)
    # Panic 15..20: 3 / 6.
    assert m.panic_average(20.2) == 0.5
    m.record_report("a", 20, 2.0, 3)  # a's real report replaces the poke
    m.record_poke("a", 20, waiting=9)  # a poke never overrides a real report
    m.record_report("b", 20, 0.0, 0)
    assert m.panic_average(20.9) == pytest.approx(2 / 6)


def test_old_reports_are_dropped() -> None:
    m = RevisionMetrics(10, 1)
    m.record_report("a", 100, 1.0, 0)
    m.record_report("a", 50, 9.0, 0)  # older than the window: ignored
    assert m.stable_average(100.5) == 1.0
    assert m.newest_bucket() == 100
    m.set_windows(20, 2)
    assert (m.stable_window_s, m.panic_window_s) == (20, 2)
