"""What the embedded engine does with each Knative field: one table for validation and README."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from controller.api.types import FieldError

Rule = Literal["refused", "warned", "enforced"]


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One field's fate on the embedded engine.

    `path` is relative to a revision spec (`spec.template.spec` of a Service or Configuration,
    `spec` of a Revision); `[*]` stands for any index. A path starting with `metadata.` is relative
    to the revision template (`spec.template` of a Service or Configuration, the Revision itself).
    """

    path: str
    rule: Rule
    reason: str


_NO_POD = "replicas are local processes on one machine, not pods: there is no scheduler"

EMBEDDED_FIELD_RULES: tuple[FieldRule, ...] = (
    # -- refused: the manifest is rejected, naming the field -------------------------------------
    FieldRule(
        "containers",
        "refused",
        "exactly one container per revision: sidecars need a pod (Knative's multi-container)",
    ),
    FieldRule("initContainers", "refused", "init containers need a pod"),
    FieldRule(
        "volumes",
        "refused",
        "no volumes: a replica runs from a read-only snapshot of its image directory",
    ),
    FieldRule(
        "containers[*].volumeMounts",
        "refused",
        "no volumes: a replica runs from a read-only snapshot of its image directory",
    ),
    FieldRule(
        "containers[*].envFrom",
        "refused",
        "there are no ConfigMaps or Secrets to read: set env values inline",
    ),
    FieldRule(
        "containers[*].env[*].valueFrom",
        "refused",
        "there are no ConfigMaps, Secrets or pod fields to read: set env values inline",
    ),
    FieldRule(
        "imagePullSecrets",
        "refused",
        "nothing is pulled: the image is a local directory or a stored artifact",
    ),
    FieldRule(
        "containers[*].ports[*].name=h2c",
        "refused",
        "the gateway speaks HTTP/1.1 to replicas: no HTTP/2 cleartext (h2c)",
    ),
    FieldRule(
        "containers[*].image=relative",
        "refused",
        "a relative path (`./`, `../app`) means the manifest's folder, which only `flint apply` "
        "knows: apply the manifest with `flint apply -f`, or give an absolute path",
    ),
    FieldRule(
        "containers[*].ports",
        "refused",
        "more than one port: a replica serves exactly one port (Knative refuses it too)",
    ),
    FieldRule(
        "containers[*].securityContext.capabilities.add",
        "refused",
        "replicas run unprivileged as the engine's user: capabilities cannot be granted",
    ),
    FieldRule(
        "containers[*].livenessProbe.exec", "refused", "only httpGet and tcpSocket probes are run"
    ),
    FieldRule(
        "containers[*].readinessProbe.exec", "refused", "only httpGet and tcpSocket probes are run"
    ),
    FieldRule(
        "containers[*].livenessProbe.grpc", "refused", "only httpGet and tcpSocket probes are run"
    ),
    FieldRule(
        "containers[*].readinessProbe.grpc", "refused", "only httpGet and tcpSocket probes are run"
    ),
    FieldRule("containers[*].lifecycle", "refused", "lifecycle hooks are not run"),
    # -- warned: accepted, and the client gets a Warning -----------------------------------------
    FieldRule(
        "metadata.annotations.autoscaling.knative.dev/target-burst-capacity",
        "warned",
        "the gateway is always in the request path: there is no activator to switch",
    ),
    FieldRule(
        "containers[*].resources.requests",
        "warned",
        "nothing reserves capacity for a local process",
    ),
    FieldRule(
        "containers[*].resources.limits.cpu", "warned", "CPU is not capped for local processes"
    ),
    FieldRule(
        "containers[*].resources.limits.ephemeral-storage",
        "warned",
        "disk use is not capped for local processes",
    ),
    FieldRule(
        "containers[*].ports[*].containerPort",
        "warned",
        "each replica listens on the port the runtime assigns in $PORT",
    ),
    FieldRule(
        "containers[*].startupProbe",
        "warned",
        "startup probes are not run: the readiness probe gates traffic",
    ),
    FieldRule(
        "containers[*].securityContext",
        "warned",
        "replicas run as the engine's user, with its privileges",
    ),
    FieldRule("containers[*].imagePullPolicy", "warned", "nothing is pulled"),
    FieldRule("serviceAccountName", "warned", "replicas have no Kubernetes identity"),
    FieldRule("automountServiceAccountToken", "warned", "replicas have no Kubernetes identity"),
    FieldRule(
        "securityContext", "warned", "replicas run as the engine's user, with its privileges"
    ),
    FieldRule("nodeSelector", "warned", _NO_POD),
    FieldRule("affinity", "warned", _NO_POD),
    FieldRule("tolerations", "warned", _NO_POD),
    FieldRule("topologySpreadConstraints", "warned", _NO_POD),
    FieldRule("priorityClassName", "warned", _NO_POD),
    FieldRule("schedulerName", "warned", _NO_POD),
    FieldRule("runtimeClassName", "warned", "replicas run directly on the host"),
    FieldRule("dnsPolicy", "warned", "replicas use the host's resolver"),
    FieldRule("dnsConfig", "warned", "replicas use the host's resolver"),
    FieldRule("hostAliases", "warned", "replicas use the host's /etc/hosts"),
    # -- enforced: validated here and honoured by the runtime or gateway -------------------------
    FieldRule(
        "containers[*].resources.limits.memory",
        "enforced",
        "the runtime caps each replica's memory (a Kubernetes quantity: 128Mi, 1G, 1e9)",
    ),
    FieldRule(
        "containers[*].livenessProbe",
        "enforced",
        "httpGet or tcpSocket; the runtime restarts a replica that fails it",
    ),
    FieldRule(
        "containers[*].readinessProbe",
        "enforced",
        "httpGet or tcpSocket; a replica gets traffic once it passes (default: tcpSocket)",
    ),
    FieldRule(
        "containers[*].image",
        "enforced",
        "a local directory (snapshotted into the artifact store) or a stored artifact",
    ),
    FieldRule("containers[*].command", "enforced", "the replica's command"),
    FieldRule("containers[*].args", "enforced", "the replica's arguments"),
    FieldRule("containers[*].env", "enforced", "the replica's environment, with PORT and K_* set"),
    FieldRule("containers[*].workingDir", "enforced", "relative to the image snapshot"),
    FieldRule("containerConcurrency", "enforced", "the gateway's in-flight limit per replica"),
    FieldRule("timeoutSeconds", "enforced", "the gateway's whole-request timeout"),
    FieldRule(
        "responseStartTimeoutSeconds", "enforced", "the gateway's time to the first response byte"
    ),
    FieldRule("idleTimeoutSeconds", "enforced", "the gateway's idle timeout between bytes"),
)

