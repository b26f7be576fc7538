"""The persisted snapshot + delta journal (`gateway.snapshot_journal`): appends that chain,
compaction, replay on load, torn lines, several workers on the same files."""

from __future__ import annotations

import logging
import random
from itertools import pairwise
from pathlib import Path

import pytest

from flint_common.delta import SnapshotDelta, apply_delta, diff
from flint_common.snapshot import Endpoint, RevisionTarget, RouteEntry, Snapshot, TrafficSplit
from flint_common.wire import DeltaMessage, WireError, encode_snapshot
from gateway import snapshot_journal
from gateway.snapshot_journal import (
    Action,
    JournalSettings,
    Persisted,
    SnapshotJournal,
    for_delta,
    load_snapshot_file,
)


def revision(name: str, endpoints: int) -> RevisionTarget:
    return RevisionTarget("default", f"{name}-00001", name, 300.0, 300.0, 0.0, 0,
                          tuple(Endpoint(f"{name}-{k}", "10.0.0.1", 8080 + k)
                                for k in range(endpoints)))


def route(name: str) -> RouteEntry:
    return RouteEntry("default", name, (f"{name}.default.example.com",),
                      (TrafficSplit(f"{name}-00001", 100),), ())


def snapshot(version: int, endpoints: dict[str, int]) -> Snapshot:
    names = sorted(endpoints)
    return Snapshot(version, tuple(route(n) for n in names),
                    tuple(revision(n, endpoints[n]) for n in names))


def history(count: int, services: int = 5, seed: int = 0) -> list[Snapshot]:
    """`count` snapshots at versions 10, 11, ... each one Service's endpoints changed."""
    rnd = random.Random(seed)
    endpoints = {f"s{i}": 1 for i in range(services)}
    out = []
    for k in range(count):
        out.append(snapshot(10 + k, dict(endpoints)))
        endpoints[f"s{rnd.randrange(services)}"] = rnd.randint(0, 4)
    return out


def journal_lines(j: SnapshotJournal) -> list[bytes]:
    return j.journal_path.read_bytes().splitlines() if j.journal_path.exists() else []


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "gateway" / "snapshot.json"


def test_deltas_that_chain_are_appended_and_load_replays_them(path: Path) -> None:
    snaps = history(6)
    j = SnapshotJournal(path)
    assert j.persist_snapshot(snaps[0])
    snapshot_bytes = path.read_bytes()
    for a, b in pairwise(snaps):
        assert j.persist_delta(diff(a, b), b) is Action.APPEND
    assert path.read_bytes() == snapshot_bytes  # the full snapshot is not written again
    lines = journal_lines(j)
    assert lines == [DeltaMessage(diff(a, b)).encode().encode()
                     for a, b in pairwise(snaps)]
    assert j.persisted() == Persisted(10, len(snapshot_bytes), 15, 5, sum(len(x) + 1 for x in lines))
    assert load_snapshot_file(path) == snaps[-1]
    assert SnapshotJournal(path).load() == snaps[-1]  # a fresh worker too


def test_a_delta_that_does_not_chain_from_a_newer_worker_compacts(path: Path) -> None:
    snaps = history(6)
    j = SnapshotJournal(path)
    j.persist_snapshot(snaps[0])
    j.persist_delta(diff(snaps[0], snaps[1]), snaps[1])
    # a worker that relinked got 1 -> 4 as a snapshot it did not persist, then 4 -> 5
    assert j.persist_delta(diff(snaps[4], snaps[5]), snaps[5]) is Action.COMPACT
    assert not j.journal_path.exists()
    assert j.persisted().version == snaps[5].version == j.persisted().snapshot_version
    assert load_snapshot_file(path) == snaps[5]


def test_an_older_delta_or_snapshot_is_ignored(path: Path) -> None:
    snaps = history(5)
    j = SnapshotJournal(path)
    j.persist_snapshot(snaps[0])
    for a, b in pairwise(snaps[:3]):
        j.persist_delta(diff(a, b), b)
    before = (path.read_bytes(), j.journal_path.read_bytes())
    laggard = SnapshotJournal(path)
    assert laggard.persist_delta(diff(snaps[0], snaps[1]), snaps[1]) is Action.SKIP
    assert laggard.persist_delta(diff(snaps[1], snaps[2]), snaps[2]) is Action.SKIP  # same version
    assert not laggard.persist_snapshot(snaps[2])
    assert not laggard.persist_snapshot(snaps[1])
    assert (path.read_bytes(), j.journal_path.read_bytes()) == before
    assert load_snapshot_file(path) == snaps[2]


