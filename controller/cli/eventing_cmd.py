"""kn's `broker` and `trigger` command groups, so Knative Eventing objects need no YAML.

The pure parts (sink and filter flags, the manifests `create` and `update` write, table rows,
describe text) are separate from the handlers that call the API, so they are testable alone.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from controller.cli import dead_letters_cmd
from controller.cli.backlog import backend_lines, fetch_backlog
from controller.cli.client import ApiClient
from controller.cli.describe import condition_lines, header
from controller.cli.errors import usage
from controller.cli.kinds import ResourceInfo
from controller.cli.output import (
    age,
    conditions_summary,
    meta,
    ready_columns,
    render,
    render_table,
    status,
    to_json,
    to_yaml,
)
from controller.cli.resource_cmd import add_output
from controller.cli.service_edit import parse_key_values

Obj = dict[str, Any]
Row = list[str]

EVENTING_GROUP = "eventing.knative.dev"
EVENTING_API = f"{EVENTING_GROUP}/v1"
SERVING_API = "serving.knative.dev/v1"
BROKER = ResourceInfo(EVENTING_GROUP, "v1", "brokers", "broker", "Broker")
TRIGGER = ResourceInfo(EVENTING_GROUP, "v1", "triggers", "trigger", "Trigger")
BROKER_CLASS_ANNOTATION = "eventing.knative.dev/broker.class"
DEFAULT_BROKER = "default"
SINK_FORMS = "ksvc:NAME, broker:NAME or an http(s):// URL"
SINK_PREFIXES: dict[str, tuple[str, str]] = {
    "ksvc": (SERVING_API, "Service"),
    "broker": (EVENTING_API, "Broker"),
}
"""`--sink PREFIX:NAME` → the referenced object's apiVersion and kind."""

BROKER_HEADERS = ("NAME", "URL", "AGE", "CONDITIONS", "READY", "REASON")
TRIGGER_HEADERS = ("NAME", "BROKER", "SINK", "AGE", "CONDITIONS", "READY", "REASON")


# -- flag values -----------------------------------------------------------------------------------


def parse_sink(value: str, flag: str = "sink") -> Obj:
    """A kn sink flag as a Knative Destination: `ksvc:NAME` and `broker:NAME` become a `ref`,
    an http(s) URL a `uri`; anything else is a usage error naming the accepted forms."""
    prefix, sep, name = value.partition(":")
    if sep and prefix in SINK_PREFIXES:
        if not name or "/" in name or ":" in name:
            raise usage(f"--{flag} {value!r}: expected {prefix}:NAME with a name")
        api_version, kind = SINK_PREFIXES[prefix]
        return {"ref": {"apiVersion": api_version, "kind": kind, "name": name}}
    if prefix in ("http", "https") and name.startswith("//"):
        try:
            parts = urlsplit(value)
            _ = parts.port  # a malformed port raises here
        except ValueError as e:
            raise usage(f"--{flag} {value!r}: not a valid URL: {e}") from None
        if not parts.hostname:
            raise usage(f"--{flag} {value!r}: the URL has no host")
        return {"uri": value}
    raise usage(f"--{flag} {value!r}: expected {SINK_FORMS}")


def sink_text(dest: Any) -> str:
    """A Destination as a user would type it: `ksvc:hello`, `broker:b`, the URI, `Kind:name`."""
    if not isinstance(dest, dict):
        return ""
    ref, uri = dest.get("ref"), str(dest.get("uri") or "")
    if not isinstance(ref, dict):
        return uri
    for prefix, (api_version, kind) in SINK_PREFIXES.items():
        if ref.get("kind") == kind and ref.get("apiVersion") == api_version:
            text = f"{prefix}:{ref.get('name', '')}"
            break
    else:
        text = f"{ref.get('kind', '')}:{ref.get('name', '')}"
    return text + (f" (+{uri})" if uri else "")


def parse_filters(items: Sequence[str], allow_remove: bool) -> tuple[dict[str, str], list[str]]:
    """`--filter ATTR=VALUE` sets an attribute filter (`ATTR=` matches any value), `ATTR-`
    removes one (update only). Attribute names are the API's to validate."""
    sets, removes = parse_key_values(items, "filter")
    if removes and not allow_remove:
        raise usage(f"--filter {removes[0]}-: removing a filter only makes sense with 'trigger update'")
    return sets, removes


def _delivery(dl_sink: str | None) -> Obj | None:
    return {"deadLetterSink": parse_sink(dl_sink, "dl-sink")} if dl_sink else None


# -- manifests -------------------------------------------------------------------------------------


def new_broker(name: str, namespace: str, broker_class: str | None = None, dl_sink: str | None = None) -> Obj:
    """The Broker `broker create` writes; the server defaults the class to Flint's."""
    md: Obj = {"name": name, "namespace": namespace}
    if broker_class:
        md["annotations"] = {BROKER_CLASS_ANNOTATION: broker_class}
    spec: Obj = {}
    delivery = _delivery(dl_sink)
    if delivery:
        spec["delivery"] = delivery
    return {"apiVersion": EVENTING_API, "kind": "Broker", "metadata": md, "spec": spec}


