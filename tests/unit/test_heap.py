"""heap.settle: garbage collected first, what is alive frozen out of the collector's passes and
still freed by reference counting when dropped."""

from __future__ import annotations

import gc
import weakref

from flint_common import heap


class Entry:
    """A stand-in for a routing entry (weak-referenceable)."""


def test_settled_objects_are_skipped_by_collections_and_freed_when_dropped() -> None:
    kept = [Entry() for _ in range(1000)]
    probe = weakref.ref(kept[0])
    before = gc.get_freeze_count()
    try:
        heap.settle()
        assert gc.get_freeze_count() >= before + len(kept)
        del kept
        assert probe() is None  # reference counting frees a frozen object
    finally:
        gc.unfreeze()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_garbage_cycles_are_collected_before_the_freeze() -> None:
    garbage = Cycle()
    probe = weakref.ref(garbage)
    del garbage
    try:
        heap.settle()
        assert probe() is None  # collected, not frozen with the living
    finally:
        gc.unfreeze()
