"""Turns a Revision's container into what the local runtime runs (pure): argv, env, probes, limits."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from controller.api.serving_quantity import quantity_bytes
from controller.runtime.base import Probe, ReplicaSpec

Obj = dict[str, Any]


class NotRunnable(ValueError):
    """The revision cannot be run by the embedded engine; the message says what to change."""


def is_local_image(image: str) -> bool:
    return image.startswith(("/", "./", "../", "file://")) or image in (".", "..")


def local_image_path(image: str) -> Path:
    """`image` as an absolute directory path; relative paths are resolved by the client."""
    if image.startswith("file://"):
        image = image[len("file://"):]
    path = Path(image)
    if not path.is_absolute():
        raise NotRunnable(
            f'image "{image}" is a relative path; the API needs an absolute one '
            "(flint apply resolves paths in a manifest against the manifest's folder)"
        )
    return path


def procfile_web(text: str) -> str | None:
    """The command of a Procfile's `web:` process type, if any."""
    for line in text.splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == "web" and command.strip():
            return command.strip()
    return None


def argv(container: Obj, procfile: str | None) -> tuple[str, ...]:
    """Knative's rule with a Procfile as the image's entrypoint: `command` replaces it, `args`
    are passed to whichever runs."""
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if command:
        return (*command, *args)
    if procfile is None:
        raise NotRunnable(
            "nothing to run: set spec.template.spec.containers[0].command (and args) "
            "or add a Procfile with a `web:` line to the image directory"
        )
    # Run as a shell command line (`a && b`, `FOO=1 cmd` work); the runtime signals the whole
    # process group, so no `exec` is needed for the app to get SIGTERM.
    if args:
        return ("/bin/sh", "-c", f'{procfile} "$@"', "web", *args)
    return ("/bin/sh", "-c", procfile)


def _probe(raw: Obj | None, *, default: Probe | None) -> Probe | None:
    if not raw:
        return default
    timeout = float(raw.get("timeoutSeconds") or 1)
    period = float(raw.get("periodSeconds") or 0)
    common: dict[str, Any] = {
        "timeout_s": timeout,
        "failure_threshold": int(raw.get("failureThreshold") or 3),
        "initial_delay_s": float(raw.get("initialDelaySeconds") or 0),
    }
    if period:
        common["period_s"] = period
    if "httpGet" in raw:
        http = raw["httpGet"] or {}
        port = http.get("port")
        return Probe(kind="http", path=str(http.get("path") or "/"),
                     port=int(port) if isinstance(port, int) and port else None, **common)
    tcp = raw.get("tcpSocket") or {}
    port = tcp.get("port")
    return Probe(kind="tcp", port=int(port) if isinstance(port, int) and port else None, **common)


def replica_spec(revision: Obj, image_dir: Path, procfile: str | None) -> ReplicaSpec:
    meta = revision["metadata"]
    labels = meta.get("labels") or {}
    container = (revision.get("spec") or {}).get("containers", [{}])[0]
    env = {str(e["name"]): str(e.get("value", "")) for e in container.get("env") or []}
    limits = (container.get("resources") or {}).get("limits") or {}
    memory = limits.get("memory")
    return ReplicaSpec(
        namespace=meta.get("namespace", "default"),
        revision=meta["name"],
        service=labels.get("serving.knative.dev/service", ""),
        configuration=labels.get("serving.knative.dev/configuration", ""),
        image_dir=image_dir,
        command=argv(container, procfile),
        env=env,
        working_dir=container.get("workingDir") or None,
        readiness=_probe(container.get("readinessProbe"), default=Probe()) or Probe(),
        liveness=_probe(container.get("livenessProbe"), default=None),
        memory_limit_bytes=quantity_bytes(memory) if memory else None,
    )


def describe_argv(command: tuple[str, ...]) -> str:
    return shlex.join(command)
