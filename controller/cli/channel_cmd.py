"""kn's `channel` and `subscription` command groups: Knative messaging without YAML.

Channels and Subscriptions are `messaging.knative.dev/v1`. The pure parts (`--type` and
`--channel` values, sinks with `channel:NAME`, the manifests `create` and `update` write, table
rows, describe text) are separate from the handlers that call the API, so they are testable alone.
Sinks are `eventing_cmd`'s (`ksvc:NAME`, `broker:NAME`, a URL) plus `channel:NAME`.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from controller.cli import eventing_cmd
from controller.cli.client import ApiClient
from controller.cli.describe import condition_lines, header
from controller.cli.errors import CliError, usage
from controller.cli.kinds import ResourceInfo
from controller.cli.output import age, meta, ready_columns, render, render_table, status, to_json, to_yaml
from controller.cli.resource_cmd import add_output

Obj = dict[str, Any]
Row = list[str]

MESSAGING_GROUP = "messaging.knative.dev"
MESSAGING_API = f"{MESSAGING_GROUP}/v1"
CHANNEL = ResourceInfo(MESSAGING_GROUP, "v1", "channels", "channel", "Channel", ("ch",))
SUBSCRIPTION = ResourceInfo(MESSAGING_GROUP, "v1", "subscriptions", "subscription", "Subscription", ("sub",))
IMC_KIND = "InMemoryChannel"
FLINT_MESSAGING_API = "messaging.flint.dev/v1"
REDIS_CHANNEL_KIND = "RedisChannel"

TYPE_FORMS = f"GROUP:VERSION:KIND (e.g. {MESSAGING_GROUP}:v1:{IMC_KIND}), imcv1 or redis"
TYPE_ALIASES: dict[str, tuple[str, str]] = {
    "imcv1": (MESSAGING_API, IMC_KIND),
    "imc": (MESSAGING_API, IMC_KIND),
    "redis": (FLINT_MESSAGING_API, REDIS_CHANNEL_KIND),
    "redischannel": (FLINT_MESSAGING_API, REDIS_CHANNEL_KIND),
}
"""`--type ALIAS` → apiVersion and kind (kn's built-in `imcv1`, and Knative's short name)."""

CHANNEL_FORMS = "NAME, channel:NAME, imc:NAME, rch:NAME or GROUP:VERSION:KIND:NAME"
CHANNEL_PREFIXES: dict[str, tuple[str, str]] = {
    "channel": (MESSAGING_API, "Channel"),
    "imc": (MESSAGING_API, IMC_KIND),
    "inmemorychannel": (MESSAGING_API, IMC_KIND),
    "rch": (FLINT_MESSAGING_API, REDIS_CHANNEL_KIND),
    "redischannel": (FLINT_MESSAGING_API, REDIS_CHANNEL_KIND),
}
"""`--channel PREFIX:NAME` (prefix case-insensitive, so `Channel:c` as `list` prints it works)."""

SINK_FORMS = "ksvc:NAME, broker:NAME, channel:NAME or an http(s):// URL"
SINK_PREFIXES: dict[str, tuple[str, str]] = {"channel": (MESSAGING_API, "Channel")}
"""Sink prefixes on top of `eventing_cmd.SINK_PREFIXES` (whose parser handles the rest)."""

CHANNEL_HEADERS = ("NAME", "TYPE", "URL", "AGE", "READY", "REASON")
SUBSCRIPTION_HEADERS = ("NAME", "CHANNEL", "SUBSCRIBER", "REPLY", "DEAD LETTER SINK", "READY", "REASON")


# -- flag values -----------------------------------------------------------------------------------


def _name_ok(name: str) -> bool:
    return bool(name) and "/" not in name and ":" not in name


def parse_channel_type(value: str) -> Obj:
    """kn's `--type GROUP:VERSION:KIND` (or an alias) as a `spec.channelTemplate`."""
    alias = TYPE_ALIASES.get(value.lower())
    if alias:
        return {"apiVersion": alias[0], "kind": alias[1]}
    parts = value.split(":")
    if len(parts) != 3 or not all(parts) or any("/" in p for p in parts):
        raise usage(f"--type {value!r}: expected {TYPE_FORMS}")
    group, version, kind = parts
    return {"apiVersion": f"{group}/{version}", "kind": kind}


