"""Fixtures of the integration tests: one `flint up` per module, stopped and checked at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.harness import Flint, start_flint, stop_flint
from support.redis_server import redis_client, redis_server, redis_servers

__all__ = ["flint", "redis_client", "redis_server", "redis_servers"]  # the fixtures: a real redis-server too


@pytest.fixture(scope="module")
def flint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flint]:
    f = start_flint(tmp_path_factory.mktemp("flint"))
    try:
        yield f
    finally:
        stop_flint(f)


