"""`python -m controller`: run the embedded engine's controller in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import uvloop
import yaml

from controller.app import serve
from controller.autoscaling.settings import AutoscalerSettings, SettingsError, load_settings
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
    p.add_argument("--config", type=Path, default=None,
                   help="YAML file with an `autoscaler:` map of Knative config-autoscaler keys")
    p.add_argument("--autoscaler", action="append", default=[], metavar="KEY=VALUE",
                   help="a Knative config-autoscaler setting, e.g. stable-window=6s (repeatable)")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        autoscaler = autoscaler_settings(a.config, a.autoscaler)
    except (SettingsError, ValueError, OSError) as exc:
        p.error(str(exc))
    settings = ControllerSettings(
        autoscaler=autoscaler,
        state_dir=a.state_dir.resolve(),
        api_port=a.api_port,
        gateway_port=a.gateway_port,
        domain=a.domain,
        progress_deadline_s=a.progress_deadline,
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings, stop_replicas_on_exit=not a.keep_replicas_on_exit))
    return 0


def autoscaler_settings(config: Path | None, pairs: list[str]) -> AutoscalerSettings:
    """Global autoscaler settings: the config file's `autoscaler:` map, then `--autoscaler` flags.
    Like a test or benchmark profile, they may go below Knative's minimums (window, grace)."""
    data: dict[str, str] = {}
    if config is not None:
        loaded = yaml.safe_load(config.read_text()) or {}
        section = loaded.get("autoscaler") or {} if isinstance(loaded, dict) else {}
        if not isinstance(section, dict):
            raise ValueError(f"{config}: `autoscaler` must be a map of setting names to values")
        data.update({str(k): str(v) for k, v in section.items()})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--autoscaler {pair!r}: expected KEY=VALUE, e.g. stable-window=6s")
        data[key.strip()] = value.strip()
    return load_settings(data, allow_below_minimums=True)


if __name__ == "__main__":
    raise SystemExit(main())