def new_trigger(
    name: str,
    namespace: str,
    broker: str,
    sink: str,
    filters: Sequence[str] = (),
    dl_sink: str | None = None,
) -> Obj:
    """The Trigger `trigger create` writes: broker, subscriber, attribute filters, DLS."""
    attributes, _ = parse_filters(filters, allow_remove=False)
    spec: Obj = {"broker": broker}
    if attributes:
        spec["filter"] = {"attributes": attributes}
    spec["subscriber"] = parse_sink(sink)
    delivery = _delivery(dl_sink)
    if delivery:
        spec["delivery"] = delivery
    md: Obj = {"name": name, "namespace": namespace}
    return {"apiVersion": EVENTING_API, "kind": "Trigger", "metadata": md, "spec": spec}


def update_trigger(
    current: Obj, filters: Sequence[str] = (), sink: str | None = None, dl_sink: str | None = None
) -> Obj:
    """`trigger update` as a pure edit: filters merge (`ATTR-` removes), `--sink` and
    `--dl-sink` replace. The input is not changed; the result has no status."""
    sets, removes = parse_filters(filters, allow_remove=True)
    trigger = copy.deepcopy(current)
    trigger.pop("status", None)
    spec = trigger.setdefault("spec", {})
    if sets or removes:
        attributes = dict((spec.get("filter") or {}).get("attributes") or {})
        for key in removes:
            attributes.pop(key, None)
        attributes.update(sets)
        spec["filter"] = {"attributes": attributes} if attributes else {}
    if sink is not None:
        spec["subscriber"] = parse_sink(sink)
    if dl_sink is not None:
        delivery = spec.get("delivery") if isinstance(spec.get("delivery"), dict) else {}
        spec["delivery"] = {**delivery, "deadLetterSink": parse_sink(dl_sink, "dl-sink")}
    return trigger


# -- tables and describe ---------------------------------------------------------------------------


def _address(obj: Obj) -> str:
    address = status(obj).get("address")
    return str(address.get("url") or "") if isinstance(address, dict) else ""


def broker_row(o: Obj, now: datetime) -> Row:
    md = meta(o)
    return [
        str(md.get("name", "")),
        _address(o),
        age(md.get("creationTimestamp"), now),
        conditions_summary(o),
        *ready_columns(o),
    ]


def trigger_row(o: Obj, now: datetime) -> Row:
    md = meta(o)
    spec: Obj = o["spec"] if isinstance(o.get("spec"), dict) else {}
    return [
        str(md.get("name", "")),
        str(spec.get("broker") or ""),
        str(status(o).get("subscriberUri") or sink_text(spec.get("subscriber"))),
        age(md.get("creationTimestamp"), now),
        conditions_summary(o),
        *ready_columns(o),
    ]


def table(kind: str, items: Sequence[Obj], now: datetime, all_namespaces: bool = False) -> str:
    """`broker list` / `trigger list`: kn's columns, NAMESPACE first with `-A`."""
    headers, make = (BROKER_HEADERS, broker_row) if kind == "Broker" else (TRIGGER_HEADERS, trigger_row)
    rows = [make(o, now) for o in items]
    if all_namespaces:
        headers = ("NAMESPACE", *headers)
        rows = [[str(meta(o).get("namespace", "")), *r] for o, r in zip(items, rows, strict=True)]
    return render_table(headers, rows)


def _field(label: str, value: Any) -> str:
    return f"{label.ljust(11)} {value}"


def _delivery_lines(obj: Obj) -> list[str]:
    delivery = (obj.get("spec") or {}).get("delivery")
    if not isinstance(delivery, dict) or not delivery.get("deadLetterSink"):
        return []
    lines = ["Dead Letter Sink:", "  " + _field("Sink:", sink_text(delivery["deadLetterSink"]))]
    if status(obj).get("deadLetterSinkUri"):
        lines.append("  " + _field("URI:", status(obj)["deadLetterSinkUri"]))
    return lines


def describe_broker(broker: Obj, now: datetime, backlog: Obj | str | None = None) -> str:
    """kn's broker description, with the backend and the triggers' backlog (`backlog`: the
    controller's answer, or why there is none)."""
    lines = header(broker, now)
    lines.append("")
    lines.append("Address:")
    lines.append("  " + _field("URL:", _address(broker)))
    lines += _delivery_lines(broker)
    extra = backend_lines(broker, backlog)
    if extra:
        lines.append("")
        lines += extra
    lines.append("")
    lines += condition_lines(broker, now)
    return "\n".join(lines)


