"""`flint trigger dead-letters` and `flint trigger redeliver`: a trigger's dead letters.

The dispatcher keeps the events a trigger gave up on in its own database and serves them on its
admin port (`flint up --dispatcher-port`, default 8083): `GET /dead-letters/{ns}/{trigger}` lists
them, `POST /redeliver/{ns}/{trigger}[?ids=1,2]` queues them for delivery again. The API serves
the same endpoints under `/internal/dispatcher/`, so these commands use the API's address and
credential; `--dispatcher URL` (or FLINT_DISPATCHER) talks to an admin port directly, with the
same token. On a cluster they go through the API server's service proxy to the dispatcher's
Service (`flint-system/flint-dispatcher`, port `admin`), carrying the dispatcher's admin token
(the Secret `flint-dispatcher-admin`, which the user's RBAC must let them read) in
`X-Flint-Authorization`: the API server consumes `Authorization` itself. The table is built by
pure functions, testable alone.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
import yaml

from controller.admin_secret import ADMIN_SECRET, ADMIN_SECRET_KEY
from controller.api.ages import human_duration
from controller.cli.client import ApiClient, ApiError, Unauthorized
from controller.cli.endpoint import may_carry_token
from controller.cli.errors import CliError, usage
from controller.cli.output import render_table
from controller.cli.resource_cmd import add_output
from flint_common.httpauth import PROXIED_AUTHORIZATION

Obj = dict[str, Any]
Row = list[str]

DISPATCHER_PREFIX = "/internal/dispatcher"
"""Where the API proxies the dispatcher's admin endpoints."""
SYSTEM_NAMESPACE = "flint-system"
"""Where `kubectl apply -k deploy/` installs Flint on a cluster."""
DISPATCHER_SERVICE = "flint-dispatcher"
ADMIN_PORT = "admin"
DISPATCHER_TIMEOUT_S = 30.0
DETAIL_WIDTH = 60
"""DETAIL is cut to this many characters in the table (`-o json|yaml` has it whole)."""
DEAD_LETTER_HEADERS = ("ID", "EVENT ID", "TYPE", "SOURCE", "REASON", "STATUS", "AGE", "DETAIL")


# -- the table -------------------------------------------------------------------------------------


