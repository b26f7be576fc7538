"""Micro-benchmark of `Balancer.acquire` + `release`, the per-request hot path of the router.

Why: issue 10 §2 gave the balancer learned per-replica in-flight limits (commit ef574e7). The
common case (no replica has a learned limit) must cost what it did before (`if learned:` on an
empty dict), and the rare case (some replica refused a connection) must stay cheap. This
measures ns per acquire+release pair, CPU time only (`time.process_time_ns`), for:

- CC=0 one endpoint, CC=0 four endpoints (power of two choices), CC=10 four endpoints
  (round-robin), each without a learned limit and with one on one endpoint (high enough never
  to refuse: it measures the filtering, not refusals);

for the balancer of this checkout and the one before the change (`git show
ef574e7~1:gateway/balancer.py`, loaded as a module from a temporary file; skipped when git or
that commit is not at hand). Both are run alternately, `--repeat` times, and the medians are
reported side by side with their difference. Bounded: fixed iteration counts, well under 30 s.

    python -m loadtests.bench_balancer [--iterations 100000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

from flint_common.snapshot import Endpoint, RevisionTarget, Snapshot
from gateway import balancer as current_balancer

BEFORE = "ef574e7~1"
"""The commit whose balancer is the baseline (the parent of the learned-limits change)."""

REPO = Path(__file__).resolve().parent.parent


class BalancerLike(Protocol):
    """What both balancers have in common (the hot path)."""

    def update(self, snapshot: Snapshot) -> None: ...
    def acquire(
        self, rev: RevisionTarget, rnd: Callable[[], float], exclude: Collection[str] = ()
    ) -> Endpoint | None: ...
    def release(self, endpoint_id: str) -> bool: ...


@dataclass(frozen=True)
class Case:
    name: str
    cc: int
    endpoints: int
    learned: bool


CASES = [
    Case(f"CC={cc} {n} endpoint{'s' if n > 1 else ''}{' +learned' if learned else ''}", cc, n, learned)
    for learned in (False, True)
    for cc, n in ((0, 1), (0, 4), (10, 4))
]


def revision(cc: int, n: int) -> RevisionTarget:
    return RevisionTarget(
        namespace="default", name="bench-1", service="bench", timeout_s=300.0,
        response_start_timeout_s=0.0, idle_timeout_s=0.0, container_concurrency=cc,
        endpoints=tuple(Endpoint(f"e{i}", "127.0.0.1", 10000 + i) for i in range(n)),
    )


def load_before() -> ModuleType | None:
    """`gateway/balancer.py` as of `BEFORE`, as a module; None when it cannot be had."""
    try:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{BEFORE}:gateway/balancer.py"],
            check=True, capture_output=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "balancer_before.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("balancer_before", path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and annotations resolve through it
        spec.loader.exec_module(module)
    return module


def setup(module: ModuleType, case: Case) -> tuple[BalancerLike, RevisionTarget]:
    rev = revision(case.cc, case.endpoints)
    b: BalancerLike = module.Balancer()
    b.update(Snapshot(version=1, routes=(), revisions=(rev,)))
    if case.learned:
        lower = getattr(b, "lower", None)
        if lower is not None:  # the baseline has no learned limits: it runs the plain path
            lower("e0", 1_000)
    return b, rev


def run_once(module: ModuleType, case: Case, iterations: int) -> float:
    """ns per acquire+release pair over `iterations` pairs (CPU time)."""
    b, rev = setup(module, case)
    rnd = random.Random(7).random
    acquire, release = b.acquire, b.release
    for _ in range(1000):  # warm up
        ep = acquire(rev, rnd)
        assert ep is not None
        release(ep.id)
    if "exempt" in inspect.signature(release).parameters:
        # As `Router.release` calls it: with `exempt` passed (a call that leaves a default to
        # fill is a slower call in CPython, ~20 ns, and not the one the gateway makes).
        release_exempt: Callable[[str, bool], bool] = release  # type: ignore[assignment]
        t0 = time.process_time_ns()
        for _ in range(iterations):
            ep = acquire(rev, rnd)
            release_exempt(ep.id, False)  # type: ignore[union-attr]  # never None here
        return (time.process_time_ns() - t0) / iterations
    t0 = time.process_time_ns()
    for _ in range(iterations):
        ep = acquire(rev, rnd)
        release(ep.id)  # type: ignore[union-attr]  # never None: nothing stays in flight
    return (time.process_time_ns() - t0) / iterations


def measure(
    modules: Sequence[tuple[str, ModuleType]], iterations: int, repeat: int
) -> dict[tuple[str, str], float]:
    """(case, module label) → median ns per pair; modules alternate within each repetition."""
    runs: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeat):
        for case in CASES:
            for label, module in modules:
                runs.setdefault((case.name, label), []).append(run_once(module, case, iterations))
    return {k: statistics.median(v) for k, v in runs.items()}


def table(results: dict[tuple[str, str], float], with_before: bool) -> str:
    width = max(len(c.name) for c in CASES)
    if not with_before:
        lines = [f"{'case':<{width}}  {'after ns':>9}"]
        lines += [f"{c.name:<{width}}  {results[(c.name, 'after')]:>9.0f}" for c in CASES]
        return "\n".join(lines)
    lines = [f"{'case':<{width}}  {'before ns':>9}  {'after ns':>9}  {'diff ns':>8}  {'diff':>7}"]
    for c in CASES:
        before, after = results[(c.name, "before")], results[(c.name, "after")]
        diff = after - before
        lines.append(
            f"{c.name:<{width}}  {before:>9.0f}  {after:>9.0f}  {diff:>+8.0f}  {diff / before:>+7.1%}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=100_000, help="pairs per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs per case and balancer")
    args = parser.parse_args(argv)
    iterations = max(1, min(args.iterations, 1_000_000))
    repeat = max(1, min(args.repeat, 21))
    before = load_before()
    modules: list[tuple[str, ModuleType]] = [("after", current_balancer)]
    if before is None:
        print(f"(the balancer of {BEFORE} is not at hand: measuring this checkout only)")
    else:
        modules.insert(0, ("before", before))
    t0 = time.monotonic()
    results = measure(modules, iterations, repeat)
    print(f"acquire+release, ns per pair (median of {repeat} runs of {iterations} pairs, CPU time)")
    print(table(results, before is not None))
    print(f"({time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
