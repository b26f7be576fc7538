"""Pure statistics for the benchmark: medians, percentiles, ratios and the pairing of alternated runs.

Paths are measured alternately (A B C A B C …), so the runs of one round saw the same machine
conditions; a ratio is computed per round (paired) and the median of the per-round ratios is
reported next to the ratio of the medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from loadtests.scale_from_zero import percentile

__all__ = ["alternate", "by_path", "median", "pair_rounds", "paired_ratios", "percentile", "ratio"]

T = TypeVar("T")


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is unknown or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def alternate(paths: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """The measuring order: (round, path) for A B C A B C … over `rounds` rounds."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    return [(r, p) for r in range(rounds) for p in paths]


def pair_rounds(runs: Sequence[tuple[int, str, T]]) -> dict[int, dict[str, T]]:
    """Group alternated runs `(round, path, result)` by round: round → path → result. A path
    measured twice in one round is an error (the order was not A B C …)."""
    out: dict[int, dict[str, T]] = {}
    for rnd, path, result in runs:
        slot = out.setdefault(rnd, {})
        if path in slot:
            raise ValueError(f"path {path!r} measured twice in round {rnd}")
        slot[path] = result
    return out


def paired_ratios(
    rounds: Mapping[int, Mapping[str, T]], num: str, den: str, value: Callable[[T], float | None]
) -> list[float]:
    """value(num) / value(den) for every round that has both paths and both values."""
    out: list[float] = []
    for rnd in sorted(rounds):
        slot = rounds[rnd]
        if num in slot and den in slot:
            r = ratio(value(slot[num]), value(slot[den]))
            if r is not None:
                out.append(r)
    return out


def by_path(runs: Sequence[tuple[int, str, T]]) -> dict[str, list[T]]:
    """path → its results in round order."""
    out: dict[str, list[T]] = {}
    for _, path, result in sorted(runs, key=lambda x: x[0]):
        out.setdefault(path, []).append(result)
    return out
