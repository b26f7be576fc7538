"""One container of a revision: env, ports, resources and probes, validated in Knative's words."""

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
    err_missing_one_of,
    err_multiple_one_of,
    err_out_of_bounds,
    index,
    is_set,
    join,
)
from controller.api.serving_quantity import QuantityError, parse_quantity
from controller.api.serving_security import container_security_errors
from controller.api.types import FieldError

RESERVED_ENV_VARS = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
RESERVED_CONTAINER_NAMES = frozenset({"queue-proxy"})
RESERVED_PORTS = frozenset({8012, 8013, 8022, 8008, 9090, 9091})
VALID_PORT_NAMES = ("", "h2c", "http1")
MAX_INT32 = 2**31 - 1

CONTAINER_FIELDS = frozenset(
    {
        "name",
        "image",
        "command",
        "args",
        "workingDir",
        "env",
        "envFrom",
        "ports",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "securityContext",
        "volumeMounts",
        "imagePullPolicy",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "lifecycle",
    }
)
PROBE_FIELDS = frozenset(
    {
        "httpGet",
        "tcpSocket",
        "exec",
        "grpc",
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    }
)


def container_errors(c: Any, path: str, port_name: str, embedded: bool) -> list[FieldError]:
    if not isinstance(c, dict) or not c:
        return (
            [err_missing_field(path)]
            if not c
            else [err_invalid_value(c, path, "expected an object")]
        )
    errs = [err_disallowed(join(path, k)) for k in sorted(c) if k not in CONTAINER_FIELDS]
    name = c.get("name")
    if name in RESERVED_CONTAINER_NAMES:
        errs.append(FieldError(join(path, "name"), f'"{name}" is a reserved container name'))
    image = c.get("image")
    if not image:
        errs.append(err_missing_field(join(path, "image")))
    elif not isinstance(image, str):
        errs.append(err_invalid_value(image, join(path, "image"), "expected a string"))
    errs += _env_errors(c, path, embedded)
    errs += _port_errors(c.get("ports"), join(path, "ports"), embedded)
    errs += _resource_errors(c.get("resources"), join(path, "resources"))
    errs += probe_errors(c.get("livenessProbe"), join(path, "livenessProbe"), port_name, embedded)
    errs += probe_errors(
        c.get("readinessProbe"), join(path, "readinessProbe"), port_name, embedded, readiness=True
    )
    errs += container_security_errors(c.get("securityContext"), join(path, "securityContext"))
    policy = c.get("terminationMessagePolicy")
    if policy not in (None, "", "File", "FallbackToLogsOnError"):
        errs.append(err_invalid_value(policy, join(path, "terminationMessagePolicy")))
    if embedded:
        if isinstance(image, str) and emb.is_relative_image(image):
            errs.append(emb.refused("containers[*].image=relative", join(path, "image")))
        if is_set(c.get("volumeMounts")):
            errs.append(emb.refused("containers[*].volumeMounts", join(path, "volumeMounts")))
        if is_set(c.get("lifecycle")):
            errs.append(emb.refused("containers[*].lifecycle", join(path, "lifecycle")))
        caps = as_dict(as_dict(c.get("securityContext")).get("capabilities"))
        if is_set(caps.get("add")):
            errs.append(
                emb.refused(
                    "containers[*].securityContext.capabilities.add",
                    join(path, "securityContext.capabilities.add"),
                )
            )
    return errs


