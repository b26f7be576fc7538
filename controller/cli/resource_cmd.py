"""kubectl's verbs over any kind (apply, get, describe, delete) and kn's revision/route groups."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from controller.cli.apply import apply_one
from controller.cli.backlog import backend_lines, fetch_backlog
from controller.cli.client import ApiClient, ApiError, CliError, Unreachable
from controller.cli.describe import describe, describe_revision
from controller.cli.kinds import ResourceInfo
from controller.cli.manifests import Manifest, load
from controller.cli.output import FORMATS, SERVICE_LABEL, render, status, to_json, to_yaml
from controller.cli.wait import DEFAULT_TIMEOUT_S, DEFAULT_WINDOW_S, generation_of, wait_ready

Obj = dict[str, Any]


def _out(text: str) -> None:
    if text:
        print(text, flush=True)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- apply ---------------------------------------------------------------------------------------


def read_manifests(args: argparse.Namespace) -> None:
    """`apply`'s `prepare`: the files, folders and stdin named by `-f`, before the loop starts."""
    args.manifests = load(args.filename, sys.stdin)


async def run_apply(api: ApiClient, args: argparse.Namespace) -> int:
    manifests: list[Manifest] = args.manifests
    if not manifests:
        raise CliError("no objects passed to apply")
    failed = 0
    applied = []
    for m in manifests:
        try:
            result = await apply_one(api, m, args.namespace)
        except Unreachable:
            raise
        except CliError as e:
            failed += 1
            name = (m.obj.get("metadata") or {}).get("name", "")
            _err(f'error when applying {m.obj.get("kind")} "{name}" from {m.source}:\n{e.message}')
            continue
        _out(result.line())
        applied.append(result)
    if args.wait:
        for a in applied:
            if not a.info.group.endswith("knative.dev"):
                continue
            obj = await wait_ready(
                api,
                a.info,
                a.namespace,
                a.name,
                generation_of(a.obj),
                args.wait_timeout,
                args.wait_window,
            )
            url = status(obj).get("url")
            _out(f"{a.info.qualified}/{a.name} is ready" + (f" at {url}" if url else ""))
    return 1 if failed else 0


# -- get -----------------------------------------------------------------------------------------


async def _services_for(api: ApiClient, info: ResourceInfo, ns: str | None) -> list[Obj]:
    """The Services behind a revision table's TRAFFIC and TAGS columns."""
    if info.kind != "Revision":
        return []
    try:
        svc = await api.resolve("ksvc")
        return list((await api.list(svc, ns)).get("items") or [])
    except (ApiError, CliError):
        return []


async def fetch(
    api: ApiClient, info: ResourceInfo, names: list[str], ns: str | None, selector: str = ""
) -> list[Obj]:
    if names:
        return [await api.get(info, ns or "default", n) for n in names]
    return list((await api.list(info, ns, selector)).get("items") or [])


def print_objects(
    info: ResourceInfo,
    objs: list[Obj],
    fmt: str,
    single: bool,
    all_namespaces: bool,
    services: list[Obj],
    empty: str,
) -> None:
    if not objs and fmt == "table":
        _err(empty)
        return
    _out(
        render(
            fmt,
            info.kind,
            objs,
            single,
            datetime.now(UTC),
            info.qualified,
            all_namespaces,
            services,
        )
    )


async def run_get(api: ApiClient, args: argparse.Namespace) -> int:
    info = await api.resolve(args.kind)
    ns = None if args.all_namespaces else args.namespace
    objs = await fetch(api, info, args.names, ns, args.selector)
    services = await _services_for(api, info, ns) if args.output == "table" else []
    where = "any namespace" if ns is None else f"{ns} namespace"
    print_objects(
        info,
        objs,
        args.output,
        len(args.names) == 1,
        ns is None,
        services,
        f"No resources found in {where}.",
    )
    return 0


# -- describe ------------------------------------------------------------------------------------


async def describe_one(api: ApiClient, info: ResourceInfo, ns: str, name: str, fmt: str) -> str:
    obj = await api.get(info, ns, name)
    if fmt == "json":
        return to_json(obj)
    if fmt == "yaml":
        return to_yaml(obj).rstrip("\n")
    revisions: list[Obj] = []
    if info.kind == "Revision":
        try:
            view = await api.request("GET", f"/internal/autoscaler/{ns}/{name}")
        except ApiError:
            view = None
        return describe_revision(obj, datetime.now(UTC), view)
    if info.kind in ("Service", "Route"):
        try:
            rev = await api.resolve("revision")
            revisions = list(
                (await api.list(rev, ns, f"{SERVICE_LABEL}={name}")).get("items") or []
            )
        except ApiError:
            revisions = []
    extra: list[str] = []
    if info.kind == "Broker" and info.group == "eventing.knative.dev":
        extra = backend_lines(obj, await fetch_backlog(api, ns, name))
    return describe(info.kind, obj, revisions, datetime.now(UTC), extra)


