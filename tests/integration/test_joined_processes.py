"""Extra gateways and dispatchers joined to one running `flint up` (loadtests.flint_process), as
several machines would run them against one controller; `stop_flint` stops and reaps them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from support.harness import APPS, Flint, fetch, pid_alive, poll, procs_mentioning, start_flint

from loadtests import flint_process

ECHO = str(APPS / "echo")


def _ready(obj: dict) -> bool:  # type: ignore[type-arg]
    conds = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}
    return conds.get("Ready") == "True" and conds.get("IngressReady", "True") == "True"


def _revision(f: Flint, port: int, service: str) -> str:
    status, _, body = asyncio.run(fetch(port, f.host(service), deadline_s=30))
    assert status == 200, body
    return str(json.loads(body)["revision"])


def test_an_extra_gateway_serves_the_routes_and_stop_reaps_it(tmp_path: Path) -> None:
    f = start_flint(tmp_path)
    stopped = False
    try:
        gw = f.start_gateway(workers=2)
        # The controller counts the joined gateway's workers with flint up's.
        poll(lambda: all(f"worker={gw.gateway_id}/{i} " in f.logs(None) for i in range(2)), 30,
             "the controller to see both workers of the extra gateway")
        members = procs_mentioning(str(gw.state_dir))
        assert gw.proc.pid in members and len(members) >= 3, members  # main and two workers

        # Ready (IngressReady included) means every connected worker serves the route: the
        # extra gateway's answer the request at once, with the revision the status names.
        f.cli("service", "create", "two", "--image", ECHO, "--env", "TARGET=one")
        assert _ready(f.get("route", "two")) and _ready(f.get("ksvc", "two"))
        assert _revision(f, gw.port, "two") == "two-00001"
        assert _revision(f, f.port, "two") == "two-00001"
        f.cli("service", "update", "two", "--env", "TARGET=two")
        assert _ready(f.get("route", "two"))
        for _ in range(10):  # either worker may answer: all of them serve the new revision
            assert _revision(f, gw.port, "two") == "two-00002"

        # A dispatcher paired with it comes up too.
        disp = f.start_dispatcher(gateway=gw)
        assert disp.state_dir == gw.state_dir and f"--gateway http://127.0.0.1:{gw.port}" in " ".join(
            disp.argv
        )
        assert flint_process.http_ok(disp.admin + "/healthz")

        pids = [*members, disp.proc.pid]
        problems = flint_process.stop_flint(f)
        stopped = True
        assert problems == []  # everything stopped on its signal: nothing had to be killed
        assert gw.proc.returncode == 0 and disp.proc.returncode == 0, (gw.logs(), disp.logs())
        assert not [p for p in pids if pid_alive(p)]
        assert procs_mentioning(str(gw.state_dir)) == {}
        assert procs_mentioning(str(f.state_dir)) == {}
    finally:
        if not stopped:
            flint_process.stop_flint(f)


def test_stop_kills_a_joined_gateway_that_ignores_sigterm(tmp_path: Path) -> None:
    f = start_flint(tmp_path)
    stopped = False
    try:
        gw = f.start_gateway()
        members = procs_mentioning(str(gw.state_dir))
        for pid in members:  # stopped: it cannot act on SIGTERM (SIGKILL still ends it)
            os.kill(pid, signal.SIGSTOP)
        problems = flint_process.stop_flint(f, joined_timeout_s=1)
        stopped = True
        assert len(problems) == 1 and f"the gateway {gw.name} did not stop" in problems[0], problems
        assert not [p for p in members if pid_alive(p)]
        assert procs_mentioning(str(gw.state_dir)) == {}
    finally:
        if not stopped:
            flint_process.stop_flint(f)
