"""Locust glue shared by Flint's scenarios: the Flint options, the Host header, the API lookup.

Options (on locust's command line, or from the environment):

- `--flint-host HOST` / `FLINT_HOST`: the service's host, e.g. `hello.default.localhost`, sent as
  the `Host` header of every request. Python's resolver does not resolve `*.localhost`, so run
  with `--host http://127.0.0.1:8080` (the gateway) and name the service here.
- `--flint-path PATH` / `FLINT_PATH`: the path every user requests (default `/`).
- `--flint-api URL` / `FLINT_API`: Flint's API (default `http://127.0.0.1:8081`), read by the
  split check for the route's percentages, with the owner's token from `FLINT_TOKEN` (an
  environment variable only: a token on the command line would show in `ps`).
- `--flint-service NAME`, `--flint-namespace NS`: the service the API is asked about (default:
  read from `--flint-host`, `{service}.{namespace}.{domain}`; give them for a tag's host).
- `--user-rate N`: requests per second per user (`constant_throughput`); 0 (the default) sends
  the next request as soon as the previous one is answered.

Importing this module imports locust (and so gevent's monkey patching): only locustfiles do.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from locust import FastHttpUser, events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.user.wait_time import constant, constant_throughput

from loadtests.locustfiles import service_of_host

log = logging.getLogger("flint.locust")
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_API = "http://127.0.0.1:8081"
DEFAULT_GATEWAY = "http://127.0.0.1:8080"


def listener(hook: Any) -> Callable[[F], F]:
    """`@listener(events.test_stop)`: `hook.add_listener` as a typed decorator (locust's is not)."""
    def register(fn: F) -> F:
        hook.add_listener(fn)
        return fn

    return register


@listener(events.init_command_line_parser)
def _flint_options(parser: Any) -> None:
    group = parser.add_argument_group("Flint")
    group.add_argument("--flint-host", env_var="FLINT_HOST", default="", metavar="HOST",
                       help="the service's host, sent as the Host header of every request "
                            "(e.g. hello.default.localhost; run with --host http://127.0.0.1:8080)")
    group.add_argument("--flint-path", env_var="FLINT_PATH", default="/", metavar="PATH",
                       help="the path every user requests (default /)")
    group.add_argument("--flint-api", env_var="FLINT_API", default=DEFAULT_API, metavar="URL",
                       help=f"Flint's API, for the route's traffic split (default {DEFAULT_API})")
    group.add_argument("--flint-service", default="", metavar="NAME",
                       help="the service the API is asked about (default: the first label of "
                            "--flint-host; give it for a tag's host)")
    group.add_argument("--flint-namespace", default="", metavar="NS",
                       help="its namespace (default: the second label of --flint-host, else default)")
    group.add_argument("--user-rate", type=float, default=0.0, metavar="N",
                       help="requests per second per user; 0 (default): back to back")


def on_test_end(fn: Callable[[Environment], None]) -> Callable[[Environment], None]:
    """Register `fn(environment)` to run once at the end of a test, where the totals are: on a
    standalone locust at `test_stop`; on a master (`--processes`, `--master`) at `quitting`, after
    the workers' final reports (a quitting master fires `test_stop` before they arrive); never on
    a worker. Setting `environment.process_exit_code` there decides the exit code."""
    def stopped(environment: Environment, **_: Any) -> None:
        if not is_master(environment) and not is_worker(environment):
            fn(environment)

    def quitting(environment: Environment, **_: Any) -> None:
        if is_master(environment):
            fn(environment)

    listener(events.test_stop)(stopped)
    listener(events.quitting)(quitting)
    return fn


def option(environment: Environment, name: str, default: Any = None) -> Any:
    """A parsed command-line option (`default` when locust runs without a command line)."""
    return getattr(environment.parsed_options, name, default) if environment.parsed_options else default


def flint_host(environment: Environment) -> str:
    return str(option(environment, "flint_host", "") or "").strip()


def is_worker(environment: Environment) -> bool:
    return isinstance(environment.runner, WorkerRunner)


def is_master(environment: Environment) -> bool:
    return isinstance(environment.runner, MasterRunner)


class FlintUser(FastHttpUser):
    """A FastHttpUser that sends `--flint-host` as the Host header of every request and paces
    itself with `--user-rate`. Abstract: each scenario subclasses it."""

    abstract = True
    host = DEFAULT_GATEWAY
    """`./dev up`'s gateway when locust runs without `--host`."""

    def __init__(self, environment: Environment) -> None:
        host = flint_host(environment)
        if host:
            # An instance attribute, read by FastHttpUser.__init__ for the session's headers.
            self.default_headers = {**(type(self).default_headers or {}), "Host": host}
        rate = float(option(environment, "user_rate", 0.0) or 0.0)
        self._pace: Callable[[Any], float] = constant_throughput(rate) if rate > 0 else constant(0)
        super().__init__(environment)
        self.path: str = str(option(environment, "flint_path", "/") or "/")

    def wait_time(self) -> float:
        return self._pace(self)


def object_url(api: str, namespace: str, plural: str, name: str) -> str:
    """`{api}/apis/serving.knative.dev/v1/namespaces/{namespace}/{plural}/{name}`."""
    q = urllib.parse.quote
    return (f"{api.rstrip('/')}/apis/serving.knative.dev/v1/namespaces/{q(namespace, safe='')}"
            f"/{plural}/{q(name, safe='')}")


def fetch_object(api: str, namespace: str, plural: str, name: str,
                 timeout_s: float = 5.0) -> dict[str, Any]:
    """A serving.knative.dev/v1 object (`services`, `revisions`, …) from Flint's API; raises on
    any error."""
    url = object_url(api, namespace, plural, name)
    token = os.environ.get("FLINT_TOKEN", "").strip()
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout_s) as r:
        data = json.loads(r.read())
    if not isinstance(data, dict):
        raise ValueError(f"{url}: not an object")
    return data


def fetch_service(api: str, namespace: str, name: str, timeout_s: float = 5.0) -> dict[str, Any]:
    return fetch_object(api, namespace, "services", name, timeout_s)


def api_url(environment: Environment) -> str:
    return str(option(environment, "flint_api", DEFAULT_API) or DEFAULT_API)


def target_service(environment: Environment) -> tuple[str, str] | None:
    """(namespace, service) the run targets: `--flint-service`/`--flint-namespace` when given, else
    read from `--flint-host`."""
    from_host = service_of_host(flint_host(environment)) or ("", "")
    namespace = str(option(environment, "flint_namespace", "") or "") or from_host[0]
    name = str(option(environment, "flint_service", "") or "") or from_host[1]
    return (namespace or "default", name) if name else None