def parse_channel_ref(value: str) -> Obj:
    """kn's `--channel`: `NAME` is a Channel, `channel:NAME`, `imc:NAME` (`inmemorychannel:NAME`),
    or `GROUP:VERSION:KIND:NAME` for any kind; the result is a Subscription's `spec.channel`."""
    parts = value.split(":")
    if len(parts) == 1 and _name_ok(value):
        api_version, kind = CHANNEL_PREFIXES["channel"]
        return {"apiVersion": api_version, "kind": kind, "name": value}
    if len(parts) == 2 and parts[0].lower() in CHANNEL_PREFIXES:
        if not _name_ok(parts[1]):
            raise usage(f"--channel {value!r}: expected {parts[0]}:NAME with a name")
        api_version, kind = CHANNEL_PREFIXES[parts[0].lower()]
        return {"apiVersion": api_version, "kind": kind, "name": parts[1]}
    if len(parts) == 4 and all(parts) and _name_ok(parts[3]) and not any("/" in p for p in parts):
        group, version, kind, name = parts
        return {"apiVersion": f"{group}/{version}", "kind": kind, "name": name}
    raise usage(f"--channel {value!r}: expected {CHANNEL_FORMS}")


def channel_ref_text(ref: Any) -> str:
    """A `spec.channel` as kn's CHANNEL column shows it, `Channel:c` / `InMemoryChannel:c`
    (accepted back by `--channel`); another group's kind as `GROUP:VERSION:KIND:NAME`."""
    if not isinstance(ref, dict):
        return ""
    kind, name, api_version = str(ref.get("kind") or ""), str(ref.get("name") or ""), ref.get("apiVersion")
    if api_version == MESSAGING_API or not api_version:
        return f"{kind}:{name}"
    group, _, version = str(api_version).rpartition("/")
    return f"{group}:{version}:{kind}:{name}"


def parse_sink(value: str, flag: str = "sink") -> Obj:
    """A sink flag as a Destination: `channel:NAME` becomes a Channel `ref`, the rest is
    `eventing_cmd.parse_sink`'s (`ksvc:NAME`, `broker:NAME`, an http(s) URL)."""
    prefix, sep, name = value.partition(":")
    if sep and prefix in SINK_PREFIXES:
        if not _name_ok(name):
            raise usage(f"--{flag} {value!r}: expected {prefix}:NAME with a name")
        api_version, kind = SINK_PREFIXES[prefix]
        return {"ref": {"apiVersion": api_version, "kind": kind, "name": name}}
    try:
        return eventing_cmd.parse_sink(value, flag)
    except CliError as e:
        if e.message.endswith(f"expected {eventing_cmd.SINK_FORMS}"):  # name channel:NAME too
            raise usage(f"--{flag} {value!r}: expected {SINK_FORMS}") from None
        raise


def sink_text(dest: Any) -> str:
    """A Destination as a user would type it: `channel:c`, else `eventing_cmd.sink_text`."""
    ref = dest.get("ref") if isinstance(dest, dict) else None
    if isinstance(dest, dict) and isinstance(ref, dict):
        for prefix, (api_version, kind) in SINK_PREFIXES.items():
            if ref.get("kind") == kind and ref.get("apiVersion") == api_version:
                uri = str(dest.get("uri") or "")
                return f"{prefix}:{ref.get('name', '')}" + (f" (+{uri})" if uri else "")
    return eventing_cmd.sink_text(dest)


# -- manifests -------------------------------------------------------------------------------------


