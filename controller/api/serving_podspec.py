"""A revision spec (a PodSpec plus concurrency and timeouts): defaults, validation, warnings."""

from __future__ import annotations

from typing import Any

from controller.api import serving_embedded as emb
from controller.api.meta import (
    as_dict,
    as_int,
    as_list,
    err_disallowed,
    err_invalid_value,
    err_missing_field,
    err_out_of_bounds,
    index,
    is_dns1123_subdomain,
    is_set,
    join,
)
from controller.api.serving_container import container_errors
from controller.api.serving_security import pod_security_errors
from controller.api.types import FieldError

# Knative's config-defaults, same values.
REVISION_TIMEOUT_SECONDS = 300
MAX_REVISION_TIMEOUT_SECONDS = 600
CONTAINER_CONCURRENCY = 0
CONTAINER_CONCURRENCY_MAX = 1000
USER_CONTAINER_NAME = "user-container"
DEFAULT_PORT_NAME = "http"

_POD_WARNED = (
    "serviceAccountName",
    "automountServiceAccountToken",
    "securityContext",
    "nodeSelector",
    "affinity",
    "tolerations",
    "topologySpreadConstraints",
    "priorityClassName",
    "schedulerName",
    "runtimeClassName",
    "dnsPolicy",
    "dnsConfig",
    "hostAliases",
)

# Fields Knative's PodSpec mask lets through (some behind feature flags); anything else is refused.
REVISION_SPEC_FIELDS = frozenset(
    (
        "containers",
        "containerConcurrency",
        "timeoutSeconds",
        "responseStartTimeoutSeconds",
        "idleTimeoutSeconds",
        "volumes",
        "imagePullSecrets",
        "enableServiceLinks",
        "initContainers",
        *_POD_WARNED,
    )
)


# ---------------------------------------------------------------------------------------------
# Defaults (RevisionSpec.SetDefaults)
# ---------------------------------------------------------------------------------------------


def set_revision_spec_defaults(spec: dict[str, Any]) -> None:
    """timeoutSeconds 300, containerConcurrency 0, enableServiceLinks false, container name
    `user-container`, a tcpSocket readiness probe. No port: the runtime assigns one in $PORT."""
    if not spec.get("timeoutSeconds"):
        spec["timeoutSeconds"] = REVISION_TIMEOUT_SECONDS
    if spec.get("containerConcurrency") is None:
        spec["containerConcurrency"] = CONTAINER_CONCURRENCY
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = False
    containers = [c for c in as_list(spec.get("containers")) if isinstance(c, dict)]
    for i, c in enumerate(containers):
        if not c.get("name"):
            c["name"] = (
                USER_CONTAINER_NAME if len(containers) == 1 else f"{USER_CONTAINER_NAME}-{i}"
            )
        if len(containers) == 1 or c.get("ports"):
            _set_probe_defaults(c)


def _set_probe_defaults(container: dict[str, Any]) -> None:
    probe = container.get("readinessProbe")
    if probe is None:
        probe = container["readinessProbe"] = {}
    if not isinstance(probe, dict):
        return
    if not any(probe.get(h) is not None for h in ("tcpSocket", "httpGet", "exec", "grpc")):
        probe["tcpSocket"] = {"port": 0}
    if not probe.get("successThreshold"):
        probe["successThreshold"] = 1
    for p in (probe, container.get("livenessProbe")):
        # Kubernetes' own probe defaults, so an explicit period needs no explicit timeout.
        if isinstance(p, dict) and (as_int(p.get("periodSeconds")) or 0) > 0:
            p.setdefault("timeoutSeconds", 1)
            p.setdefault("failureThreshold", 3)


# ---------------------------------------------------------------------------------------------
# Validation (RevisionSpec.Validate, serving.ValidatePodSpec)
# ---------------------------------------------------------------------------------------------


