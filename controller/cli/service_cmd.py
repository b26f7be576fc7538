"""kn's `service` command group: create, update, delete, list, describe with kn's flags."""

from __future__ import annotations

import argparse
import copy
import random
from pathlib import Path
from typing import Any

from controller.cli.client import ApiClient, ApiError, CliError
from controller.cli.kinds import ResourceInfo
from controller.cli.manifests import command_line_image
from controller.cli.output import status
from controller.cli.resource_cmd import (
    add_output,
    add_wait_flags,
    describe_one,
    fetch,
    print_objects,
)
from controller.cli.service_edit import ServiceFlags, new_service, update_service, validate
from controller.cli.wait import generation_of, wait_ready

Obj = dict[str, Any]
CONSONANTS = "bcdfghjklmnpqrstvwxz"


def random_consonants(n: int) -> str:
    """kn's `{{.Random n}}` in revision names."""
    return "".join(random.choice(CONSONANTS) for _ in range(n))


def flags_from(args: argparse.Namespace) -> ServiceFlags:
    return ServiceFlags(
        image=args.image,
        cmd=args.cmd,
        args=args.arg,
        env=args.env or [],
        annotations=args.annotation or [],
        service_annotations=args.annotation_service or [],
        revision_annotations=args.annotation_revision or [],
        labels=args.label or [],
        concurrency_limit=args.concurrency_limit,
        scale_min=args.scale_min,
        scale_max=args.scale_max,
        scale_target=args.scale_target,
        revision_name=args.revision_name,
        traffic=args.traffic or [],
        tags=args.tag or [],
        untags=args.untag or [],
    )


def _say(text: str) -> None:
    print(text, flush=True)


async def _finish(
    api: ApiClient, info: ResourceInfo, args: argparse.Namespace, written: Obj, verb: str
) -> int:
    """kn's ending: wait with progress and print the URL, or just say it was done."""
    name, ns = args.name, args.namespace
    if not args.wait:
        _say(f"Service '{name}' {verb} in namespace '{ns}'.")
        return 0
    title = {"created": "Creating", "updated": "Updating", "replaced": "Replacing"}[verb]
    _say(f"{title} service '{name}' in namespace '{ns}':\n")
    svc = await wait_ready(
        api,
        info,
        ns,
        name,
        generation_of(written),
        args.wait_timeout,
        args.wait_window,
        echo=lambda line: _say(" " + line),
    )
    st = status(svc)
    revision = st.get("latestReadyRevisionName") or st.get("latestCreatedRevisionName") or ""
    _say(
        f"\nService '{name}' {verb} to latest revision '{revision}' is available at URL:\n"
        f"{st.get('url', '')}"
    )
    return 0


def resolve_image(args: argparse.Namespace) -> None:
    """`create`'s and `update`'s `prepare`: an --image naming a local folder becomes its absolute
    path (this may stat the folder: it runs before the loop starts)."""
    if args.image is not None:
        args.image = command_line_image(args.image, Path.cwd())


async def run_create(api: ApiClient, args: argparse.Namespace) -> int:
    svc = new_service(args.name, args.namespace, flags_from(args), None, random_consonants)
    info = await api.resolve("ksvc")
    try:
        written = await api.create(info, args.namespace, svc)
        verb = "created"
    except ApiError as e:
        if e.code_http != 409:
            raise
        if not args.force:
            raise CliError(
                f"cannot create service '{args.name}' in namespace '{args.namespace}' because "
                "the service already exists and no --force option was given"
            ) from None
        written = await api.update(info, args.namespace, args.name, lambda _cur: copy.deepcopy(svc))
        verb = "replaced"
    return await _finish(api, info, args, written, verb)


async def run_update(api: ApiClient, args: argparse.Namespace) -> int:
    flags = flags_from(args)
    validate(flags)
    info = await api.resolve("ksvc")
    written = await api.update(
        info,
        args.namespace,
        args.name,
        lambda cur: update_service(cur, flags, None, random_consonants),
    )
    return await _finish(api, info, args, written, "updated")


async def run_wait(api: ApiClient, args: argparse.Namespace) -> int:
    """kn's `service wait`: until the service's current generation is Ready; print its URL."""
    info = await api.resolve("ksvc")
    current = await api.get(info, args.namespace, args.name)
    svc = await wait_ready(
        api, info, args.namespace, args.name, generation_of(current), args.wait_timeout,
        args.wait_window, echo=lambda line: _say(" " + line),
    )
    st = status(svc)
    revision = st.get("latestReadyRevisionName") or ""
    _say(
        f"Service '{args.name}' with latest revision '{revision}' is available at URL:\n"
        f"{st.get('url', '')}"
    )
    return 0