def new_channel(name: str, namespace: str, channel_type: str | None = None) -> Obj:
    """The Channel `channel create` writes; without `--type` the server defaults the template
    to InMemoryChannel."""
    spec: Obj = {}
    if channel_type:
        spec["channelTemplate"] = parse_channel_type(channel_type)
    md: Obj = {"name": name, "namespace": namespace}
    return {"apiVersion": MESSAGING_API, "kind": "Channel", "metadata": md, "spec": spec}


def new_subscription(
    name: str,
    namespace: str,
    channel: str,
    sink: str | None = None,
    reply: str | None = None,
    dead_letter: str | None = None,
) -> Obj:
    """The Subscription `subscription create` writes. That it needs a subscriber or a reply is
    the server's rule (its 422 names both fields), as in kn."""
    spec: Obj = {"channel": parse_channel_ref(channel)}
    if sink:
        spec["subscriber"] = parse_sink(sink)
    if reply:
        spec["reply"] = parse_sink(reply, "sink-reply")
    if dead_letter:
        spec["delivery"] = {"deadLetterSink": parse_sink(dead_letter, "sink-dead-letter")}
    md: Obj = {"name": name, "namespace": namespace}
    return {"apiVersion": MESSAGING_API, "kind": "Subscription", "metadata": md, "spec": spec}


def update_subscription(
    current: Obj, sink: str | None = None, reply: str | None = None, dead_letter: str | None = None
) -> Obj:
    """`subscription update` as a pure edit: each given flag replaces its destination (the
    dead-letter sink keeps the rest of `delivery`). The input is not changed; no status.
    The server allows only `subscriber` and `reply` to change (Knative's rule)."""
    sub = copy.deepcopy(current)
    sub.pop("status", None)
    spec = sub.setdefault("spec", {})
    if sink is not None:
        spec["subscriber"] = parse_sink(sink)
    if reply is not None:
        spec["reply"] = parse_sink(reply, "sink-reply")
    if dead_letter is not None:
        delivery = spec.get("delivery") if isinstance(spec.get("delivery"), dict) else {}
        spec["delivery"] = {**delivery, "deadLetterSink": parse_sink(dead_letter, "sink-dead-letter")}
    return sub


# -- tables and describe ---------------------------------------------------------------------------


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _address(obj: Obj) -> str:
    address = status(obj).get("address")
    return str(address.get("url") or "") if isinstance(address, dict) else ""


def _channel_type(obj: Obj) -> Obj:
    """The backing channel (`status.channel`), else the template: apiVersion and kind."""
    backing = status(obj).get("channel")
    if isinstance(backing, dict) and backing.get("kind"):
        return backing
    template = _spec(obj).get("channelTemplate")
    return template if isinstance(template, dict) else {}


def _dead_letter_sink(obj: Obj) -> Any:
    delivery = _spec(obj).get("delivery")
    return delivery.get("deadLetterSink") if isinstance(delivery, dict) else None


def channel_row(o: Obj, now: datetime) -> Row:
    md = meta(o)
    return [
        str(md.get("name", "")),
        str(_channel_type(o).get("kind") or ""),
        _address(o),
        age(md.get("creationTimestamp"), now),
        *ready_columns(o),
    ]


def subscription_row(o: Obj, now: datetime) -> Row:
    spec = _spec(o)
    physical = status(o).get("physicalSubscription")
    physical = physical if isinstance(physical, dict) else {}
    return [
        str(meta(o).get("name", "")),
        channel_ref_text(spec.get("channel")),
        str(physical.get("subscriberUri") or sink_text(spec.get("subscriber"))),
        str(physical.get("replyUri") or sink_text(spec.get("reply"))),
        str(physical.get("deadLetterSinkUri") or sink_text(_dead_letter_sink(o))),
        *ready_columns(o),
    ]


