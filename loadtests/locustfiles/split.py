"""Traffic-split check: count answers per revision and compare with the route's percentages.

Each user sends `GET --flint-path` to `--flint-host` and reads which revision answered: a JSON
answer by its `--revision-field` (default `revision`: tests/apps/echo, loadtests/apps/sleepy,
examples/hello's `/json`), a plain-text one with `--revision-regex` (default: the word `revision`
and the name after it, as in examples/hello's `Hello World! (revision hello-00001)`). A 2xx
answer that names no revision is a failure.

When the test ends (`test_stop`; on a master, `quitting`, after the workers' last reports), it reads the
Service's `status.traffic` from the API (`--flint-api`/`FLINT_API`, the service named by
`--flint-host`, or `--flint-service`/`--flint-namespace`), prints the observed share of each
revision against its percentage as a table (and as JSON to `--split-json PATH`), and sets the
exit code to 1 when any revision's share is off by more than `--split-tolerance` percentage
points (default 5), when the route's percentages changed during the run, or when it cannot read
them. The gateway picks a revision at random per request, so small runs are noisy: the table warns
when 3 binomial standard deviations exceed the tolerance. Example::

    locust -f loadtests/locustfiles/split.py --headless -u 10 -r 10 --run-time 30s \\
        --host http://127.0.0.1:8080 --flint-host hello.default.localhost --only-summary
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from locust import events, task
from locust.env import Environment

from loadtests.locustfiles import (
    DEFAULT_REVISION_FIELD,
    DEFAULT_REVISION_REGEX,
    DEFAULT_TOLERANCE_PP,
    compare_split,
    expected_split,
    revision_of,
    split_table,
)
from loadtests.locustfiles.common import (
    FlintUser,
    api_url,
    fetch_service,
    is_worker,
    listener,
    on_test_end,
    option,
    target_service,
)

log = logging.getLogger("flint.locust.split")
REPORT_KEY = "flint_split"


class _State:
    """Answers counted in this process since the test started (on a worker: since its last report
    to the master, which adds them up)."""

    def __init__(self) -> None:
        self.observed: Counter[str] = Counter()
        self.unrecognized = 0
        self.at_start: dict[str, float] | None = None
        self.regex: re.Pattern[str] = re.compile(DEFAULT_REVISION_REGEX)
        self.field = DEFAULT_REVISION_FIELD

    def clear(self) -> None:
        self.observed.clear()
        self.unrecognized = 0
        self.at_start = None


state = _State()


@listener(events.init_command_line_parser)
def _split_options(parser: Any) -> None:
    group = parser.add_argument_group("Flint traffic split")
    group.add_argument("--split-tolerance", type=float, default=DEFAULT_TOLERANCE_PP, metavar="PP",
                       help="fail when a revision's observed share is off by more than this many "
                            f"percentage points (default {DEFAULT_TOLERANCE_PP:g})")
    group.add_argument("--revision-regex", default=DEFAULT_REVISION_REGEX, metavar="REGEX",
                       help="finds the revision in a plain-text answer (its first group)")
    group.add_argument("--revision-field", default=DEFAULT_REVISION_FIELD, metavar="FIELD",
                       help="the JSON field naming the revision (dotted for nested objects)")
    group.add_argument("--split-json", default="", metavar="PATH",
                       help="also write the split report as JSON to PATH")


@listener(events.init)
def _on_init(environment: Environment, **_: Any) -> None:
    tolerance = float(option(environment, "split_tolerance", DEFAULT_TOLERANCE_PP))
    if tolerance < 0:
        sys.exit(f"--split-tolerance must be ≥ 0, got {tolerance:g}")
    try:
        state.regex = re.compile(str(option(environment, "revision_regex", DEFAULT_REVISION_REGEX)))
    except re.error as exc:
        sys.exit(f"--revision-regex: {exc}")
    state.field = str(option(environment, "revision_field", DEFAULT_REVISION_FIELD))


def _route_split(environment: Environment) -> tuple[str, dict[str, float] | None, str]:
    """(namespace/service, its percentages or None, the error reading them)."""
    target = target_service(environment)
    if target is None:
        return "?", None, "no service to check: give --flint-host or --flint-service"
    namespace, name = target
    api = api_url(environment)
    try:
        return f"{namespace}/{name}", expected_split(fetch_service(api, namespace, name)), ""
    except Exception as exc:
        return f"{namespace}/{name}", None, f"could not read service {namespace}/{name} from {api}: {exc}"


@listener(events.test_start)
def _on_test_start(environment: Environment, **_: Any) -> None:
    state.clear()
    if not is_worker(environment):
        state.at_start = _route_split(environment)[1]


@listener(events.report_to_master)
def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data[REPORT_KEY] = {"observed": dict(state.observed), "unrecognized": state.unrecognized}
    state.observed.clear()
    state.unrecognized = 0


@listener(events.worker_report)
def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    part = data.get(REPORT_KEY) or {}
    state.observed.update({str(k): int(v) for k, v in dict(part.get("observed", {})).items()})
    state.unrecognized += int(part.get("unrecognized", 0))


@on_test_end
def _report(environment: Environment) -> None:
    name, expected, error = _route_split(environment)
    problems: list[str] = [error] if error else []
    if expected is not None and state.at_start is not None and expected != state.at_start:
        problems.append(f"the route's traffic changed during the run (from {state.at_start} to {expected})")
    report = compare_split(
        expected or {}, state.observed, unrecognized=state.unrecognized, problems=tuple(problems),
        tolerance_pp=float(option(environment, "split_tolerance", DEFAULT_TOLERANCE_PP)),
    )
    print(f"\nTraffic split of {name}: observed answers against the route's percentages\n", flush=True)
    print(split_table(report) + "\n", flush=True)
    path = str(option(environment, "split_json", "") or "")
    if path:
        Path(path).write_text(json.dumps({"service": name, **report.to_json()}, indent=2) + "\n")
    if not report.ok:
        log.error("traffic split check failed")
        environment.process_exit_code = 1


class SplitUser(FlintUser):
    @task
    def get(self) -> None:
        with self.client.get(self.path, catch_response=True) as resp:
            if not 200 <= (resp.status_code or 0) < 300:
                return  # locust reports the failed request itself
            revision = revision_of(resp.content or b"", str(resp.headers.get("content-type") or ""),
                                   regex=state.regex, json_field=state.field)
            if revision is None:
                state.unrecognized += 1
                resp.failure("no revision named in the answer")
            else:
                state.observed[revision] += 1