async def run_describe(api: ApiClient, args: argparse.Namespace) -> int:
    info = await api.resolve(args.kind)
    texts = [await describe_one(api, info, args.namespace, n, "text") for n in args.names]
    _out("\n\n".join(texts))
    return 0


# -- delete --------------------------------------------------------------------------------------


async def run_delete(api: ApiClient, args: argparse.Namespace) -> int:
    info = await api.resolve(args.kind)
    for name in args.names:
        try:
            await api.delete(info, args.namespace, name)
        except ApiError as e:
            if e.code_http == 404 and args.ignore_not_found:
                continue
            raise
        _out(f'{info.qualified} "{name}" deleted')
    return 0


# -- kn's revision and route groups --------------------------------------------------------------


async def run_kind_list(api: ApiClient, args: argparse.Namespace) -> int:
    info = await api.resolve(args.group_kind)
    ns = None if args.all_namespaces else args.namespace
    selector = f"{SERVICE_LABEL}={args.service}" if getattr(args, "service", None) else ""
    objs = await fetch(api, info, [], ns, selector)
    services = await _services_for(api, info, ns) if args.output == "table" else []
    print_objects(info, objs, args.output, False, ns is None, services, f"No {info.plural} found.")
    return 0


async def run_kind_describe(api: ApiClient, args: argparse.Namespace) -> int:
    info = await api.resolve(args.group_kind)
    _out(await describe_one(api, info, args.namespace, args.name, args.output))
    return 0


async def run_kind_delete(api: ApiClient, args: argparse.Namespace) -> int:
    info = await api.resolve(args.group_kind)
    for name in args.names:
        await api.delete(info, args.namespace, name)
        _out(f"{info.kind} '{name}' successfully deleted in namespace '{args.namespace}'.")
    return 0


# -- parsers -------------------------------------------------------------------------------------


def add_output(p: argparse.ArgumentParser, formats: tuple[str, ...] = FORMATS) -> None:
    p.add_argument(
        "-o",
        "--output",
        choices=formats,
        default="table" if "table" in formats else formats[0],
        help="output format (default: %(default)s)",
    )


def add_wait_flags(p: argparse.ArgumentParser, default: bool) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--wait",
        dest="wait",
        action="store_true",
        default=default,
        help="wait until ready" + (" (default)" if default else ""),
    )
    g.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="do not wait until ready" + ("" if default else " (default)"),
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="seconds to wait before giving up (default: %(default)s)",
    )
    p.add_argument(
        "--wait-window",
        type=float,
        default=DEFAULT_WINDOW_S,
        metavar="SECONDS",
        help="seconds a Ready=False must last to count as failure (default: %(default)s)",
    )


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("apply", parents=[common], help="create or update objects from manifests")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="a manifest file, a folder of *.yaml, or - for stdin (repeatable)",
    )
    add_wait_flags(p, default=False)
    p.set_defaults(handler=run_apply, prepare=read_manifests)

    p = sub.add_parser("get", parents=[common], help="list objects or show some")
    p.add_argument("kind", help="kind, plural or short name (ksvc, rev, route, config, ...)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", default="", help="label selector, e.g. app=hello")
    add_output(p)
    p.set_defaults(handler=run_get)

    p = sub.add_parser("describe", parents=[common], help="show an object in detail")
    p.add_argument("kind")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(handler=run_describe)

    p = sub.add_parser("delete", parents=[common], help="delete objects")
    p.add_argument("kind")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--ignore-not-found", action="store_true")
    p.set_defaults(handler=run_delete)

    for group, kind, aliases in (
        ("revision", "revision", ["revisions", "rev"]),
        ("route", "route", ["routes", "rt"]),
    ):
        g = sub.add_parser(group, aliases=aliases, help=f"manage {kind}s (kn style)")
        gsub = g.add_subparsers(dest="verb", required=True, metavar="COMMAND")
        p = gsub.add_parser("list", aliases=["ls"], parents=[common], help=f"list {kind}s")
        if group == "revision":
            p.add_argument("-s", "--service", help="only the revisions of this service")
        p.add_argument("-A", "--all-namespaces", action="store_true")
        add_output(p)
        p.set_defaults(handler=run_kind_list, group_kind=kind)
        p = gsub.add_parser("describe", parents=[common], help=f"show a {kind} in detail")
        p.add_argument("name")
        add_output(p, ("text", "yaml", "json"))
        p.set_defaults(handler=run_kind_describe, group_kind=kind)
        if group == "revision":
            p = gsub.add_parser("delete", parents=[common], help="delete revisions")
            p.add_argument("names", nargs="+", metavar="NAME")
            p.set_defaults(handler=run_kind_delete, group_kind=kind)
