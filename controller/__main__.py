"""`python -m controller`: run the controller in the foreground (the embedded engine's by default)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop
import yaml

from controller.api.eventing import ENGINE_EMBEDDED
from controller.app import Controller
from controller.autoscaling.settings import AutoscalerSettings, SettingsError, load_settings
from controller.cluster_tls.keeper import ClusterTLSError
from controller.cluster_tls.settings import ClusterTLSSettings, default_system_namespace
from controller.domains import parse_config_domain
from controller.engine import ENGINES, EngineUnavailable
from controller.leader import LeaderSettings
from controller.reconcilers.gc import load_gc_settings
from controller.reconcilers.rollout import load_network_settings
from controller.settings import ControllerSettings, default_state_dir
from controller.store.kubernetes_config import KubernetesSettings
from controller.webhook.settings import WebhookSettings
from flint_common import guards, heap, redis_config
from flint_common.addresses import parse_listen
from flint_common.private import UnsafeStateDir, private_umask


def main(argv: list[str] | None = None) -> int:
    guards.enable_from_env()  # FLINT_BLOCKBUSTER=1: blocking calls on the loop are logged and raise
    settings, a = settings_from_argv(argv)
    private_umask()
    logging.basicConfig(level=a.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(settings, stop_replicas_on_exit=not a.keep_replicas_on_exit))
    except (UnsafeStateDir, EngineUnavailable, ClusterTLSError) as e:
        print(f"controller: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


def settings_from_argv(argv: list[str] | None) -> tuple[ControllerSettings, argparse.Namespace]:
    """The settings the flags and `--config` say (a bad one exits 2 naming it), and the flags."""
    p = argparse.ArgumentParser(prog="python -m controller", description=__doc__)
    p.add_argument("--state-dir", type=Path, default=default_state_dir())
    p.add_argument("--api-port", type=int, default=8081, help="plain-HTTP API port (loopback)")
    p.add_argument("--api-tls-port", type=int, default=8443, help="HTTPS API port")
    p.add_argument("--api-listen", action="append", default=[], metavar="ADDR[:PORT]",
                   help="another address for the HTTPS API (repeatable; port default --api-tls-port)")
    p.add_argument("--dispatcher-url", default="http://127.0.0.1:8083",
                   help="the event dispatcher's admin URL (proxied under /internal/dispatcher/)")
    p.add_argument("--gateway-port", type=int, default=8080)
    p.add_argument("--domain", default="localhost",
                   help="the default route domain (Knative's config-domain default; other domains "
                        "by label in --config's `domain:` section)")
    p.add_argument("--progress-deadline", type=float, default=600.0,
                   help="seconds a new revision may take to become ready")
    p.add_argument("--keep-replicas-on-exit", action="store_true",
                   help="leave replicas running on SIGTERM (a restarted controller re-adopts them)")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML file with an `autoscaler:` map of Knative config-autoscaler keys")
    p.add_argument("--autoscaler", action="append", default=[], metavar="KEY=VALUE",
                   help="a Knative config-autoscaler setting, e.g. stable-window=6s (repeatable)")
    p.add_argument("--gc", action="append", default=[], metavar="KEY=VALUE",
                   help="a Knative config-gc setting, e.g. max-non-active-revisions=5 (repeatable)")
    p.add_argument("--network", action="append", default=[], metavar="KEY=VALUE",
                   help="a Knative config-network setting: rollout-duration=120s (repeatable)")
    p.add_argument("--engine", choices=ENGINES, default=ENGINE_EMBEDDED,
                   help="embedded: SQLite store, local processes (default); kubernetes: the "
                        "cluster's API server, revisions as Deployments")
    p.add_argument("--kubeconfig", default="",
                   help="the kubeconfig of --engine kubernetes outside a pod (default: $KUBECONFIG, "
                        "~/.kube/config; in a pod: its service account)")
    p.add_argument("--kube-context", default="", help="the kubeconfig context (default: current)")
    p.add_argument("--kube-namespace", default="default",
                   help="the namespace of an object that names none (default: default)")
    leader = LeaderSettings()
    p.add_argument("--no-leader-elect", dest="leader_elect", action="store_false",
                   help="on --engine kubernetes, lead without an election (one replica only)")
    p.add_argument("--leader-namespace", default=leader.namespace,
                   help=f"the election Lease's namespace (default {leader.namespace})")
    p.add_argument("--leader-lease", default=leader.lease,
                   help=f"the election Lease's name (default {leader.lease})")
    p.add_argument("--leader-lease-duration", type=int, default=leader.lease_duration_s,
                   help=f"seconds a standby waits on a silent leader (default {leader.lease_duration_s})")
    p.add_argument("--leader-renew-deadline", type=float, default=leader.renew_deadline_s,
                   help=f"seconds a leader tries to renew before it steps down "
                        f"(default {leader.renew_deadline_s:g})")
    p.add_argument("--leader-retry-period", type=float, default=leader.retry_period_s,
                   help=f"seconds between two renewals or campaigns (default {leader.retry_period_s:g})")
    p.add_argument("--gateway-rejoin", type=float, default=10.0, metavar="SECONDS",
                   help="after a leader's term starts, how long it waits for the gateways to link "
                        "before their acks count as complete (default 10)")
    p.add_argument("--advertise", default=None, metavar="ADDR[:PORT]",
                   help="where gateways and dispatchers reach this controller while it leads "
                        "(default $POD_IP or 127.0.0.1, and --api-port)")
    p.add_argument("--system-namespace", default=default_system_namespace(),
                   help="on --engine kubernetes, the controller's namespace: Secret "
                        "flint-controller-certs and ConfigMap flint-controller-ca are there, and the "
                        "certificate names its Services (default $POD_NAMESPACE, else flint-system)")
    p.add_argument("--tls-name", action="append", default=[], metavar="NAME",
                   help="on --engine kubernetes, another DNS name or IP address for the cluster "
                        "certificate, besides the Services' (repeatable; the same on every replica)")
    p.add_argument("--webhook-port", type=int, default=0,
                   help="on --engine kubernetes, the admission webhook's TLS port (deploy/: 8444; "
                        "default 0: no webhook)")
    p.add_argument("--webhook-host", default=WebhookSettings.host,
                   help=f"the admission webhook's address (default {WebhookSettings.host})")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    try:
        autoscaler = autoscaler_settings(a.config, a.autoscaler)
        gc = load_gc_settings(_pairs(a.config, "gc", a.gc))
        network = load_network_settings(_pairs(a.config, "network", a.network))
        api_listen = tuple(parse_listen(v, a.api_tls_port) for v in a.api_listen)
        advertise = parse_listen(a.advertise, a.api_port) if a.advertise else None
        domains = parse_config_domain(_section(a.config, "domain"), a.domain)
        leader = LeaderSettings(
            lease=a.leader_lease, namespace=a.leader_namespace,
            lease_duration_s=a.leader_lease_duration, renew_deadline_s=a.leader_renew_deadline,
            retry_period_s=a.leader_retry_period)
        cluster_tls = ClusterTLSSettings(namespace=a.system_namespace, extra_names=tuple(a.tls_name))
        # flint up passes the resolved settings in the environment (FLINT_REDIS_*).
        webhook = WebhookSettings(port=a.webhook_port, host=a.webhook_host)
        if webhook.port and a.engine != "kubernetes":
            raise ValueError(f"--webhook-port {webhook.port}: the admission webhook is the "
                             "Kubernetes engine's; add --engine kubernetes")
        redis = redis_config.resolve(
            env=os.environ, config=_load(a.config),
            base_dir=a.config.parent if a.config is not None else None)
    except (SettingsError, ValueError, OSError) as exc:
        p.error(str(exc))
    settings = ControllerSettings(
        autoscaler=autoscaler,
        gc=gc,
        network=network,
        state_dir=a.state_dir.resolve(),
        api_port=a.api_port,
        api_tls_port=a.api_tls_port,
        api_listen=api_listen,
        dispatcher_url=a.dispatcher_url,
        gateway_port=a.gateway_port,
        domain=domains.default,
        domain_rules=domains.rules,
        progress_deadline_s=a.progress_deadline,
        redis=redis,
        engine=a.engine,
        kubernetes=KubernetesSettings(kubeconfig=a.kubeconfig, context=a.kube_context,
                                      namespace=a.kube_namespace),
        leader_election=a.leader_elect,
        leader=leader,
        advertise=advertise,
        gateway_rejoin_s=a.gateway_rejoin,
        cluster_tls=cluster_tls,
        webhook=webhook,
    )
    return settings, a


def _load(config: Path | None) -> dict[str, object] | None:
    """The settings file, parsed (None without one, or when it is no map)."""
    if config is None:
        return None
    loaded = yaml.safe_load(config.read_text())
    return loaded if isinstance(loaded, dict) else None


def _section(config: Path | None, name: str) -> dict[str, object]:
    """The settings file's `<name>:` map ({} without one)."""
    section = (_load(config) or {}).get(name) or {}
    if not isinstance(section, dict):
        raise ValueError(f"{config}: `{name}` must be a map")
    return {str(k): v for k, v in section.items()}


