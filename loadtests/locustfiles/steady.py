"""Steady traffic to one Flint service through the gateway.

Each user sends `GET --flint-path` with `--flint-host` as the Host header, back to back or at
`--user-rate` requests per second; any answer other than 2xx/3xx is a failure. Locust's own
statistics (`--only-summary`, `--csv`) are the report. Example (bounded in users and time)::

    locust -f loadtests/locustfiles/steady.py --headless -u 10 -r 10 --run-time 30s \\
        --host http://127.0.0.1:8080 --flint-host hello.default.localhost --only-summary
"""

from __future__ import annotations

from locust import task

from loadtests.locustfiles.common import FlintUser


class SteadyUser(FlintUser):
    @task
    def get(self) -> None:
        self.client.get(self.path)