def revision_spec_errors(spec: Any, path: str, *, embedded: bool = True) -> list[FieldError]:
    """Errors of a revision spec at `path` (`spec.template.spec` or `spec`)."""
    if not isinstance(spec, dict):
        return [err_missing_field(path)] if spec is None else [err_invalid_value(spec, path)]
    errs: list[FieldError] = [
        err_disallowed(join(path, k)) for k in sorted(spec) if k not in REVISION_SPEC_FIELDS
    ]
    errs += _timeout_errors(spec, path)
    errs += _concurrency_errors(spec, path)
    if embedded:
        for key in ("volumes", "imagePullSecrets", "initContainers"):
            if is_set(spec.get(key)):
                errs.append(emb.refused(key, join(path, key)))
    errs += pod_security_errors(spec.get("securityContext"), join(path, "securityContext"))
    sa = spec.get("serviceAccountName")
    if sa:
        msgs = is_dns1123_subdomain(sa) if isinstance(sa, str) else ["expected a string"]
        errs += [err_invalid_value(sa, join(path, "serviceAccountName"), m) for m in msgs]

    containers = spec.get("containers")
    cpath = join(path, "containers")
    if containers is None or containers == []:
        return [*errs, err_missing_field(cpath)]
    if not isinstance(containers, list):
        return [*errs, err_invalid_value(containers, cpath, "expected a list")]
    if embedded and len(containers) > 1:
        errs.append(emb.refused("containers", cpath))
    port_count = sum(len(as_list(as_dict(c).get("ports"))) for c in containers)
    if port_count > 1:
        errs.append(
            FieldError(
                join(cpath + "[*]", "ports"),
                "more than one container port is set; "
                "Only a single port is allowed across all containers",
            )
        )
    port_name = DEFAULT_PORT_NAME
    for c in containers:
        ports = as_list(as_dict(c).get("ports"))
        if ports and isinstance(ports[0], dict) and ports[0].get("name"):
            port_name = str(ports[0]["name"])
    for i, c in enumerate(containers):
        errs += container_errors(c, index(cpath, i), port_name, embedded)
    return errs


def _timeout_errors(spec: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    timeout = spec.get("timeoutSeconds")
    t = as_int(timeout)
    if timeout is not None and t is None:
        errs.append(err_invalid_value(timeout, join(path, "timeoutSeconds")))
    elif t and (t < 0 or t > MAX_REVISION_TIMEOUT_SECONDS):
        errs.append(
            err_out_of_bounds(t, 0, MAX_REVISION_TIMEOUT_SECONDS, join(path, "timeoutSeconds"))
        )
    upper = t if t and 0 < t <= MAX_REVISION_TIMEOUT_SECONDS else MAX_REVISION_TIMEOUT_SECONDS
    for key in ("responseStartTimeoutSeconds", "idleTimeoutSeconds"):
        raw = spec.get(key)
        v = as_int(raw)
        if raw is not None and v is None:
            errs.append(err_invalid_value(raw, join(path, key)))
        elif v and (v < 0 or v > upper):
            errs.append(err_out_of_bounds(v, 0, upper, join(path, key)))
    return errs


def _concurrency_errors(spec: dict[str, Any], path: str) -> list[FieldError]:
    raw = spec.get("containerConcurrency")
    if raw is None:
        return []
    v = as_int(raw)
    if v is None:
        return [err_invalid_value(raw, join(path, "containerConcurrency"))]
    if v < 0 or v > CONTAINER_CONCURRENCY_MAX:
        return [
            err_out_of_bounds(v, 0, CONTAINER_CONCURRENCY_MAX, join(path, "containerConcurrency"))
        ]
    return []


# ---------------------------------------------------------------------------------------------
# Warnings: accepted, not honoured by the embedded engine
# ---------------------------------------------------------------------------------------------


def revision_spec_warnings(spec: Any, path: str) -> list[str]:
    """One warning per set field the embedded engine accepts without honouring it."""
    if not isinstance(spec, dict):
        return []
    out = [emb.warned(k, join(path, k)) for k in _POD_WARNED if is_set(spec.get(k))]
    for i, c in enumerate(as_list(spec.get("containers"))):
        if not isinstance(c, dict):
            continue
        cpath = index(join(path, "containers"), i)
        resources = as_dict(c.get("resources"))
        if is_set(resources.get("requests")):
            out.append(
                emb.warned("containers[*].resources.requests", join(cpath, "resources.requests"))
            )
        limits = as_dict(resources.get("limits"))
        for key in ("cpu", "ephemeral-storage"):
            if key in limits:
                out.append(
                    emb.warned(
                        f"containers[*].resources.limits.{key}",
                        join(cpath, "resources.limits", key),
                    )
                )
        for j, p in enumerate(as_list(c.get("ports"))):
            if isinstance(p, dict) and as_int(p.get("containerPort")):
                out.append(
                    emb.warned(
                        "containers[*].ports[*].containerPort",
                        join(index(join(cpath, "ports"), j), "containerPort"),
                    )
                )
        for key in ("startupProbe", "securityContext", "imagePullPolicy"):
            if is_set(c.get(key)):
                out.append(emb.warned(f"containers[*].{key}", join(cpath, key)))
    return out
