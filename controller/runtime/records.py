"""On-disk replica records: how a restarted local runtime finds and re-adopts its replicas.

A record is written *before* its process is spawned (state `spawning`, no pid) and updated
with the pid, process group and start time right after. So a record without a pid does not
prove that no process runs: the runtime may have died between the spawn and the update. Such
a process is found by its environment: every replica runs with `FLINT_REPLICA_ID=<record id>`
(see `process.find_by_replica_id`). Anything that cleans up after a dead runtime (like
`flint up`'s exit) must kill the process group `pgid` (or `pid`) of a record that has one,
and look the replica up by FLINT_REPLICA_ID when it has none."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from controller.runtime.base import Probe, ReplicaSpec

log = logging.getLogger(__name__)

VERSION = 1

RecordState = Literal["spawning", "running", "down"]
"""spawning: written just before a spawn, no pid yet (look the process up by FLINT_REPLICA_ID);
running: pid, pgid and start_time name the process; down: no process (crash backoff, failed)."""


@dataclass(slots=True)
class ReplicaRecord:
    """Everything needed to recognise a replica's process and to restart it."""

    id: str
    spec: ReplicaSpec
    host: str
    port: int
    log_path: Path
    cwd: Path
    """The resolved working directory."""
    pid: int | None = None
    """None while no process runs (crash backoff), or not known yet (state `spawning`)."""
    pgid: int | None = None
    start_time: int | None = None
    """/proc/<pid>/stat field 22 (clock ticks after boot): a pid is ours only if this matches."""
    restarts: int = 0
    started_at: float = 0.0
    """Wall-clock start of the current process."""
    state: RecordState = "down"


def _probe_to_dict(p: Probe) -> dict[str, Any]:
    return {
        "kind": p.kind,
        "path": p.path,
        "port": p.port,
        "period_s": p.period_s,
        "timeout_s": p.timeout_s,
        "failure_threshold": p.failure_threshold,
        "initial_delay_s": p.initial_delay_s,
    }


def _probe_from_dict(d: dict[str, Any]) -> Probe:
    return Probe(
        kind=d["kind"],
        path=d["path"],
        port=d["port"],
        period_s=d["period_s"],
        timeout_s=d["timeout_s"],
        failure_threshold=d["failure_threshold"],
        initial_delay_s=d["initial_delay_s"],
    )


def spec_to_dict(s: ReplicaSpec) -> dict[str, Any]:
    return {
        "namespace": s.namespace,
        "revision": s.revision,
        "service": s.service,
        "configuration": s.configuration,
        "image_dir": str(s.image_dir),
        "command": list(s.command),
        "env": dict(s.env),
        "working_dir": s.working_dir,
        "readiness": _probe_to_dict(s.readiness),
        "liveness": None if s.liveness is None else _probe_to_dict(s.liveness),
        "memory_limit_bytes": s.memory_limit_bytes,
    }


def spec_from_dict(d: dict[str, Any]) -> ReplicaSpec:
    return ReplicaSpec(
        namespace=d["namespace"],
        revision=d["revision"],
        service=d["service"],
        configuration=d["configuration"],
        image_dir=Path(d["image_dir"]),
        command=tuple(d["command"]),
        env=dict(d["env"]),
        working_dir=d["working_dir"],
        readiness=_probe_from_dict(d["readiness"]),
        liveness=None if d["liveness"] is None else _probe_from_dict(d["liveness"]),
        memory_limit_bytes=d["memory_limit_bytes"],
    )


def to_json(r: ReplicaRecord) -> bytes:
    doc = {
        "version": VERSION,
        "id": r.id,
        "state": r.state,
        "pid": r.pid,
        "pgid": r.pgid,
        "start_time": r.start_time,
        "host": r.host,
        "port": r.port,
        "revision_key": r.spec.revision_key,
        "restarts": r.restarts,
        "started_at": r.started_at,
        "log_path": str(r.log_path),
        "cwd": str(r.cwd),
        "spec": spec_to_dict(r.spec),
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def from_json(data: bytes) -> ReplicaRecord:
    d = json.loads(data)
    if d.get("version") != VERSION:
        raise ValueError(f"unsupported record version {d.get('version')!r}")
    state = d.get("state")  # absent in records of older runtimes
    if state not in get_args(RecordState):
        state = "running" if d["pid"] is not None else "down"
    return ReplicaRecord(
        id=d["id"],
        state=state,
        spec=spec_from_dict(d["spec"]),
        host=d["host"],
        port=d["port"],
        log_path=Path(d["log_path"]),
        cwd=Path(d["cwd"]),
        pid=d["pid"],
        pgid=d["pgid"],
        start_time=d["start_time"],
        restarts=d["restarts"],
        started_at=d["started_at"],
    )


def write(directory: Path, r: ReplicaRecord) -> None:
    """Atomically write `directory/<id>.json` (blocking)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{r.id}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(to_json(r))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / f"{r.id}.json")


def remove(directory: Path, replica_id: str) -> None:
    """Delete a replica's record (blocking)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / f"{replica_id}.json")


def read_all(directory: Path) -> list[ReplicaRecord]:
    """Every readable record (blocking); unreadable ones are logged and skipped."""
    if not directory.is_dir():
        return []
    out = []
    for p in sorted(directory.glob("*.json")):
        try:
            out.append(from_json(p.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("ignoring unreadable replica record %s: %s", p, e)
    for p in directory.glob(".*.tmp"):  # interrupted writes
        p.unlink(missing_ok=True)
    return out
