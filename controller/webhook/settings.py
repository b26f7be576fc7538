"""Where the admission webhook listens and what it accepts (`python -m controller --webhook-port`)."""

from __future__ import annotations

from dataclasses import dataclass

WEBHOOK_PORT = 8444
"""The port deploy/ gives it (Service `flint-webhook` 443 → 8444)."""


@dataclass(frozen=True)
class WebhookSettings:
    """The admission webhook's listener (Kubernetes engine only)."""

    port: int = 0
    """TLS port of `/admission/defaulting` and `/admission/validation`; 0: no webhook (default:
    the embedded engine has none, and a cluster's replicas pass `--webhook-port 8444`)."""
    host: str = "0.0.0.0"
    """Address it listens on: every interface, since the API server calls it through the
    `flint-webhook` Service (the pod's IP)."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Largest AdmissionReview accepted (bytes; larger is 413): an object and its old version,
    each at most etcd's 1.5 MiB, and the envelope."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"webhook port: {self.port} is not a TCP port (0-65535; 0: no webhook)")
        if not self.host:
            raise ValueError("webhook host: empty (use 0.0.0.0 for every interface)")
        if self.max_body_bytes < 1024:
            raise ValueError(f"webhook max_body_bytes: {self.max_body_bytes} is below 1024 bytes")