def describe_trigger(trigger: Obj, now: datetime) -> str:
    spec = trigger.get("spec") or {}
    lines = header(trigger, now)
    lines.append(_field("Broker:", spec.get("broker", "")))
    attributes = (spec.get("filter") or {}).get("attributes") or {}
    if attributes:
        lines.append("Filter:")
        lines += [f"  {k}={v}" for k, v in sorted(attributes.items())]
    if spec.get("filters"):
        lines.append(_field("Filters:", to_json(spec["filters"]).replace("\n", " ")))
    lines.append("")
    lines.append("Sink:")
    lines.append("  " + _field("Sink:", sink_text(spec.get("subscriber"))))
    if status(trigger).get("subscriberUri"):
        lines.append("  " + _field("URI:", status(trigger)["subscriberUri"]))
    lines += _delivery_lines(trigger)
    lines.append("")
    lines += condition_lines(trigger, now)
    return "\n".join(lines)


# -- handlers --------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, flush=True)


def _info(args: argparse.Namespace) -> ResourceInfo:
    info: ResourceInfo = args.eventing_kind
    return info


async def run_broker_create(api: ApiClient, args: argparse.Namespace) -> int:
    broker = new_broker(args.name, args.namespace, args.broker_class, args.dl_sink)
    await api.create(BROKER, args.namespace, broker)
    _say(f"Broker '{args.name}' successfully created in namespace '{args.namespace}'.")
    return 0


async def run_trigger_create(api: ApiClient, args: argparse.Namespace) -> int:
    trigger = new_trigger(
        args.name, args.namespace, args.broker, args.sink, args.filter or [], args.dl_sink
    )
    await api.create(TRIGGER, args.namespace, trigger)
    _say(f"Trigger '{args.name}' successfully created in namespace '{args.namespace}'.")
    return 0


async def run_trigger_update(api: ApiClient, args: argparse.Namespace) -> int:
    filters = args.filter or []
    if not (filters or args.sink or args.dl_sink):
        raise usage("nothing to update: give --filter, --sink or --dl-sink")
    update_trigger({}, filters, args.sink, args.dl_sink)  # every flag's syntax, before any request
    await api.update(
        TRIGGER,
        args.namespace,
        args.name,
        lambda cur: update_trigger(cur, filters, args.sink, args.dl_sink),
    )
    _say(f"Trigger '{args.name}' successfully updated in namespace '{args.namespace}'.")
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
    elif info.kind == "Broker":
        backlog = await fetch_backlog(api, args.namespace, args.name)
        _say(describe_broker(obj, datetime.now(UTC), backlog))
    else:
        _say(describe_trigger(obj, datetime.now(UTC)))
    return 0


async def run_delete(api: ApiClient, args: argparse.Namespace) -> int:
    info = _info(args)
    for name in args.names:
        await api.delete(info, args.namespace, name)
        _say(f"{info.kind} '{name}' successfully deleted in namespace '{args.namespace}'.")
    return 0


# -- parsers ---------------------------------------------------------------------------------------


def _add_dl_sink(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dl-sink",
        metavar="SINK",
        help=f"dead-letter sink for events that cannot be delivered: {SINK_FORMS}",
    )


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
    p.set_defaults(handler=run_delete, eventing_kind=info)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    g = sub.add_parser("broker", aliases=["brokers"], help="manage brokers (kn style)")
    gsub = g.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    p = gsub.add_parser("create", parents=[common], help="create a broker")
    p.add_argument("name")
    p.add_argument(
        "--class",
        dest="broker_class",
        metavar="CLASS",
        help="broker class annotation: Flint (the default: the engine's backend, SQLite on "
        "flint up), FlintSQLite or FlintRedis (needs flint up --redis); it cannot change later",
    )
    _add_dl_sink(p)
    p.set_defaults(handler=run_broker_create)
    _add_common_verbs(gsub, common, BROKER)

    g = sub.add_parser("trigger", aliases=["triggers"], help="manage triggers (kn style)")
    gsub = g.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    p = gsub.add_parser("create", parents=[common], help="create a trigger")
    p.add_argument("name")
    p.add_argument(
        "--broker", default=DEFAULT_BROKER, help="the broker to subscribe to (default: %(default)s)"
    )
    p.add_argument("--sink", "-s", required=True, metavar="SINK", help=f"where events go: {SINK_FORMS}")
    p.add_argument(
        "--filter",
        action="append",
        metavar="ATTR=VALUE",
        help="deliver only events whose attribute ATTR is VALUE (repeatable; ATTR= matches any)",
    )
    _add_dl_sink(p)
    p.set_defaults(handler=run_trigger_create)

    p = gsub.add_parser("update", parents=[common], help="update a trigger")
    p.add_argument("name")
    p.add_argument("--sink", "-s", metavar="SINK", help=f"where events go: {SINK_FORMS}")
    p.add_argument(
        "--filter",
        action="append",
        metavar="ATTR=VALUE",
        help="add or change an attribute filter; ATTR- removes it (repeatable)",
    )
    _add_dl_sink(p)
    p.set_defaults(handler=run_trigger_update)
    _add_common_verbs(gsub, common, TRIGGER)
    dead_letters_cmd.add_verbs(gsub, common)
