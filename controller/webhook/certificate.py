"""The webhook's serving certificate until the cluster certificate keeper serves one: issued by the
state dir's CA (`flint_common.tls`) into `<state>/tls/webhook.{crt,key}`, for the Service names the
API server calls (`flint-webhook.<ns>.svc`) and loopback. `start_webhook` is the one place that
asks for it: the keeper's in-place-reloading context (Secret `flint-controller-certs`) replaces
`state_dir_context` there."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
from pathlib import Path

from controller.api.registry import registry_for
from controller.webhook.server import WebhookServer
from controller.webhook.settings import WebhookSettings
from flint_common.tls import Authority, Name, ensure_server_files, server_context

WEBHOOK_SERVICE = "flint-webhook"
"""The Service in front of every controller replica's webhook port (deploy/flint)."""
DEFAULT_NAMESPACE = "flint-system"


def system_namespace() -> str:
    """The controller's namespace: `$POD_NAMESPACE` (the downward API), else flint-system."""
    return os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE


def webhook_names(namespace: str) -> list[Name]:
    """What the serving certificate carries: the Service's names (the API server verifies
    `<svc>.<ns>.svc`) and loopback (a webhook configuration's `url` in tests)."""
    svc = f"{WEBHOOK_SERVICE}.{namespace}.svc"
    return [svc, f"{svc}.cluster.local", "127.0.0.1", "::1", "localhost"]


def _context(state_dir: Path, ca: Authority, names: list[Name]) -> ssl.SSLContext:
    files, _ = ensure_server_files(ca, state_dir / "tls", "webhook", names, dt.datetime.now(dt.UTC))
    return server_context(files)


async def state_dir_context(state_dir: Path, ca: Authority, namespace: str) -> ssl.SSLContext:
    """A server context with a certificate from `ca` for `webhook_names(namespace)`, (re-)issued
    into the state dir when missing, stale or for other names (file I/O in a thread)."""
    return await asyncio.to_thread(_context, state_dir, ca, webhook_names(namespace))


async def start_webhook(settings: WebhookSettings, state_dir: Path, ca: Authority) -> WebhookServer:
    """The webhook listening over the Kubernetes engine's registry (`settings.port` must be set)."""
    context = await state_dir_context(state_dir, ca, system_namespace())  # the keeper's context goes here
    server = WebhookServer(registry_for("kubernetes"), settings, context)
    await server.start()
    return server