_BY_PATH = {r.path: r for r in EMBEDDED_FIELD_RULES}


def is_relative_image(image: str) -> bool:
    """`.`, `..`, `./x`, `../x` (or `file://` before one): a folder relative to a manifest."""
    path = image.removeprefix("file://")
    return path in (".", "..") or path.startswith(("./", "../"))


def rule(path: str) -> FieldRule:
    """The rule of a table path (a KeyError for a path not in the table is a programming error)."""
    return _BY_PATH[path]


def refused(rule_path: str, field_path: str) -> FieldError:
    """The error for a refused field: `not supported by the embedded engine: <reason>`."""
    r = _BY_PATH[rule_path]
    assert r.rule == "refused", rule_path
    return FieldError(field_path, f"not supported by the embedded engine: {r.reason}")


def warned(rule_path: str, field_path: str) -> str:
    """The warning for an accepted field: `<path> is accepted but not enforced by the ...`."""
    r = _BY_PATH[rule_path]
    assert r.rule == "warned", rule_path
    return f"{field_path} is accepted but not enforced by the embedded engine"


def embedded_rules_markdown() -> str:
    """The table for the README: field, what the embedded engine does, why."""
    words = {"refused": "refused", "warned": "accepted with a warning", "enforced": "enforced"}
    lines = [
        "| field (in a revision spec) | embedded engine | why |",
        "| --- | --- | --- |",
    ]
    for r in EMBEDDED_FIELD_RULES:
        path = r.path.replace("|", "\\|")
        lines.append(f"| `{path}` | {words[r.rule]} | {r.reason} |")
    return "\n".join(lines) + "\n"