def table(kind: str, items: Sequence[Obj], now: datetime, all_namespaces: bool = False) -> str:
    """`channel list` / `subscription list`: kn's columns, NAMESPACE first with `-A`."""
    headers: tuple[str, ...]
    if kind == "Channel":
        headers, make = CHANNEL_HEADERS, channel_row
    else:
        headers, make = SUBSCRIPTION_HEADERS, subscription_row
    rows = [make(o, now) for o in items]
    if all_namespaces:
        headers = ("NAMESPACE", *headers)
        rows = [[str(meta(o).get("namespace", "")), *r] for o, r in zip(items, rows, strict=True)]
    return render_table(headers, rows)


def _field(label: str, value: Any) -> str:
    return f"{label.ljust(11)} {value}".rstrip()


def _destination_lines(title: str, dest: Any, uri: Any) -> list[str]:
    if not dest and not uri:
        return []
    lines = [f"{title}:"]
    if dest:
        lines.append("  " + _field("Sink:", sink_text(dest)))
    if uri:
        lines.append("  " + _field("URI:", uri))
    return lines


def describe_channel(channel: Obj, now: datetime) -> str:
    lines = header(channel, now)
    kind = _channel_type(channel)
    type_text = str(kind.get("kind") or "")
    if kind.get("apiVersion"):
        type_text += f" ({kind['apiVersion']})"
    lines.append(_field("Type:", type_text))
    lines.append(_field("URL:", _address(channel)))
    subscribers = [s for s in status(channel).get("subscribers") or [] if isinstance(s, dict)]
    if subscribers:
        lines.append("Subscribers:")
        lines += [f"  {s.get('uid', '')}  Ready: {s.get('ready', 'Unknown')}" for s in subscribers]
    dls_uri = status(channel).get("deadLetterSinkUri")
    dls = _destination_lines("Dead Letter Sink", _dead_letter_sink(channel), dls_uri)
    if dls:
        lines += ["", *dls]
    lines.append("")
    lines += condition_lines(channel, now)
    return "\n".join(lines)


def describe_subscription(sub: Obj, now: datetime) -> str:
    spec = _spec(sub)
    physical = status(sub).get("physicalSubscription")
    physical = physical if isinstance(physical, dict) else {}
    lines = header(sub, now)
    lines.append(_field("Channel:", channel_ref_text(spec.get("channel"))))
    destinations = [
        ("Subscriber", spec.get("subscriber"), physical.get("subscriberUri")),
        ("Reply", spec.get("reply"), physical.get("replyUri")),
        ("Dead Letter Sink", _dead_letter_sink(sub), physical.get("deadLetterSinkUri")),
    ]
    for title, dest, uri in destinations:
        part = _destination_lines(title, dest, uri)
        if part:
            lines += ["", *part]
    lines.append("")
    lines += condition_lines(sub, now)
    return "\n".join(lines)


DESCRIBE: dict[str, Callable[[Obj, datetime], str]] = {
    "Channel": describe_channel,
    "Subscription": describe_subscription,
}


# -- handlers --------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, flush=True)


def _info(args: argparse.Namespace) -> ResourceInfo:
    info: ResourceInfo = args.eventing_kind
    return info


async def run_channel_create(api: ApiClient, args: argparse.Namespace) -> int:
    channel = new_channel(args.name, args.namespace, args.type)
    await api.create(CHANNEL, args.namespace, channel)
    _say(f"Channel '{args.name}' successfully created in namespace '{args.namespace}'.")
    return 0


async def run_subscription_create(api: ApiClient, args: argparse.Namespace) -> int:
    sub = new_subscription(
        args.name, args.namespace, args.channel, args.sink, args.sink_reply, args.sink_dead_letter
    )
    await api.create(SUBSCRIPTION, args.namespace, sub)
    _say(f"Subscription '{args.name}' successfully created in namespace '{args.namespace}'.")
    return 0


