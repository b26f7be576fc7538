"""Where the cluster certificates live and how they are rotated (documented dataclasses, pure)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from flint_common.tls import RENEW_BEFORE

__all__ = ["CA_CONFIGMAP", "CERTS_SECRET", "ClusterTLSSettings", "RotationSettings",
           "default_system_namespace", "serving_names"]

CERTS_SECRET = "flint-controller-certs"
"""The Secret holding the CA and the serving certificate (keys `ca.crt`, `ca.key`, `tls.crt`,
`tls.key`; during a rotation `ca-next.*` or `ca-previous.crt` too)."""
CA_CONFIGMAP = "flint-controller-ca"
"""The ConfigMap whose `ca.crt` is the bundle of every CA to trust (gateways and dispatchers
mount it for `--controller-ca`)."""
WEBHOOK_SERVICE = "flint-webhook"
LEADER_SERVICE = "flint-controller-leader"


def default_system_namespace() -> str:
    """`$POD_NAMESPACE` (the downward API), else `flint-system`."""
    return os.environ.get("POD_NAMESPACE") or "flint-system"


def serving_names(namespace: str) -> list[str]:
    """The DNS names the serving certificate carries: the webhook Service's and the leader
    Service's, short and with the cluster domain."""
    return [f"{svc}.{namespace}.svc{suffix}"
            for svc in (WEBHOOK_SERVICE, LEADER_SERVICE) for suffix in ("", ".cluster.local")]


@dataclass(frozen=True)
class RotationSettings:
    """When the leader rotates the CA (`controller.cluster_tls.rotation`)."""

    ca_overlap_s: float = 3600.0
    """Seconds each phase of a CA rotation lasts: the new CA is trusted this long before the
    serving certificate is issued from it, and the old one is trusted this long after (time for
    the kubelet to update the mounted `flint-controller-ca` ConfigMap, about a minute, and for
    every client to read it again). Default 1 hour."""
    ca_renew_before_s: float = 90 * 24 * 3600.0
    """A CA with less than this left (seconds) is rotated (default 90 days; a CA lives 10 years).
    Must be more than two overlaps and the serving certificate's 30-day renewal margin, so that
    the rotation ends while the old CA can still sign a certificate that is not about to expire."""

    def __post_init__(self) -> None:
        if not self.ca_overlap_s > 0:
            raise ValueError(f"ca_overlap_s must be above 0 seconds, not {self.ca_overlap_s}")
        least = 2 * self.ca_overlap_s + RENEW_BEFORE.total_seconds()
        if not self.ca_renew_before_s > least:
            raise ValueError(f"ca_renew_before_s ({self.ca_renew_before_s:g}) must be more than two "
                             f"ca_overlap_s and 30 days ({least:g} s): the rotation must end "
                             "before the CA comes near its end")


@dataclass(frozen=True)
class ClusterTLSSettings:
    """The cluster certificates of the Kubernetes engine (`controller.cluster_tls.keeper`)."""

    namespace: str = field(default_factory=default_system_namespace)
    """The controller's namespace (`--system-namespace`; default `$POD_NAMESPACE`, else
    `flint-system`): the Secret, the ConfigMap and the Services named in the certificate are there."""
    secret: str = CERTS_SECRET
    """The Secret's name."""
    configmap: str = CA_CONFIGMAP
    """The trust bundle's ConfigMap (key `ca.crt`)."""
    mutating_webhook: str = "flint-defaulting"
    """The MutatingWebhookConfiguration whose webhooks' `caBundle` the leader keeps current."""
    validating_webhook: str = "flint-validation"
    """The ValidatingWebhookConfiguration whose webhooks' `caBundle` the leader keeps current."""
    extra_names: tuple[str, ...] = ()
    """More names (DNS or IP) for the serving certificate, for a controller reached otherwise
    than by its Services (tests on loopback: `127.0.0.1`). Every replica must have the same, or
    the leader re-issues the certificate at each term."""
    rotation: RotationSettings = field(default_factory=RotationSettings)
    """When the CA is rotated."""
    recheck_s: float = 3600.0
    """The leader looks at the certificates again at least this often (seconds), besides when
    the Secret changes and when the schedule says something is due."""
    retry_s: float = 5.0
    """Pause (seconds) after a failed read or write of the API server before trying again."""

    def __post_init__(self) -> None:
        if not self.namespace:
            raise ValueError("system namespace (--system-namespace) must not be empty")
        for name in ("recheck_s", "retry_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0 seconds, not {getattr(self, name)}")

    @property
    def names(self) -> list[str]:
        """Every name the serving certificate carries."""
        return [*serving_names(self.namespace), *self.extra_names]