async def run_delete(api: ApiClient, args: argparse.Namespace) -> int:
    info = await api.resolve("ksvc")
    for name in args.names:
        await api.delete(info, args.namespace, name)
        _say(f"Service '{name}' successfully deleted in namespace '{args.namespace}'.")
    return 0


async def run_list(api: ApiClient, args: argparse.Namespace) -> int:
    info = await api.resolve("ksvc")
    ns = None if args.all_namespaces else args.namespace
    objs = await fetch(api, info, [args.name] if args.name else [], ns)
    print_objects(info, objs, args.output, False, ns is None, [], "No services found.")
    return 0


async def run_describe(api: ApiClient, args: argparse.Namespace) -> int:
    info = await api.resolve("ksvc")
    _say(await describe_one(api, info, args.namespace, args.name, args.output))
    return 0


def _add_edit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="image to run: a local folder (./app) or a reference")
    p.add_argument(
        "--cmd",
        action="append",
        metavar="CMD",
        help="the command (entrypoint), repeatable: --cmd sh --cmd /app/start.sh",
    )
    p.add_argument("--arg", action="append", metavar="ARG", help="an argument, repeatable")
    p.add_argument(
        "-e",
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="set an environment variable; KEY- removes it (repeatable)",
    )
    p.add_argument(
        "-a",
        "--annotation",
        action="append",
        metavar="K=V",
        help="annotation on the service and its revision template; K- removes it",
    )
    p.add_argument(
        "--annotation-service",
        action="append",
        metavar="K=V",
        help="annotation on the service only; K- removes it",
    )
    p.add_argument(
        "--annotation-revision",
        action="append",
        metavar="K=V",
        help="annotation on the revision template only; K- removes it",
    )
    p.add_argument(
        "-l",
        "--label",
        action="append",
        metavar="K=V",
        help="label on the service and its revision template; K- removes it",
    )
    p.add_argument(
        "--concurrency-limit",
        type=int,
        metavar="N",
        help="hard limit of concurrent requests per replica (0: unlimited)",
    )
    p.add_argument("--scale-min", type=int, metavar="N", help="minimum number of replicas")
    p.add_argument("--scale-max", type=int, metavar="N", help="maximum number of replicas")
    p.add_argument(
        "--scale-target",
        type=int,
        metavar="N",
        help="autoscaling target of concurrent requests per replica",
    )
    p.add_argument(
        "--revision-name",
        metavar="NAME",
        help="name of the new revision; {{.Service}}, {{.Generation}}, {{.Random N}}",
    )
    p.add_argument(
        "--traffic",
        action="append",
        metavar="REV=PCT",
        help="traffic split: REVISION=PERCENT, TAG=PERCENT or @latest=PERCENT",
    )
    p.add_argument(
        "--tag",
        action="append",
        metavar="REV=TAG",
        help="tag a revision (or @latest) with TAG, repeatable",
    )
    p.add_argument("--untag", action="append", metavar="TAG", help="remove a tag, repeatable")
    add_wait_flags(p, default=True)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    g = sub.add_parser("service", aliases=["services", "ksvc"], help="manage services (kn style)")
    gsub = g.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    p = gsub.add_parser("create", parents=[common], help="create a service")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="replace the service if it exists")
    _add_edit_flags(p)
    p.set_defaults(handler=run_create, prepare=resolve_image)

    p = gsub.add_parser("update", parents=[common], help="update a service")
    p.add_argument("name")
    _add_edit_flags(p)
    p.set_defaults(handler=run_update, prepare=resolve_image)

    p = gsub.add_parser("delete", parents=[common], help="delete services")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(handler=run_delete)

    p = gsub.add_parser("wait", parents=[common], help="wait until a service is ready")
    p.add_argument("name")
    add_wait_flags(p, default=True)
    p.set_defaults(handler=run_wait)

    p = gsub.add_parser("list", aliases=["ls"], parents=[common], help="list services")
    p.add_argument("name", nargs="?")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    add_output(p)
    p.set_defaults(handler=run_list)

    p = gsub.add_parser("describe", parents=[common], help="show a service in detail")
    p.add_argument("name")
    add_output(p, ("text", "yaml", "json"))
    p.set_defaults(handler=run_describe)
