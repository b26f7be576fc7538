"""The `flint` command: argparse root, global options, dispatch and exit codes (0, 1, 2 usage)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence

from controller.cli import (
    channel_cmd,
    event_send,
    eventing_cmd,
    export_cmd,
    logs,
    resource_cmd,
    service_cmd,
)
from controller.cli.client import ApiClient, CliError, Unreachable
from controller.cli.endpoint import resolve

Handler = Callable[[ApiClient, argparse.Namespace], Awaitable[int]]
Prepare = Callable[[argparse.Namespace], None]
"""A command's local inputs (manifests, stdin, the folder an --image names, a data file), read
into its arguments before its event loop starts: set as `prepare` next to the `handler`."""


def _connection_options(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--api",
        default=default,
        metavar="URL",
        help="the Flint API, replacing the kubeconfig's server (env FLINT_API)",
    )
    p.add_argument(
        "--kubeconfig",
        default=default,
        metavar="PATH",
        help="kubeconfig to use (default: $KUBECONFIG, ${FLINT_KUBECONFIG:-~/.config/flint/"
        "kubeconfig}, ~/.kube/config); flint up writes <state-dir>/kubeconfig",
    )
    p.add_argument(
        "--context", default=default, metavar="NAME",
        help="kubeconfig context (default: its current-context)",
    )


def common_options() -> argparse.ArgumentParser:
    """`--api`, `--kubeconfig`, `--context` and `-n` accepted after any command too (defaults
    live on the root parser)."""
    p = argparse.ArgumentParser(add_help=False)
    _connection_options(p, argparse.SUPPRESS)
    p.add_argument(
        "-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: default)"
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="flint",
        description="Flint: serverless with Knative's API. kubectl's and kn's verbs.",
    )
    _connection_options(root, None)
    root.add_argument(
        "-n", "--namespace", default="default", help="namespace (default: %(default)s)"
    )
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("up", help="run Flint on this machine (flint up --help)", add_help=False)
    common = common_options()
    resource_cmd.add_parsers(sub, common)
    service_cmd.add_parser(sub, common)
    eventing_cmd.add_parsers(sub, common)
    channel_cmd.add_parsers(sub, common)
    event_send.add_parser(sub, common)
    logs.add_parser(sub, common)
    export_cmd.add_parser(sub, common)
    return root


async def run(handler: Handler, args: argparse.Namespace) -> int:
    endpoint = await resolve(args.api, args.kubeconfig, args.context)
    async with ApiClient(endpoint) as api:
        api.on_warning = lambda text: print(f"Warning: {text}", file=sys.stderr, flush=True)
        return await handler(api, args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "up":
        from controller.cli import up  # lazily: the supervisor pulls in the whole platform

        return int(up.main(argv[1:]))
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    prepare: Prepare | None = getattr(args, "prepare", None)
    try:
        if prepare is not None:
            prepare(args)  # files and stdin: never on the loop
        return asyncio.run(run(handler, args))
    except CliError as e:
        plain = isinstance(e, Unreachable) or e.message.startswith("Error")
        text = e.message if plain else f"Error: {e.message}"
        print(text, file=sys.stderr, flush=True)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
