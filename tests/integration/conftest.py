"""Fixtures of the integration tests: one `flint up` per module, stopped and checked at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.harness import Flint, start_flint, stop_flint


@pytest.fixture(scope="module")
def flint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flint]:
    f = start_flint(tmp_path_factory.mktemp("flint"))
    try:
        yield f
    finally:
        stop_flint(f)


