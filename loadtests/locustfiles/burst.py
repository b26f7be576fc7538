"""Burst from zero: many users at once against a service with no replica.

Bring the service to zero first (idle past its stable window; `flint get rev` shows 0 replicas),
then spawn every user in the first second (`-r` equal to `-u`). Each user sends `GET
--flint-path` to `--flint-host` back to back. The gateway queues the requests while the revision
starts, so no request should fail. When the test stops, this prints (and writes as JSON to
`--burst-json PATH`): the replicas the targeted revisions had at the start (from the API), the
time from the first request to the first success, the time until every user had an answer, and
the failures by kind. The exit code is 1 when there were failures (locust's
`--exit-code-on-error`), when nothing succeeded, or when the first success took longer than
`--burst-max-first-success SECONDS` (when given). Example::

    locust -f loadtests/locustfiles/burst.py --headless -u 100 -r 100 --run-time 15s \\
        --host http://127.0.0.1:8080 --flint-host hello.default.localhost --only-summary

Times are wall-clock, so with `--processes N` the workers' tallies (on one machine) add up.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from locust import events, task
from locust.env import Environment

from loadtests.locustfiles import BurstTally, burst_table, expected_split
from loadtests.locustfiles.common import (
    FlintUser,
    api_url,
    fetch_object,
    fetch_service,
    is_worker,
    listener,
    on_test_end,
    option,
    target_service,
)

log = logging.getLogger("flint.locust.burst")
REPORT_KEY = "flint_burst"


class _State:
    def __init__(self) -> None:
        self.tally = BurstTally()
        self.replicas_at_start: int | None = None
        self.start_note = ""


state = _State()


@listener(events.init_command_line_parser)
def _burst_options(parser: Any) -> None:
    group = parser.add_argument_group("Flint burst from zero")
    group.add_argument("--burst-max-first-success", type=float, default=0.0, metavar="SECONDS",
                       help="fail when the first success takes longer than this (default 0: no bar)")
    group.add_argument("--burst-json", default="", metavar="PATH",
                       help="also write the burst report as JSON to PATH")


def _replicas(environment: Environment) -> tuple[int | None, str]:
    """Replicas of the revisions the route sends traffic to (`status.actualReplicas`), from the API."""
    target = target_service(environment)
    if target is None:
        return None, "no service named (--flint-host or --flint-service)"
    namespace, name = target
    api = api_url(environment)
    try:
        revisions = expected_split(fetch_service(api, namespace, name))
        total = 0
        for rev in revisions:
            status = fetch_object(api, namespace, "revisions", rev).get("status") or {}
            total += int(status.get("actualReplicas") or 0)
    except Exception as exc:
        return None, f"could not read {namespace}/{name} from {api}: {exc}"
    return total, ""


@listener(events.test_start)
def _on_test_start(environment: Environment, **_: Any) -> None:
    state.tally = BurstTally()
    state.replicas_at_start, state.start_note = None, ""
    if not is_worker(environment):
        state.replicas_at_start, state.start_note = _replicas(environment)


@listener(events.report_to_master)
def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data[REPORT_KEY] = state.tally.to_json()
    state.tally = BurstTally()


@listener(events.worker_report)
def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    if REPORT_KEY in data:
        state.tally.merge(data[REPORT_KEY])


@on_test_end
def _report(environment: Environment) -> None:
    t = state.tally
    at_start = "unknown" if state.replicas_at_start is None else str(state.replicas_at_start)
    print("\nBurst from zero\n", flush=True)
    print(burst_table(t), flush=True)
    print(f"\nreplicas at the start: {at_start}" + (f" ({state.start_note})" if state.start_note else ""),
          flush=True)
    if state.replicas_at_start:
        print("warning: the service was not at zero replicas when the burst started", flush=True)
    problems: list[str] = []
    bar = float(option(environment, "burst_max_first_success", 0.0) or 0.0)
    first = t.time_to_first_success_s
    if t.successes == 0:
        problems.append("no request succeeded")
    elif bar > 0 and first is not None and first > bar:
        problems.append(f"the first success took {first:.3f} s, over the bar of {bar:g} s")
    for p in problems:
        print(f"problem: {p}", flush=True)
    print("", flush=True)
    path = str(option(environment, "burst_json", "") or "")
    if path:
        Path(path).write_text(json.dumps(
            {**t.summary(), "replicas_at_start": state.replicas_at_start, "problems": problems},
            indent=2) + "\n")
    if problems:
        log.error("burst from zero: %s", "; ".join(problems))
        environment.process_exit_code = 1


class BurstUser(FlintUser):
    def on_start(self) -> None:
        self._sent = False
        self._answered = False

    @task
    def get(self) -> None:
        state.tally.sent(time.time(), first_of_user=not self._sent)
        self._sent = True
        with self.client.get(self.path, catch_response=True) as resp:
            status = resp.status_code or 0  # 0: no answer (connection error, timeout)
        ok = 200 <= status < 400
        if ok:
            error = ""
        elif status:
            error = f"status {status}"
        else:
            exc = getattr(resp, "error", None)
            error = type(exc).__name__ if exc is not None else "no response"
        state.tally.answered(time.time(), ok, first_of_user=ok and not self._answered, error=error)
        self._answered = self._answered or ok