def truncate(text: str, width: int = DETAIL_WIDTH) -> str:
    """`text` on one line (whitespace runs become one space), cut to `width` with `...`."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3].rstrip() + "..."


def _age(at: Any, now: float) -> str:
    if isinstance(at, bool) or not isinstance(at, int | float):
        return ""
    return human_duration(now - at)


def dead_letter_row(letter: Obj, now: float) -> Row:
    """One dead letter as table cells; `now` is unix seconds (the dispatcher's `at` is too)."""
    event = letter.get("event")
    if not isinstance(event, dict):
        event = {}
    code = letter.get("status")
    return [
        str(letter.get("id", "")),
        str(event.get("id") or ""),
        str(event.get("type") or ""),
        str(event.get("source") or ""),
        str(letter.get("reason") or ""),
        "" if code is None else str(code),
        _age(letter.get("at"), now),
        truncate(str(letter.get("detail") or "")),
    ]


def dead_letters_table(letters: Sequence[Obj], now: float) -> str:
    return render_table(DEAD_LETTER_HEADERS, [dead_letter_row(d, now) for d in letters])


# -- the dispatcher's admin port -------------------------------------------------------------------


def dispatcher_path(base: str, action: str, namespace: str, name: str) -> str:
    """`{base}/{action}/{namespace}/{name}`; a `--dispatcher` that is no http(s) URL is a usage error."""
    try:
        parts = urlsplit(base)
        _ = parts.port  # a malformed port raises here
    except ValueError as e:
        raise usage(f"--dispatcher {base!r}: not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise usage(f"--dispatcher {base!r}: expected an http(s):// URL with a host")
    return "/".join([base.rstrip("/"), action, quote(namespace, safe=""), quote(name, safe="")])


def refusal(status: int, reason: str, raw: bytes) -> str:
    """What to print for an error answer: the server's message (its text, or a JSON `message`)."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("message"):
        text = str(doc["message"]).strip()
    if status == 404 and text:
        return text
    answer = f"{status} {reason}".rstrip()
    return f"the dispatcher answered {answer}" + (f": {text}" if text else "")


@dataclass(frozen=True)
class DispatcherRoute:
    """How to reach the dispatcher's admin endpoints: a base URL, whether it is the API's (its
    TLS and proxy settings apply), and the headers carrying the credential."""

    base: str
    via_api: bool
    headers: dict[str, str] = field(repr=False)


def proxy_base(api_url: str, namespace: str) -> str:
    """The API server's service proxy of the dispatcher's admin port."""
    return (f"{api_url}/api/v1/namespaces/{quote(namespace, safe='')}/services/"
            f"{DISPATCHER_SERVICE}:{ADMIN_PORT}/proxy")


async def admin_token(api: ApiClient, namespace: str) -> str:
    """The dispatcher's admin token, from its Secret on the cluster."""
    where = f"the Secret {namespace}/{ADMIN_SECRET}"
    try:
        secret = await api.request("GET", f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/"
                                          f"{ADMIN_SECRET}")
    except ApiError as e:
        if e.code_http == 404:
            raise CliError(f"{where} does not exist: is Flint installed on this cluster "
                           "(kubectl apply -k deploy/) and its controller running?") from None
        if e.code_http == 403:
            raise CliError(f"you may not read {where}, which holds the dispatcher's admin token: "
                           "ask for the flint-cli role's dead-letters rules") from None
        raise
    try:
        token = base64.b64decode(str((secret.get("data") or {}).get(ADMIN_SECRET_KEY) or ""), validate=True)
    except (binascii.Error, ValueError):
        token = b""
    if not token.strip():
        raise CliError(f"{where} holds no token")
    return token.decode("utf-8", "replace").strip()


async def dispatcher_route(api: ApiClient, override: str | None,
                           namespace: str = SYSTEM_NAMESPACE) -> DispatcherRoute:
    """`--dispatcher` when given; else, on a cluster, the service proxy; else the API's proxy."""
    if override:
        return DispatcherRoute(override, False, api.auth_headers())
    if await api.on_cluster():
        token = await admin_token(api, namespace)
        return DispatcherRoute(proxy_base(api.base_url, namespace), True,
                               {**api.auth_headers(), PROXIED_AUTHORIZATION: f"Bearer {token}"})
    return DispatcherRoute(api.base_url + DISPATCHER_PREFIX, True, api.auth_headers())


async def call_dispatcher(
    api: ApiClient,
    method: str,
    route: DispatcherRoute,
    url: str,
    params: dict[str, str] | None = None,
) -> Any:
    """The JSON answer of one admin request; errors become CliErrors naming the dispatcher.
    Through the API it goes as any API request; to a `--dispatcher` of its own, with the token
    only over HTTPS or to a loopback address (and without the API's TLS and proxy settings)."""
    base, via_api = route.base, route.via_api
    if not via_api and api.endpoint.token is not None and not may_carry_token(base):
        raise usage(f"--dispatcher {base}: refusing to send the owner's token over plain HTTP "
                    "to an address that is not loopback")
    try:
        async with api.session.request(
            method,
            url,
            params=params,
            headers={"Accept": "application/json", **route.headers},
            timeout=aiohttp.ClientTimeout(total=DISPATCHER_TIMEOUT_S, sock_connect=5),
            **(api.transport() if via_api else {}),
        ) as resp:
            raw = await resp.read()
            if resp.status == 401:
                raise Unauthorized(api.endpoint)
            if resp.status >= 400:
                raise CliError(refusal(resp.status, resp.reason or "", raw))
    except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as e:
        raise api.connection_error(e, base) from None
    except aiohttp.ClientConnectionError:
        raise CliError(f"cannot reach the Flint dispatcher at {base}: is 'flint up' running?") from None
    except TimeoutError:
        raise CliError(
            f"the Flint dispatcher at {base} did not answer within {DISPATCHER_TIMEOUT_S:g}s"
        ) from None
    except aiohttp.ClientError as e:
        raise CliError(f"cannot talk to the Flint dispatcher at {base}: {e}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CliError(f"{url} answered with something that is not JSON: is it Flint's dispatcher?") from None


# -- handlers --------------------------------------------------------------------------------------


async def run_dead_letters(api: ApiClient, args: argparse.Namespace) -> int:
    route = await dispatcher_route(api, args.dispatcher, args.system_namespace)
    url = dispatcher_path(route.base, "dead-letters", args.namespace, args.name)
    letters = await call_dispatcher(api, "GET", route, url)
    if not isinstance(letters, list) or not all(isinstance(d, dict) for d in letters):
        raise CliError(f"{url} answered with something that is not a list of dead letters")
    if args.output == "json":
        print(json.dumps(letters, indent=4, ensure_ascii=False), flush=True)
    elif args.output == "yaml":
        text = yaml.safe_dump(letters, sort_keys=False, default_flow_style=False, allow_unicode=True)
        print(str(text).rstrip("\n"), flush=True)
    elif not letters:
        print("No dead letters.", file=sys.stderr, flush=True)
    else:
        print(dead_letters_table(letters, time.time()), flush=True)
    return 0


async def run_redeliver(api: ApiClient, args: argparse.Namespace) -> int:
    route = await dispatcher_route(api, args.dispatcher, args.system_namespace)
    url = dispatcher_path(route.base, "redeliver", args.namespace, args.name)
    ids: list[int] = args.id or []
    params = {"ids": ",".join(str(i) for i in ids)} if ids else None
    answer = await call_dispatcher(api, "POST", route, url, params)
    count = answer.get("requeued") if isinstance(answer, dict) else None
    if isinstance(count, bool) or not isinstance(count, int):
        raise CliError(f"{url} answered without a count of requeued dead letters")
    print(f"{count} dead letter(s) queued for redelivery", flush=True)
    return 0


# -- parsers ---------------------------------------------------------------------------------------


def _add_dispatcher(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dispatcher",
        default=os.environ.get("FLINT_DISPATCHER") or None,
        metavar="URL",
        help="the event dispatcher's admin port, e.g. http://127.0.0.1:8083 (env "
        "FLINT_DISPATCHER; default: through the API)",
    )
    p.add_argument(
        "--system-namespace",
        default=os.environ.get("FLINT_SYSTEM_NAMESPACE") or SYSTEM_NAMESPACE,
        metavar="NS",
        help="on a cluster, the namespace Flint is installed in (env FLINT_SYSTEM_NAMESPACE; "
        "default %(default)s)",
    )


def add_verbs(gsub: Any, common: argparse.ArgumentParser) -> None:
    """`dead-letters` and `redeliver` under `flint trigger`."""
    p = gsub.add_parser(
        "dead-letters", parents=[common], help="list the events a trigger gave up on (from the dispatcher)"
    )
    p.add_argument("name", metavar="NAME")
    add_output(p, ("table", "json", "yaml"))
    _add_dispatcher(p)
    p.set_defaults(handler=run_dead_letters)

    p = gsub.add_parser(
        "redeliver", parents=[common], help="queue a trigger's dead letters for delivery again"
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--id",
        type=int,
        action="append",
        metavar="N",
        help="only the dead letter with this ID (repeatable; default: all of them)",
    )
    _add_dispatcher(p)
    p.set_defaults(handler=run_redeliver)
