"""Knative's validation of security contexts (pkg/apis/serving/k8s_validation.go, fieldmask.go), pure."""

from __future__ import annotations

from typing import Any

from controller.api.meta import (
    as_int,
    err_disallowed,
    err_invalid_value,
    err_out_of_bounds,
    index,
    join,
)
from controller.api.types import FieldError

MAX_ID = 2**31 - 1
"""runAsUser, runAsGroup, fsGroup and supplementalGroups lie in [0, MaxInt32] (Knative's)."""

CONTAINER_FIELDS = frozenset({
    "capabilities", "readOnlyRootFilesystem", "runAsUser", "runAsGroup", "runAsNonRoot",
    "allowPrivilegeEscalation", "seccompProfile", "privileged",
})
"""What Knative's SecurityContextMask lets through (privileged only as false); seLinuxOptions,
procMount, windowsOptions and anything else are refused."""
CAPABILITY_FIELDS = frozenset({"add", "drop"})
POD_DISALLOWED = ("seLinuxOptions", "windowsOptions", "sysctls", "fsGroupChangePolicy")
"""Pod security-context fields Knative's PodSecurityContextMask never lets through."""


def _id_errors(sc: dict[str, Any], key: str, path: str) -> list[FieldError]:
    if key not in sc or sc[key] is None:
        return []
    value = as_int(sc[key])
    if value is None:
        return [err_invalid_value(sc[key], join(path, key), "expected an integer")]
    if not 0 <= value <= MAX_ID:
        return [err_out_of_bounds(value, 0, MAX_ID, join(path, key))]
    return []


def container_security_errors(sc: Any, path: str) -> list[FieldError]:
    """A container's `securityContext` at `path`: Knative's disallowed fields and bounds."""
    if sc is None:
        return []
    if not isinstance(sc, dict):
        return [err_invalid_value(sc, path, "expected an object")]
    errs = [err_disallowed(join(path, k)) for k in sorted(sc) if k not in CONTAINER_FIELDS]
    if "privileged" in sc and sc["privileged"] not in (False, None):
        errs.append(err_disallowed(join(path, "privileged")))
    caps = sc.get("capabilities")
    if isinstance(caps, dict):
        cpath = join(path, "capabilities")
        errs += [err_disallowed(join(cpath, k)) for k in sorted(caps) if k not in CAPABILITY_FIELDS]
    elif caps is not None:
        errs.append(err_invalid_value(caps, join(path, "capabilities"), "expected an object"))
    for key in ("runAsUser", "runAsGroup"):
        errs += _id_errors(sc, key, path)
    return errs


def pod_security_errors(sc: Any, path: str) -> list[FieldError]:
    """A revision spec's `securityContext` at `path`: the fields Knative never allows, and ids
    in bounds."""
    if sc is None:
        return []
    if not isinstance(sc, dict):
        return [err_invalid_value(sc, path, "expected an object")]
    errs = [err_disallowed(join(path, k)) for k in POD_DISALLOWED if k in sc]
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        errs += _id_errors(sc, key, path)
    groups = sc.get("supplementalGroups")
    if isinstance(groups, list):
        for i, gid in enumerate(groups):
            value = as_int(gid)
            if value is None or not 0 <= value <= MAX_ID:
                gpath = index(join(path, "supplementalGroups"), i)
                errs.append(err_out_of_bounds(gid, 0, MAX_ID, gpath))
    elif groups is not None:
        errs.append(err_invalid_value(groups, join(path, "supplementalGroups"), "expected a list"))
    return errs
