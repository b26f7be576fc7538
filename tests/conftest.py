"""Fixtures of every test: the event-loop guards (STYLE.md habit #6, "Guard the event loop").

Each in-process test runs with `flint_common.guards` on: a blocking call made through Flint's
code on an event loop (file I/O, ``os.stat``, ``time.sleep``, a contended lock...) raises
blockbuster's ``BlockingError``, and any SQLite statement on a loop raises
``SqliteBlockingError``. The test also fails when the code under test caught such an error and
went on. A test whose point is to block on a loop opts out with ``@pytest.mark.allow_blocking``.
Processes the tests start (``flint up``) guard themselves: the harness sets ``FLINT_BLOCKBUSTER=1``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from flint_common import guards

_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_blocking: run without the event-loop guards (the test blocks a loop on purpose)",
    )


@pytest.fixture(autouse=True)
def guard_event_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("allow_blocking") is not None:
        yield
        return
    guards.take_reports()  # what an opted-out test left is not this test's
    with guards.guarded():
        yield
    reports = guards.take_reports()
    if reports and not request.node.stash.get(_CALL_FAILED, False):  # a failed test shows its error
        pytest.fail(
            f"{len(reports)} blocking call(s) on an event loop (caught by the code under test?):\n\n"
            + "\n\n".join(reports[:5]),
            pytrace=False,
        )
