"""Which gateway owns which limited replica (`controller.routing_subsets`)."""

from __future__ import annotations

import random

import pytest

from controller.routing_subsets import assign_owners, owned_by


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


@pytest.mark.parametrize(("replicas", "gateways"), [(1, 1), (1, 3), (4, 3), (5, 3), (12, 4), (7, 1), (3, 7)])
def test_every_replica_has_exactly_one_owner_and_the_loads_differ_by_one_at_most(
        replicas: int, gateways: int) -> None:
    rs, gs = names("ns/r", replicas), names("gw", gateways)
    owners = assign_owners(rs, gs)
    assert sorted(owners) == sorted(rs) and set(owners.values()) <= set(gs)
    loads = [len(owned_by(owners, g)) for g in gs]
    assert sum(loads) == replicas and max(loads) - min(loads) <= 1


def test_it_depends_on_the_sets_only() -> None:
    rs, gs = names("ns/r", 9), names("gw", 4)
    shuffled_r, shuffled_g = random.Random(7).sample(rs, len(rs)), random.Random(8).sample(gs, len(gs))
    assert assign_owners(rs, gs) == assign_owners(shuffled_r, shuffled_g) == assign_owners(rs + rs, gs)


def test_nothing_to_assign() -> None:
    assert assign_owners([], ["gw-0"]) == {} and assign_owners(["ns/r-0"], []) == {}


def test_a_gateway_joining_or_leaving_moves_few_replicas() -> None:
    """Beyond the replicas that must move (a leaver's; a joiner's fair share), at most a few more
    change owner, over a grid of sizes."""
    for r in range(1, 30):
        for g in range(1, 7):
            rs, gs = names("ns/r", r), names("gw", g)
            before = assign_owners(rs, gs)
            joined = assign_owners(rs, [*gs, "gw-new"])
            assert sum(before[x] != joined[x] for x in rs) - r // (g + 1) <= 5, (r, g)
            if g > 1:
                left = assign_owners(rs, gs[1:])
                must = len(owned_by(before, "gw-0"))
                assert sum(before[x] != left[x] for x in rs) - must <= 5, (r, g)