async def run_subscription_update(api: ApiClient, args: argparse.Namespace) -> int:
    flags = (args.sink, args.sink_reply, args.sink_dead_letter)
    if all(f is None for f in flags):
        raise usage("nothing to update: give --sink, --sink-reply or --sink-dead-letter")
    update_subscription({}, *flags)  # every flag's syntax, before any request
    await api.update(SUBSCRIPTION, args.namespace, args.name, lambda cur: update_subscription(cur, *flags))
    _say(f"Subscription '{args.name}' successfully updated in namespace '{args.namespace}'.")
    return 0


async def run_list(api: ApiClient, args: argparse.Namespace) -> int:
    info = _info(args)
    ns = None if args.all_namespaces else args.namespace
    items = list((await api.list(info, ns)).get("items") or [])
    now = datetime.now(UTC)
    if args.output != "table":
        _say(render(args.output, info.kind, items, False, now, info.qualified))
    elif not items:
        print(f"No {info.plural} found.", file=sys.stderr, flush=True)
    else:
        _say(table(info.kind, items, now, ns is None))
    return 0


async def run_describe(api: ApiClient, args: argparse.Namespace) -> int:
    info = _info(args)
    obj = await api.get(info, args.namespace, args.name)
    if args.output == "json":
        _say(to_json(obj))
    elif args.output == "yaml":
        _say(to_yaml(obj).rstrip("\n"))
    else:
        _say(DESCRIBE[info.kind](obj, datetime.now(UTC)))
    return 0


# -- parsers ---------------------------------------------------------------------------------------


def _add_common_verbs(gsub: Any, common: argparse.ArgumentParser, info: ResourceInfo) -> None:
    word = info.singular
    p = gsub.add_parser("list", aliases=["ls"], parents=[common], help=f"list {info.plural}")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    add_output(p, ("table", "yaml", "json", "name"))
    p.set_defaults(handler=run_list, eventing_kind=info)

    p = gsub.add_parser("describe", parents=[common], help=f"show a {word} in detail")
    p.add_argument("name")
    add_output(p, ("text", "yaml", "json"))
    p.set_defaults(handler=run_describe, eventing_kind=info)

    p = gsub.add_parser("delete", parents=[common], help=f"delete {info.plural}")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(handler=eventing_cmd.run_delete, eventing_kind=info)


def _add_sink_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sink", "-s", metavar="SINK", help=f"the subscriber events go to: {SINK_FORMS}")
    p.add_argument(
        "--sink-reply", metavar="SINK", help=f"where the subscriber's replies go: {SINK_FORMS}"
    )
    p.add_argument(
        "--sink-dead-letter",
        metavar="SINK",
        help=f"dead-letter sink for events that cannot be delivered: {SINK_FORMS}",
    )


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    g = sub.add_parser("channel", aliases=["channels"], help="manage channels (kn style)")
    gsub = g.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    p = gsub.add_parser("create", parents=[common], help="create a channel")
    p.add_argument("name")
    p.add_argument(
        "--type",
        metavar="GROUP:VERSION:KIND",
        help=f"the backing channel kind, {TYPE_FORMS} (default: the server's, InMemoryChannel)",
    )
    p.set_defaults(handler=run_channel_create)
    _add_common_verbs(gsub, common, CHANNEL)

    g = sub.add_parser(
        "subscription", aliases=["subscriptions", "sub"], help="manage subscriptions (kn style)"
    )
    gsub = g.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    p = gsub.add_parser("create", parents=[common], help="create a subscription")
    p.add_argument("name")
    p.add_argument(
        "--channel",
        required=True,
        metavar="[KIND:]NAME",
        help=f"the channel to subscribe to: {CHANNEL_FORMS} (a bare NAME is a Channel)",
    )
    _add_sink_flags(p)
    p.set_defaults(handler=run_subscription_create)

    p = gsub.add_parser("update", parents=[common], help="update a subscription")
    p.add_argument("name")
    _add_sink_flags(p)
    p.set_defaults(handler=run_subscription_update)
    _add_common_verbs(gsub, common, SUBSCRIPTION)
