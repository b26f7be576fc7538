"""`python -m controller`: run the embedded engine's controller in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import uvloop

from controller.app import serve
from controller.settings import ControllerSettings, default_state_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controller", description=__doc__)
    p.add_argument("--state-dir", type=Path, default=default_state_dir())
    p.add_argument("--api-port", type=int, default=8081)
    p.add_argument("--gateway-port", type=int, default=8080)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--progress-deadline", type=float, default=600.0,
                   help="seconds a new revision may take to become ready")
    p.add_argument("--keep-replicas-on-exit", action="store_true",
                   help="leave replicas running on SIGTERM (a restarted controller re-adopts them)")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = ControllerSettings(
        state_dir=a.state_dir.resolve(),
        api_port=a.api_port,
        gateway_port=a.gateway_port,
        domain=a.domain,
        progress_deadline_s=a.progress_deadline,
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings, stop_replicas_on_exit=not a.keep_replicas_on_exit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