def _pairs(config: Path | None, section_name: str, pairs: list[str]) -> dict[str, str]:
    """One settings section: the config file's `<section>:` map, then `--<section> K=V` flags."""
    data: dict[str, str] = {}
    if config is not None:
        loaded = _load(config) or {}
        section = loaded.get(section_name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{config}: `{section_name}` must be a map of setting names to values")
        data.update({str(k): str(v) for k, v in section.items()})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--{section_name} {pair!r}: expected KEY=VALUE")
        data[key.strip()] = value.strip()
    return data


def autoscaler_settings(config: Path | None, pairs: list[str]) -> AutoscalerSettings:
    """Global autoscaler settings: the config file's `autoscaler:` map, then `--autoscaler` flags.
    Like a test or benchmark profile, they may go below Knative's minimums (window, grace)."""
    return load_settings(_pairs(config, "autoscaler", pairs), allow_below_minimums=True)


async def serve(settings: ControllerSettings, stop_replicas_on_exit: bool) -> None:
    """Run until SIGTERM/SIGINT."""
    controller = Controller(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await controller.start()
    heap.settle()  # the informers' caches are listed: out of the collector's full passes
    pid_file = settings.state_dir / "controller.pid"
    await asyncio.to_thread(pid_file.write_text, f"{os.getpid()}\n")
    print(f"controller: ready on {', '.join(controller.urls)}", flush=True)
    try:
        await stop.wait()
    finally:
        await controller.stop(stop_replicas=stop_replicas_on_exit)


if __name__ == "__main__":
    raise SystemExit(main())
