"""`flint event send`: post one CloudEvent to a URL or a broker, to try triggers by hand.

The event is built and encoded (binary or structured HTTP mode) with the `cloudevents` SDK.
Flint's hosts (`*.localhost`, `broker-ingress.*`) do not resolve in Python, so requests for them go
to the gateway's address with the original `Host` header, as curl would send it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import aiohttp

from controller.cli.client import ApiClient
from controller.cli.errors import CliError, usage
from controller.cli.eventing_cmd import BROKER
from controller.cli.output import status

if TYPE_CHECKING:  # the SDK (and dateutil) load only when an event is sent: every command imports this
    from cloudevents.core.bindings.http import HTTPMessage
    from cloudevents.core.v1.event import CloudEvent

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
MODES = ("binary", "structured")
SEND_TIMEOUT_S = 30.0
EXTENSION_NAME = re.compile(r"^[a-z0-9]+$")
"""CloudEvents attribute names: lowercase ASCII letters and digits."""
OWN_FLAGS = {
    "id": "--id",
    "source": "--source",
    "type": "--type",
    "specversion": "(always 1.0)",
    "datacontenttype": "--content-type",
    "data": "--data",
    "data_base64": "--data",
}
"""Attributes `--ext` may not set, and the flag that sets each instead."""
GATEWAY_HOST_SUFFIXES = (".localhost",)
GATEWAY_HOST_PREFIXES = ("broker-ingress.",)


@dataclass(frozen=True)
class EventFlags:
    """What `event send` was told about the event; `data` None means no data at all."""

    type: str
    source: str
    id: str = ""
    data: bytes | None = None
    content_type: str | None = None
    extensions: Sequence[str] = field(default=())


# -- the event -------------------------------------------------------------------------------------


def is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def default_content_type(data: bytes) -> str:
    """`application/json` for JSON, `text/plain` for other UTF-8, else `application/octet-stream`."""
    if is_json(data):
        return "application/json"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


def parse_extensions(items: Sequence[str]) -> dict[str, Any]:
    """`--ext NAME=VALUE` as attributes; `time` must be an RFC 3339 timestamp with a zone."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise usage(f"--ext {item!r}: expected NAME=VALUE")
        if name in OWN_FLAGS:
            raise usage(f"--ext {item!r}: set {name} with {OWN_FLAGS[name]}")
        if not EXTENSION_NAME.match(name):
            raise usage(f"--ext {item!r}: attribute names are lowercase letters and digits only")
        if name == "time":
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                when = None
            if when is None or when.tzinfo is None:
                raise usage(f"--ext {item!r}: expected an RFC 3339 time like 2024-05-01T10:00:00Z")
            out[name] = when
        else:
            out[name] = value
    return out


