"""`flint logs SERVICE`: a service's replica logs — from the controller's logs endpoint on
`flint up`, from its Pods' `pods/log` on a cluster (`controller.cli.pod_logs`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from controller.api.autoscaling import parse_duration
from controller.cli.client import ApiClient, ApiError, CliError
from controller.cli.errors import usage
from controller.cli.kinds import ResourceInfo
from controller.cli.pod_logs import log_params, merged, pod_logs, pod_selector

PODS = ResourceInfo("", "v1", "pods", "pod", "Pod", ("po",))


def logs_path(namespace: str, service: str) -> str:
    return f"/internal/logs/{quote(namespace, safe='')}/{quote(service, safe='')}"


def since_seconds(text: str | None) -> float | None:
    """`--since` (a duration: 10s, 5m, 1h30m) in seconds; None without one."""
    if text is None:
        return None
    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise usage(f"--since {text!r}: expected a positive duration such as 30s, 5m or 1h")
    return seconds


async def embedded_lines(api: ApiClient, args: argparse.Namespace) -> AsyncIterator[str]:
    if args.since is not None:
        raise usage("--since needs a cluster: the embedded engine's replica logs carry no "
                    "timestamps yet (use --tail)")
    params = {"tail": str(args.tail)}
    if args.follow:
        params["follow"] = "true"
    try:
        async for line in api.lines(logs_path(args.namespace, args.service), params):
            yield line
    except ApiError as e:
        if e.code_http == 404:
            message = str(e.status.get("message") or "").strip()
            raise CliError(
                message or f"service '{args.service}' has no logs in namespace '{args.namespace}'"
            ) from None
        raise


async def cluster_lines(api: ApiClient, args: argparse.Namespace) -> AsyncIterator[str]:
    since = since_seconds(args.since)
    listed = await api.list(PODS, args.namespace, pod_selector(args.service))
    logs = pod_logs([p for p in listed.get("items") or [] if isinstance(p, dict)])
    if not logs:
        raise CliError(f"service '{args.service}' has no running pods in namespace "
                       f"'{args.namespace}' (scaled to zero? `flint service describe {args.service}`)")

    async def one(path: str, container: str, prefix: str) -> AsyncIterator[str]:
        async for line in api.lines(path, log_params(container, args.tail, since, args.follow)):
            yield prefix + line

    async for line in merged([one(lg.path, lg.container, lg.prefix) for lg in logs]):
        yield line


async def run_logs(api: ApiClient, args: argparse.Namespace) -> int:
    source = cluster_lines if await api.on_cluster() else embedded_lines
    async for line in source(api, args):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[common], help="print a service's logs")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines")
    p.add_argument(
        "--tail",
        type=int,
        default=100,
        metavar="N",
        help="lines of each replica's log to show first (default: %(default)s)",
    )
    p.add_argument("--since", metavar="DURATION",
                   help="only lines newer than this (e.g. 10s, 5m; on a cluster)")
    p.set_defaults(handler=run_logs)
