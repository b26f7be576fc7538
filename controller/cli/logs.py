"""`flint logs SERVICE`: a service's replica logs, streamed from the controller's logs endpoint."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from controller.cli.client import ApiClient, ApiError, CliError


def logs_path(namespace: str, service: str) -> str:
    return f"/internal/logs/{quote(namespace, safe='')}/{quote(service, safe='')}"


async def run_logs(api: ApiClient, args: argparse.Namespace) -> int:
    params = {"tail": str(args.tail)}
    if args.follow:
        params["follow"] = "true"
    try:
        async for line in api.lines(logs_path(args.namespace, args.service), params):
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except ApiError as e:
        if e.code_http == 404:
            message = str(e.status.get("message") or "").strip()
            raise CliError(
                message or f"service '{args.service}' has no logs in namespace '{args.namespace}'"
            ) from None
        raise
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
    p.set_defaults(handler=run_logs)