def test_a_full_snapshot_compacts_the_journal(path: Path) -> None:
    snaps = history(4)
    j = SnapshotJournal(path)
    j.persist_snapshot(snaps[0])
    j.persist_delta(diff(snaps[0], snaps[1]), snaps[1])
    assert j.persist_snapshot(snaps[3])  # a relink's snapshot
    assert not j.journal_path.exists()
    assert load_snapshot_file(path) == snaps[3]
    assert sorted(p.name for p in path.parent.iterdir()) == ["snapshot.json", "snapshot.json.lock"]


@pytest.mark.parametrize("tail", [b"torn", b"{not json}\n", b'{"type":"delta"}\n'])
def test_a_torn_or_corrupt_last_line_stops_the_replay_there(
    path: Path, tail: bytes, caplog: pytest.LogCaptureFixture,
) -> None:
    snaps = history(5)
    j = SnapshotJournal(path)
    j.persist_snapshot(snaps[0])
    for a, b in pairwise(snaps[:3]):
        j.persist_delta(diff(a, b), b)
    if tail == b"torn":
        whole = DeltaMessage(diff(snaps[2], snaps[3])).encode().encode()
        tail = whole[: len(whole) // 2]  # a crash in the middle of an append
    with open(j.journal_path, "ab") as f:
        f.write(tail)
    caplog.set_level(logging.WARNING, logger="flint.gateway.snapshot_journal")
    assert load_snapshot_file(path) == snaps[2]
    assert "event=snapshot_journal_stopped" in caplog.text and "line=3" in caplog.text

    # the next append cuts the bad tail off and chains on what was reached
    assert SnapshotJournal(path).persist_delta(diff(snaps[2], snaps[3]), snaps[3]) is Action.APPEND
    assert len(journal_lines(j)) == 3
    assert load_snapshot_file(path) == snaps[3]


def test_a_line_that_does_not_chain_stops_the_replay(
    path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    snaps = history(5)
    j = SnapshotJournal(path)
    j.persist_snapshot(snaps[0])
    j.persist_delta(diff(snaps[0], snaps[1]), snaps[1])
    with open(j.journal_path, "ab") as f:  # 3 -> 4 after 1: a gap
        f.write(DeltaMessage(diff(snaps[3], snaps[4])).encode().encode() + b"\n")
    caplog.set_level(logging.WARNING, logger="flint.gateway.snapshot_journal")
    assert load_snapshot_file(path) == snaps[1]
    assert "line=2" in caplog.text and "does not apply to version 11" in caplog.text
    assert j.persisted().journal_version == 11


def test_a_journal_left_by_an_interrupted_compaction_is_neither_replayed_nor_extended(
    path: Path,
) -> None:
    snaps = history(6)
    j = SnapshotJournal(path)
    j.persist_snapshot(snaps[0])
    j.persist_delta(diff(snaps[0], snaps[1]), snaps[1])
    stale = j.journal_path.read_bytes()
    j.persist_snapshot(snaps[4])
    j.journal_path.write_bytes(stale)  # the crash came before the journal was removed
    assert load_snapshot_file(path) == snaps[4]
    assert j.persisted() == Persisted(14, path.stat().st_size, None, 0, 0)
    assert SnapshotJournal(path).persist_delta(diff(snaps[4], snaps[5]), snaps[5]) is Action.APPEND
    assert journal_lines(j) == [DeltaMessage(diff(snaps[4], snaps[5])).encode().encode()]
    assert load_snapshot_file(path) == snaps[5]


def test_the_line_bound_compacts_and_empties_the_journal(path: Path) -> None:
    snaps = history(7)
    j = SnapshotJournal(path, JournalSettings(max_lines=3))
    j.persist_snapshot(snaps[0])
    actions = [j.persist_delta(diff(a, b), b) for a, b in pairwise(snaps)]
    assert actions == [Action.APPEND] * 3 + [Action.COMPACT] + [Action.APPEND] * 2
    assert j.persisted() == Persisted(14, path.stat().st_size, 16, 2, j.journal_path.stat().st_size)
    assert path.read_bytes() == encode_snapshot(snaps[4])
    assert load_snapshot_file(path) == snaps[6]


def test_the_byte_bound_compacts_a_journal_of_big_deltas(path: Path) -> None:
    j = SnapshotJournal(path, JournalSettings(max_bytes_ratio=0.5, min_compact_bytes=0))
    services = {f"s{i}": 1 for i in range(4)}
    snaps = [snapshot(10 + k, {n: k for n in services}) for k in range(4)]  # all change each time
    j.persist_snapshot(snaps[0])
    actions = [j.persist_delta(diff(a, b), b) for a, b in pairwise(snaps)]
    # one line is over half the snapshot file: the next delta compacts
    assert actions == [Action.APPEND, Action.COMPACT, Action.APPEND]
    assert path.read_bytes() == encode_snapshot(snaps[2])
    assert len(journal_lines(j)) == 1
    assert load_snapshot_file(path) == snaps[-1]


def test_the_byte_bound_is_relative_to_the_snapshot_file() -> None:
    settings = JournalSettings(max_lines=1000, max_bytes_ratio=0.25, min_compact_bytes=100)
    delta = SnapshotDelta(base=5, version=6)
    def at(end: int, snapshot_bytes: int) -> Action:
        return for_delta(Persisted(4, snapshot_bytes, 5, 3, end), delta, settings)
    assert at(end=2_500, snapshot_bytes=10_000) is Action.APPEND
    assert at(end=2_501, snapshot_bytes=10_000) is Action.COMPACT
    assert at(end=100, snapshot_bytes=40) is Action.APPEND  # the floor
    assert at(end=101, snapshot_bytes=40) is Action.COMPACT


def test_two_workers_interleaving_keep_a_loadable_newest_state(path: Path) -> None:
    snaps = history(40, seed=3)
    rnd = random.Random(7)
    workers = [SnapshotJournal(path, JournalSettings(max_lines=5)) for _ in range(2)]
    served = [0, 0]  # index in `snaps` each worker serves
    workers[0].persist_snapshot(snaps[0])
    newest = 0
    while min(served) < len(snaps) - 1:
        w = rnd.randrange(2)
        if served[w] == len(snaps) - 1:
            continue
        if rnd.random() < 0.1:  # a relink: a full snapshot a few versions on
            served[w] = min(len(snaps) - 1, served[w] + rnd.randint(1, 3))
            workers[w].persist_snapshot(snaps[served[w]])
        else:
            a, b = snaps[served[w]], snaps[served[w] + 1]
            served[w] += 1
            workers[w].persist_delta(diff(a, b), b)
        newest = max(newest, served[w])
        assert load_snapshot_file(path) == snaps[newest]
        assert all(x.persisted().version == snaps[newest].version for x in workers)
    assert load_snapshot_file(path) == snaps[-1]


def test_the_persisted_version_is_read_without_parsing_the_snapshot(
    path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"version": 42, "routes": [this is not JSON')
    j = SnapshotJournal(path)
    assert j.persisted().snapshot_version == 42
    assert not j.persist_snapshot(snapshot(41, {"a": 1}))  # older: kept
    with pytest.raises(WireError):
        j.load()

    def no_parsing(data: str | bytes) -> Snapshot:
        raise AssertionError("the snapshot file was parsed")

    monkeypatch.setattr(snapshot_journal, "load_snapshot", no_parsing)
    a, b = snapshot(42, {"a": 1}), snapshot(43, {"a": 2})
    assert j.persist_delta(diff(a, b), b) is Action.APPEND


def test_a_snapshot_file_whose_version_is_unreadable_is_replaced(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"routes": [], "version": 9}')  # not as encode_snapshot writes it
    j = SnapshotJournal(path)
    assert j.persisted().snapshot_version is None
    a, b = snapshot(2, {"a": 1}), snapshot(3, {"a": 2})
    assert j.persist_delta(diff(a, b), b) is Action.COMPACT
    assert load_snapshot_file(path) == b


def test_no_files_load_as_none_and_a_first_delta_writes_the_snapshot(path: Path) -> None:
    assert load_snapshot_file(path) is None
    a, b = snapshot(2, {"a": 1}), snapshot(3, {"a": 2})
    assert SnapshotJournal(path).persist_delta(diff(a, b), b) is Action.COMPACT
    assert load_snapshot_file(path) == b == apply_delta(a, diff(a, b))


def test_a_short_write_raises_and_the_next_append_cuts_the_partial_line(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    snaps = history(4)
    j = SnapshotJournal(path)
    j.persist_snapshot(snaps[0])
    assert j.persist_delta(diff(snaps[0], snaps[1]), snaps[1]) is Action.APPEND
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:7]))
    with pytest.raises(OSError, match="wrote 7 of"):
        j.persist_delta(diff(snaps[1], snaps[2]), snaps[2])
    monkeypatch.undo()
    assert load_snapshot_file(path) == snaps[1]  # the partial line is not replayed
    assert SnapshotJournal(path).persist_delta(diff(snaps[1], snaps[2]), snaps[2]) is Action.APPEND
    assert load_snapshot_file(path) == snaps[2]