def _structured_data(data: bytes, content_type: str) -> Any:
    """The event's data for a structured (JSON) envelope: JSON values inline, text as a string,
    anything else as bytes (the SDK writes those as `data_base64`)."""
    from cloudevents.core.formats.json import JSONFormat

    if JSONFormat.JSON_CONTENT_TYPE_PATTERN.match(content_type):
        try:
            return json.loads(data)
        except ValueError:
            raise usage(
                f"--content-type {content_type} says JSON but the data is not JSON; "
                "pick another content type or --mode binary"
            ) from None
    if content_type.startswith("text/"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return data


def build_event(flags: EventFlags, mode: str) -> CloudEvent:
    """The CloudEvent to send. In binary mode the data is kept byte for byte as the body."""
    from cloudevents.core.exceptions import BaseCloudEventException
    from cloudevents.core.v1.event import CloudEvent

    attributes: dict[str, Any] = {
        **parse_extensions(flags.extensions),
        "id": flags.id or str(uuid.uuid4()),
        "source": flags.source,
        "type": flags.type,
        "specversion": "1.0",
    }
    content_type = flags.content_type
    if content_type is None and flags.data is not None:
        content_type = default_content_type(flags.data)
    if content_type:
        attributes["datacontenttype"] = content_type
    data: Any = flags.data
    if flags.data is not None and mode == "structured":
        data = _structured_data(flags.data, content_type or "application/json")
    try:
        return CloudEvent(attributes=attributes, data=cast(dict[str, Any] | str | bytes | None, data))
    except BaseCloudEventException as e:
        raise usage(f"not a valid CloudEvent: {e}") from None


def encode(event: CloudEvent, mode: str) -> HTTPMessage:
    """The HTTP headers and body of `event` in `binary` (ce-* headers) or `structured` mode."""
    from cloudevents.core.bindings.http import to_binary_event, to_structured_event

    if mode == "binary":
        return to_binary_event(event)
    if mode == "structured":
        return to_structured_event(event)
    raise usage(f"--mode {mode!r}: expected binary or structured")


# -- where it goes ---------------------------------------------------------------------------------


def needs_gateway(host: str) -> bool:
    """Is `host` one of Flint's, which Python's resolver cannot find (`*.localhost`) or which the
    gateway answers itself (`broker-ingress.DOMAIN`)?"""
    host = host.lower().rstrip(".")
    return host.endswith(GATEWAY_HOST_SUFFIXES) or host.startswith(GATEWAY_HOST_PREFIXES)


def check_url(url: str, what: str = "--to") -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # a malformed port raises here
    except ValueError as e:
        raise usage(f"{what} {url!r}: not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise usage(f"{what} {url!r}: expected broker:NAME or an http(s):// URL with a host")


def route(url: str, gateway: str) -> tuple[str, dict[str, str]]:
    """(URL to connect to, extra headers): a Flint host is reached through `gateway` with the
    original `Host` (port included, as curl sends it); any other URL is used as it is."""
    check_url(url)
    parts = urlsplit(url)
    if not needs_gateway(parts.hostname or ""):
        return url, {}
    check_url(gateway, "--gateway")
    target = gateway.rstrip("/") + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return target, {"Host": parts.netloc.rpartition("@")[2]}


async def broker_url(api: ApiClient, namespace: str, name: str) -> str:
    """A broker's `status.address.url`, or an error saying it has none yet."""
    broker = await api.get(BROKER, namespace, name)
    address = status(broker).get("address")
    url = address.get("url") if isinstance(address, dict) else None
    if not url:
        raise CliError(
            f"broker '{name}' in namespace '{namespace}' has no address yet: "
            f"is it ready? (flint broker describe {name} -n {namespace})"
        )
    return str(url)


# -- the command -----------------------------------------------------------------------------------


def read_data(args: argparse.Namespace) -> None:
    """`event send`'s `prepare`: the event's data (`--data-file` is read before the loop starts)."""
    if args.data_file is not None:
        try:
            args.event_data = Path(args.data_file).read_bytes()
        except OSError as e:
            raise usage(f"--data-file {args.data_file}: {e.strerror or e}") from None
    else:
        args.event_data = None if args.data is None else str(args.data).encode("utf-8")


async def run_send(api: ApiClient, args: argparse.Namespace) -> int:
    flags = EventFlags(
        type=args.type,
        source=args.source,
        id=args.id or "",
        data=args.event_data,
        content_type=args.content_type,
        extensions=args.ext or [],
    )
    message = encode(build_event(flags, args.mode), args.mode)
    to: str = args.to
    if to.startswith("broker:"):
        name = to.partition(":")[2]
        if not name:
            raise usage("--to broker:NAME needs a broker name")
        to = await broker_url(api, args.namespace, name)
    target, extra = route(to, args.gateway)
    via = f" via {target}" if extra else ""
    print(f"Sending event to {to}{via}", file=sys.stderr, flush=True)
    headers = {**message.headers, **extra}
    try:
        async with api.session.post(
            target,
            data=message.body or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S, sock_connect=5),
        ) as resp:
            code, body = resp.status, await resp.read()
            answer = f"{code} {resp.reason or ''}".rstrip()
    except (TimeoutError, aiohttp.ClientError) as e:
        if extra and isinstance(e, aiohttp.ClientConnectionError):
            down = f"cannot reach the Flint gateway at {args.gateway}: is 'flint up' running?"
            raise CliError(down) from None
        raise CliError(f"cannot send the event to {target}: {str(e) or type(e).__name__}") from None
    text = body.decode("utf-8", "replace").rstrip("\n")
    print(answer + (f"\n{text}" if text else ""), flush=True)
    return 0 if 200 <= code < 300 else 1


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    g = sub.add_parser("event", help="send CloudEvents")
    gsub = g.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    p = gsub.add_parser("send", parents=[common], help="send one CloudEvent to a URL or a broker")
    p.add_argument("--to", required=True, metavar="URL|broker:NAME", help="where to send the event")
    p.add_argument("--type", required=True, help="the event's type attribute")
    p.add_argument("--source", required=True, help="the event's source attribute")
    p.add_argument("--id", help="the event's id (default: a new UUID)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="TEXT", help="the event's data")
    data.add_argument("--data-file", metavar="PATH", help="read the event's data from a file")
    p.add_argument(
        "--content-type",
        metavar="TYPE",
        help="datacontenttype (default: application/json if the data is JSON, else text/plain)",
    )
    p.add_argument(
        "--ext",
        action="append",
        metavar="NAME=VALUE",
        help="an extension or optional attribute such as subject (repeatable)",
    )
    p.add_argument("--mode", choices=MODES, default="binary", help="HTTP content mode (default: %(default)s)")
    p.add_argument(
        "--gateway",
        default=os.environ.get("FLINT_GATEWAY") or DEFAULT_GATEWAY,
        metavar="URL",
        help="where requests for *.localhost and broker-ingress.* hosts go "
        "(env FLINT_GATEWAY; default %(default)s)",
    )
    p.set_defaults(handler=run_send, prepare=read_data)