def _env_errors(c: dict[str, Any], path: str, embedded: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    env = c.get("env")
    if env is not None and not isinstance(env, list):
        errs.append(err_invalid_value(env, join(path, "env"), "expected a list"))
    for i, e in enumerate(as_list(env)):
        epath = index(join(path, "env"), i)
        if not isinstance(e, dict):
            errs.append(err_invalid_value(e, epath, "expected an object"))
            continue
        errs += [
            err_disallowed(join(epath, k))
            for k in sorted(e)
            if k not in ("name", "value", "valueFrom")
        ]
        name = e.get("name")
        if not name:
            errs.append(err_missing_field(join(epath, "name")))
        elif name in RESERVED_ENV_VARS:
            errs.append(
                FieldError(join(epath, "name"), f'"{name}" is a reserved environment variable')
            )
        if "value" in e and not isinstance(e["value"], str):
            errs.append(err_invalid_value(e["value"], join(epath, "value"), "expected a string"))
        if embedded and is_set(e.get("valueFrom")):
            errs.append(emb.refused("containers[*].env[*].valueFrom", join(epath, "valueFrom")))
    if embedded and is_set(c.get("envFrom")):
        errs.append(emb.refused("containers[*].envFrom", join(path, "envFrom")))
    return errs


def _port_errors(ports: Any, path: str, embedded: bool) -> list[FieldError]:
    if ports is None:
        return []
    if not isinstance(ports, list):
        return [err_invalid_value(ports, path, "expected a list")]
    if not ports:
        return []
    port = ports[0]
    if not isinstance(port, dict):
        return [err_invalid_value(port, index(path, 0), "expected an object")]
    ppath = index(path, 0)
    allowed = ("name", "containerPort", "protocol")
    errs = [err_disallowed(join(ppath, k)) for k in sorted(port) if k not in allowed]
    raw = port.get("containerPort")
    number = as_int(raw)
    if raw is not None and number is None:
        errs.append(err_invalid_value(raw, join(ppath, "containerPort")))
    elif number is not None:
        if number in RESERVED_PORTS:
            errs.append(
                err_invalid_value(
                    f"{number} is a reserved port",
                    join(ppath, "containerPort"),
                    f"{number} is a reserved port, please use a different value",
                )
            )
        if number < 0 or number > 65535:
            errs.append(err_out_of_bounds(number, 0, 65535, join(ppath, "containerPort")))
    protocol = port.get("protocol")
    if protocol not in (None, "", "TCP"):
        errs.append(err_invalid_value(protocol, join(ppath, "protocol")))
    name = port.get("name") or ""
    if name not in VALID_PORT_NAMES:
        errs.append(
            FieldError(
                path,
                f"Port name {name} is not allowed; Name must be empty, or one of: 'h2c', 'http1'",
            )
        )
    elif embedded and name == "h2c":
        errs.append(emb.refused("containers[*].ports[*].name=h2c", join(ppath, "name")))
    return errs


def _resource_errors(resources: Any, path: str) -> list[FieldError]:
    if resources is None:
        return []
    if not isinstance(resources, dict):
        return [err_invalid_value(resources, path, "expected an object")]
    errs = [
        err_disallowed(join(path, k)) for k in sorted(resources) if k not in ("limits", "requests")
    ]
    parsed: dict[str, dict[str, Any]] = {}
    for part in ("limits", "requests"):
        values = resources.get(part)
        if values is None:
            continue
        if not isinstance(values, dict):
            errs.append(err_invalid_value(values, join(path, part), "expected a map of quantities"))
            continue
        parsed[part] = {}
        for name, q in values.items():
            try:
                if isinstance(q, bool) or not isinstance(q, str | int | float):
                    raise QuantityError("expected a quantity")
                value = parse_quantity(q) if isinstance(q, str) else q
                if value < 0:
                    raise QuantityError("must be greater than or equal to 0")
                parsed[part][name] = value
            except QuantityError as e:
                errs.append(err_invalid_value(q, join(path, part, name), str(e)))
    limit, request = (
        parsed.get("limits", {}).get("memory"),
        parsed.get("requests", {}).get("memory"),
    )
    if limit is not None and request is not None and request > limit:
        errs.append(
            err_invalid_value(
                resources["requests"]["memory"],
                join(path, "requests", "memory"),
                f"must be less than or equal to memory limit of {resources['limits']['memory']}",
            )
        )
    return errs


def probe_errors(
    probe: Any, path: str, port_name: str, embedded: bool, readiness: bool = False
) -> list[FieldError]:
    """A liveness or readiness probe: exactly one handler, ports naming the container's port."""
    if probe is None:
        return []
    if not isinstance(probe, dict):
        return [err_invalid_value(probe, path, "expected an object")]
    errs = [err_disallowed(join(path, k)) for k in sorted(probe) if k not in PROBE_FIELDS]
    handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if probe.get(h) is not None]
    if not handlers:
        errs.append(
            err_missing_one_of(*(join(path, h) for h in ("httpGet", "tcpSocket", "exec", "grpc")))
        )
    elif len(handlers) > 1:
        errs.append(err_multiple_one_of(*(join(path, h) for h in handlers)))
    for h in ("httpGet", "tcpSocket"):
        action = probe.get(h)
        if action is None:
            continue
        if not isinstance(action, dict):
            errs.append(err_invalid_value(action, join(path, h), "expected an object"))
            continue
        port = action.get("port")
        if isinstance(port, str) and port and port != port_name:
            errs.append(
                err_invalid_value(
                    port, join(path, h, "port"), "Probe port must match container port"
                )
            )
        elif port is not None and not isinstance(port, str) and as_int(port) is None:
            errs.append(err_invalid_value(port, join(path, h, "port")))
        hpath = action.get("path")
        if (
            h == "httpGet"
            and hpath is not None
            and not (isinstance(hpath, str) and hpath.startswith("/"))
        ):
            errs.append(err_invalid_value(hpath, join(path, h, "path"), "must be an absolute path"))
    kind = "readinessProbe" if readiness else "livenessProbe"
    if embedded:
        for h in ("exec", "grpc"):
            if probe.get(h) is not None:
                errs.append(emb.refused(f"containers[*].{kind}.{h}", join(path, h)))
    if readiness:
        errs += _readiness_number_errors(probe, path)
    return errs


def _readiness_number_errors(p: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    nums: dict[str, int] = {}
    for k in (
        "periodSeconds",
        "initialDelaySeconds",
        "successThreshold",
        "timeoutSeconds",
        "failureThreshold",
    ):
        raw = p.get(k)
        v = as_int(raw)
        if raw is not None and v is None:
            errs.append(err_invalid_value(raw, join(path, k)))
        nums[k] = v or 0
    for k, lo in (("periodSeconds", 0), ("initialDelaySeconds", 0), ("successThreshold", 1)):
        if nums[k] < lo:
            errs.append(err_out_of_bounds(nums[k], lo, MAX_INT32, join(path, k)))
    if nums["periodSeconds"] == 0:
        for k in ("failureThreshold", "timeoutSeconds"):
            if nums[k] != 0:
                errs.append(
                    FieldError(join(path, k), f"{k} is disallowed when periodSeconds is zero")
                )
    else:
        for k in ("timeoutSeconds", "failureThreshold"):
            if nums[k] < 1:
                errs.append(err_out_of_bounds(nums[k], 1, MAX_INT32, join(path, k)))
    return errs
