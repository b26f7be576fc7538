"""`python -m controller.eventing`: run the event dispatcher in the foreground (`flint up` does)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop

from controller.eventing.dispatcher import AlreadyRunning, DispatcherSettings, run
from controller.eventing.redis_consumer import RedisConsumerSettings
from controller.settings import default_state_dir
from flint_common import guards, redis_config, redis_conn
from flint_common.addresses import parse_listen
from flint_common.private import private_umask
from flint_common.secret import read_token

ENV_LEASE_S = "FLINT_REDIS_LEASE_S"
"""The default of `--redis-lease-s`; `flint up`'s dispatcher inherits it from `flint up`'s
environment, as do the dispatchers that join it (`loadtests.flint_process`)."""


def lease_s(value: str) -> float:
    """`--redis-lease-s`: seconds, more than 0."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"a lease lasts more than 0 seconds, not {value!r}")
    return seconds


def consumer_settings(lease: float, claim_after: float, heartbeat: float) -> RedisConsumerSettings:
    """The Redis consumers' settings of the flags; a ValueError when a live dispatcher's entries
    could be taken over (`claim_after` under three heartbeats)."""
    if heartbeat * 3 > claim_after:
        raise ValueError(f"--redis-claim-after-s ({claim_after:g}) must be at least three heartbeats "
                         f"(--redis-claim-heartbeat-s {heartbeat:g}): a live dispatcher's entries "
                         "would be taken over")
    return RedisConsumerSettings(lease_s=lease, claim_after_s=claim_after, claim_heartbeat_s=heartbeat)


def build_parser() -> argparse.ArgumentParser:
    """The dispatcher's command line (what deploy/'s manifests are checked against too)."""
    p = argparse.ArgumentParser(prog="python -m controller.eventing", description=__doc__)
    p.add_argument("--state-dir", type=Path, default=default_state_dir())
    p.add_argument("--controller", action="append", default=None,
                   help="controller base URL (default http://127.0.0.1:8081; repeatable: asked "
                   "in turn, e.g. each replica's)")
    p.add_argument("--gateway", default="http://127.0.0.1:8080", help="gateway base URL")
    p.add_argument("--domain", action="append", default=None,
                   help="a route domain whose URLs go through the gateway (default localhost; "
                        "repeatable: every domain of the controller's config-domain)")
    p.add_argument("--admin-port", type=int, default=8083)
    p.add_argument("--admin-listen", action="append", default=[], metavar="ADDR[:PORT]",
                   help="another address of the admin port (repeatable; the port defaults to "
                   "--admin-port), e.g. the pod's IP for the API server's service proxy; the "
                   "owner's token is required there too")
    p.add_argument("--token-file", type=Path, default=None,
                   help="0600 file with the owner's token (default <state-dir>/auth/token)")
    p.add_argument("--link-token-file", type=Path, default=None, metavar="PATH",
                   help="file with the token of the plan's long poll instead of the owner's "
                   "(Kubernetes: the projected service-account token, audience flint-controller); "
                   "read again for every poll")
    p.add_argument("--controller-ca", type=Path, default=None, metavar="FILE",
                   help="PEM file of the CAs that sign an https:// controller's certificate "
                   "(Kubernetes: the mounted ConfigMap flint-controller-ca); read again for every "
                   "poll (default: the system's CAs)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--redis-lease-s", type=lease_s, metavar="SECONDS",
                   default=os.environ.get(ENV_LEASE_S, str(RedisConsumerSettings().lease_s)),
                   help="the lease of an ordered Redis consumer's reader and of a Redis retry "
                   "being attempted, in seconds: a dispatcher paused longer loses them to "
                   "another. The reader's is renewed every third of it, a retry's every second "
                   "(keep it well above that; small values are for tests). Default "
                   f"${ENV_LEASE_S}, else {RedisConsumerSettings().lease_s:g}")
    p.add_argument("--redis-claim-after-s", type=lease_s, metavar="SECONDS",
                   default=RedisConsumerSettings().claim_after_s,
                   help="a Redis consumer's entries held this long by another dispatcher without "
                   "a heartbeat are taken over (it is taken for dead), in seconds; keep it above "
                   "three heartbeats (small values are for tests). Default "
                   f"{RedisConsumerSettings().claim_after_s:g}")
    p.add_argument("--redis-claim-heartbeat-s", type=lease_s, metavar="SECONDS",
                   default=RedisConsumerSettings().claim_heartbeat_s,
                   help="how often the entries a dispatcher holds are marked alive, in seconds. "
                   f"Default {RedisConsumerSettings().claim_heartbeat_s:g}")
    return p


def main(argv: list[str] | None = None) -> int:
    guards.enable_from_env()  # FLINT_BLOCKBUSTER=1: blocking calls on the loop are logged and raise
    p = build_parser()
    a = p.parse_args(argv)
    try:
        consumer = consumer_settings(a.redis_lease_s, a.redis_claim_after_s, a.redis_claim_heartbeat_s)
        admin_listen = tuple(dict.fromkeys(parse_listen(v, a.admin_port) for v in a.admin_listen))
    except ValueError as exc:
        p.error(str(exc))
    private_umask()
    logging.basicConfig(level=a.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    token_file = a.token_file or a.state_dir / "auth" / "token"
    try:
        token = read_token(token_file)
    except (OSError, ValueError) as exc:
        p.error(f"cannot read the owner's token from {token_file}: {exc}")
    try:
        redis = redis_config.from_env(os.environ)  # `flint up` passes it (never in argv)
    except redis_config.RedisConfigError as exc:
        p.error(str(exc))
    settings = DispatcherSettings(
        state_dir=a.state_dir.resolve(), gateway_url=a.gateway,
        controller_url=",".join(a.controller or ["http://127.0.0.1:8081"]),
        domain=",".join(a.domain or ["localhost"]), admin_port=a.admin_port, token=token, redis=redis,
        link_token_file=a.link_token_file, admin_listen=admin_listen, controller_ca=a.controller_ca,
        redis_consumer=consumer,
    )

    async def main_async() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        if redis is not None:
            await redis_conn.check_connection(redis, "dispatcher")
        await run(settings, stop)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main_async())
    except (AlreadyRunning, ValueError) as e:  # a second dispatcher; a state dir too deep
        print(f"dispatcher: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
