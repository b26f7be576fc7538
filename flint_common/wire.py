"""The gateway ↔ controller link protocol: every message, its JSON form and its decoder (pure).

The link is one websocket per gateway worker at `LINK_PATH`; each message is one JSON text
frame, an object whose `type` names it. Both planes import this module (so it lives in neither):
the gateway encodes the up messages and decodes the down one, the controller the other way round.

down (controller → worker):
    `SnapshotMessage`  {"type": "snapshot", "snapshot": <Snapshot>}
        The routing snapshot (`flint_common.snapshot.Snapshot` as orjson serialises the
        dataclasses; `decode_snapshot` reads it back). The worker persists the same object to
        `GatewaySettings.snapshot_path` and loads it at start (with the deltas applied since,
        journalled as their `DeltaMessage` lines: `gateway.snapshot_journal`).
    `DeltaMessage`  {"type": "delta", "format": 1, "base": B, "version": V,
                     "routes": [<RouteEntry>...], "removed_routes": ["<ns>/<name>"...],
                     "revisions": [<RevisionTarget>...], "removed_revisions": ["<ns>/<name>"...],
                     "brokers": [...], "peers": [...]}
        Snapshot V as the changes to snapshot B (`flint_common.delta`; `brokers` and `peers`
        present only when they changed, whole). Sent only to a worker whose Hello said it reads
        this `format` (`Hello.deltas`) and whose link was last sent version B; a worker serving
        another version than B does not apply it and links again (a relink gets a full snapshot).
        Versioning: an old gateway sends no `deltas` and gets only full snapshots; an old
        controller never sends a delta; a later format is a new `format` number, sent only to
        workers announcing it (a decoder refuses a format it does not know).
up (worker → controller):
    `Hello`  {"type": "hello", "worker": "<gateway-id>/<index>", "version": <last applied version>,
              "peer": "<host>:<port>"}
        The first message of a connection. `peer` (optional, absent: none) is where the gateway
        accepts requests other gateways forward (`--peer-listen`): only gateways announcing one
        take part in subsetting (`Snapshot.peers`, `Endpoint.owner`). `deltas` (optional,
        absent: 0) is the highest `DeltaMessage` format the worker reads (0: none).
    `Ack`    {"type": "ack", "version": N, "draining": {"<endpoint id>": <in-flight count>, ...}}
        Sent after applying snapshot N (or a delta to version N: it counts the same), and
        again whenever a draining endpoint's in-flight count changes to zero. `draining` lists
        endpoints no longer in the snapshot that still have requests in flight; an endpoint
        absent from it has none (so does an absent map).
    `Stats`  {"type": "stats", "bucket": <unix second>,
              "revisions": {"<ns>/<name>": {"concurrency": F, "requests": N}, ...}}
        Every second, for the bucket that just ended: per revision the time-weighted average of
        requests queued plus in flight in this worker, and the requests that arrived. Every
        revision the worker saw in the last stable window is reported, with zeros when idle
        (a missing report means unknown, never zero).
    `Poke`   {"type": "poke", "revision": "<ns>/<name>", "waiting": N}
        At once when a request arrives for a revision with no ready replica (one per revision
        until a replica is ready again, not one per request).

Compatibility: a decoder ignores fields it does not know, and `decode_up` / `decode_down`
return None for a message type they do not know, so either side may be newer. Fields added
after the first release have defaults (the snapshot's `cluster_local`, `starting`, `failure`,
`service`, `brokers`, `owner`, `peers`, Hello's `peer`, ...). Anything else that is not of the
documented shape raises `WireError`, whose text names the field
(`snapshot.routes[0].hosts: expected an array, got string`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

import orjson

from flint_common.addresses import format_hostport, parse_listen
from flint_common.delta import Key, SnapshotDelta
from flint_common.snapshot import (
    BrokerEntry,
    Endpoint,
    Peer,
    RevisionTarget,
    RouteEntry,
    Snapshot,
    TagTarget,
    TrafficSplit,
)

T = TypeVar("T")

LINK_PATH = "/internal/gateway/link"
"""Path of the controller's websocket for gateway workers."""
NOT_LEADER = 4001
"""Close code of a link a standby controller will not serve (a private-use code, RFC 6455
§7.4.2): the gateway keeps its snapshot and tries another controller."""
NOT_LEADER_REASON = b"not leader"
DELTA_FORMAT = 1
"""The `DeltaMessage` format this code writes and reads (`Hello.deltas`)."""


class WireError(ValueError):
    """A link message (or persisted snapshot) that is not JSON or not of the documented shape."""


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


class _Message:
    """What every message has: its `type` tag, its JSON object form and its text encoding."""

    __slots__ = ()
    type: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Self:
        """The message from its JSON object (the `type` is not checked); raises `WireError`."""
        raise NotImplementedError

    def encode(self) -> str:
        """The websocket text frame."""
        return orjson.dumps(self.to_wire()).decode()

    @classmethod
    def decode(cls, text: str | bytes) -> Self:
        """This message from a text frame; raises `WireError` (for another type too)."""
        obj = _parse(text)
        kind = _type_of(obj)
        if kind != cls.type:
            raise WireError(f"expected a '{cls.type}' message, got '{kind}'")
        return cls.from_wire(obj)


@dataclass(frozen=True, slots=True)
class Hello(_Message):
    """worker → controller, first on every connection: who it is and what it serves."""

    type: ClassVar[str] = "hello"
    worker: str
    """`<gateway-id>/<worker index>`: a reconnect with the same id replaces the old socket."""
    version: int
    """Version of the snapshot the worker serves (0: none yet)."""
    peer: tuple[str, int] | None = None
    """(host, port) of the gateway's peer listener, or None (it takes no part in subsetting)."""
    owned: tuple[str, ...] = ()
    """The replica ids its snapshot gives it (`Endpoint.owner` is its gateway): what it sends
    requests to now, so that a new leader's publisher never gives them to another gateway before
    this one has let go (`controller.routing_subsets`). Absent from older gateways: ()."""
    deltas: int = 0
    """The highest `DeltaMessage` format it reads; 0 (older gateways): full snapshots only."""

    @property
    def gateway(self) -> str:
        """The gateway id: `worker` up to its last `/`."""
        return self.worker.rpartition("/")[0] or self.worker

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "worker": self.worker, "version": self.version}
        if self.peer is not None:
            out["peer"] = format_hostport(*self.peer)
        if self.owned:
            out["owned"] = list(self.owned)
        if self.deltas:
            out["deltas"] = self.deltas
        return out

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Self:
        return cls(_req(obj, "hello", "worker", _str), _req(obj, "hello", "version", _int),
                   _opt(obj, "hello", "peer", _peer_address, None),
                   _opt(obj, "hello", "owned", _tuple_of(_str), ()),
                   _opt(obj, "hello", "deltas", _int, 0))


@dataclass(frozen=True, slots=True)
class Ack(_Message):
    """worker → controller: snapshot `version` is applied; what still drains."""

    type: ClassVar[str] = "ack"
    version: int
    draining: Mapping[str, int] = field(default_factory=dict)
    """Endpoint id → requests in flight, for endpoints no longer in the snapshot."""

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "version": self.version, "draining": dict(self.draining)}

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Self:
        return cls(
            _req(obj, "ack", "version", _int),
            _opt(obj, "ack", "draining", _map_of(_int), {}),
        )


@dataclass(frozen=True, slots=True)
class BucketLoad:
    """One revision's numbers for one bucket (a second) in one worker."""

    concurrency: float
    """Time-weighted average of requests queued plus in flight."""
    requests: int
    """Requests that arrived."""

    def to_wire(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "requests": self.requests}

    @staticmethod
    def from_wire(value: Any, parent: str, key: str | int) -> BucketLoad:
        at = _join(parent, key)
        obj = _obj(value, parent, key)
        return BucketLoad(_req(obj, at, "concurrency", _float), _req(obj, at, "requests", _int))


@dataclass(frozen=True, slots=True)
class LearnedLimits:
    """One revision's learned per-replica in-flight limits in one worker (`gateway.balancer`)."""

    replicas: Mapping[str, int]
    """Endpoint (replica) id → its learned limit; replicas without one are absent."""
    lowered: int = 0
    """Times a replica's limit was lowered by a hard signal, since the worker started."""
    raised: int = 0
    """Times one grew by a step after successes, since the worker started."""

    def to_wire(self) -> dict[str, Any]:
        return {"replicas": dict(self.replicas), "lowered": self.lowered, "raised": self.raised}

    @staticmethod
    def from_wire(value: Any, parent: str, key: str | int) -> LearnedLimits:
        at = _join(parent, key)
        obj = _obj(value, parent, key)
        return LearnedLimits(
            _req(obj, at, "replicas", _map_of(_int)),
            _opt(obj, at, "lowered", _int, 0),
            _opt(obj, at, "raised", _int, 0),
        )


@dataclass(frozen=True, slots=True)
class Stats(_Message):
    """worker → controller, every second: the load of every revision it saw recently."""

    type: ClassVar[str] = "stats"
    bucket: int
    """The unix second that just ended."""
    revisions: Mapping[str, BucketLoad]
    """Revision key (`namespace/name`) → its load in the bucket."""
    limits: Mapping[str, LearnedLimits] = field(default_factory=dict)
    """Revision key → its replicas' learned limits in this worker (only revisions that have
    one or had one changed; absent from a message: none)."""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "bucket": self.bucket,
            "revisions": {key: load.to_wire() for key, load in self.revisions.items()},
        }
        if self.limits:
            out["limits"] = {key: lim.to_wire() for key, lim in self.limits.items()}
        return out

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Self:
        return cls(
            _req(obj, "stats", "bucket", _int),
            _req(obj, "stats", "revisions", _map_of(BucketLoad.from_wire)),
            _opt(obj, "stats", "limits", _map_of(LearnedLimits.from_wire), {}),
        )


@dataclass(frozen=True, slots=True)
class Poke(_Message):
    """worker → controller, at once: requests wait for a revision with no ready replica."""

    type: ClassVar[str] = "poke"
    revision: str
    """Revision key (`namespace/name`)."""
    waiting: int
    """Requests waiting for it in this worker."""

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "revision": self.revision, "waiting": self.waiting}

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Self:
        return cls(_req(obj, "poke", "revision", _str), _req(obj, "poke", "waiting", _int))


@dataclass(frozen=True, slots=True)
class SnapshotMessage(_Message):
    """controller → worker: the routing snapshot to serve."""

    type: ClassVar[str] = "snapshot"
    snapshot: Snapshot

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "snapshot": self.snapshot}  # orjson serialises the dataclasses

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Self:
        return cls(_req(obj, "", "snapshot", _snapshot))


@dataclass(frozen=True, slots=True)
class DeltaMessage(_Message):
    """controller → worker: the next snapshot as its changes to the one the worker serves."""

    type: ClassVar[str] = "delta"
    delta: SnapshotDelta

    def to_wire(self) -> dict[str, Any]:
        d = self.delta
        out: dict[str, Any] = {
            "type": self.type, "format": DELTA_FORMAT, "base": d.base, "version": d.version,
            "routes": d.routes, "removed_routes": [f"{ns}/{n}" for ns, n in d.removed_routes],
            "revisions": d.revisions,
            "removed_revisions": [f"{ns}/{n}" for ns, n in d.removed_revisions],
        }
        if d.brokers is not None:
            out["brokers"] = d.brokers
        if d.peers is not None:
            out["peers"] = d.peers
        return out

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Self:
        fmt = _req(obj, "delta", "format", _int)
        if fmt != DELTA_FORMAT:
            raise WireError(f"delta.format: {fmt} is not a format this gateway reads "
                            f"(it reads {DELTA_FORMAT})")
        return cls(SnapshotDelta(
            base=_req(obj, "delta", "base", _int),
            version=_req(obj, "delta", "version", _int),
            routes=_req(obj, "delta", "routes", _tuple_of(_route)),
            removed_routes=_req(obj, "delta", "removed_routes", _tuple_of(_key)),
            revisions=_req(obj, "delta", "revisions", _tuple_of(_revision)),
            removed_revisions=_req(obj, "delta", "removed_revisions", _tuple_of(_key)),
            brokers=_opt(obj, "delta", "brokers", _tuple_of(_broker), None),
            peers=_opt(obj, "delta", "peers", _tuple_of(_peer), None),
        ))


def _key(value: Any, parent: str, key: str | int) -> Key:
    text = _str(value, parent, key)
    ns, slash, name = text.partition("/")
    if not slash or not ns or not name or "/" in name:
        raise WireError(f"{_join(parent, key)}: expected '<namespace>/<name>', got {text!r}")
    return ns, name


def _peer_address(value: Any, parent: str, key: str | int) -> tuple[str, int]:
    text = _str(value, parent, key)
    try:
        host, port = parse_listen(text, 0)
    except ValueError as exc:
        raise WireError(f"{_join(parent, key)}: {exc}") from None
    if not port:
        raise WireError(f"{_join(parent, key)}: {text!r} has no port")
    return host, port


UpMessage = Hello | Ack | Stats | Poke
"""A message a gateway worker sends."""

_UP: dict[str, type[UpMessage]] = {m.type: m for m in (Hello, Ack, Stats, Poke)}


def decode_up(text: str | bytes) -> UpMessage | None:
    """A worker → controller frame; None for a type this controller does not know."""
    obj = _parse(text)
    kind = _UP.get(_type_of(obj))
    return kind.from_wire(obj) if kind is not None else None


DownMessage = SnapshotMessage | DeltaMessage
"""A message the controller sends."""

_DOWN: dict[str, type[DownMessage]] = {m.type: m for m in (SnapshotMessage, DeltaMessage)}


def decode_down(text: str | bytes) -> DownMessage | None:
    """A controller → worker frame; None for a type this worker does not know."""
    obj = _parse(text)
    kind = _DOWN.get(_type_of(obj))
    return kind.from_wire(obj) if kind is not None else None


# ---------------------------------------------------------------------------------------------
# The snapshot (the down message's payload and the persisted file)
# ---------------------------------------------------------------------------------------------


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """The snapshot's JSON object as bytes: what the worker persists."""
    return orjson.dumps(snapshot)


def load_snapshot(data: str | bytes) -> Snapshot:
    """A persisted snapshot (`encode_snapshot`'s bytes); raises `WireError`."""
    return decode_snapshot(_parse(data, "snapshot"))


def decode_snapshot(value: Any) -> Snapshot:
    """The snapshot from its JSON object (orjson's serialisation of `Snapshot`)."""
    return _snapshot(value, "", "snapshot")


def _snapshot(value: Any, parent: str, key: str | int) -> Snapshot:
    at = _join(parent, key)
    obj = _obj(value, parent, key)
    return Snapshot(
        version=_req(obj, at, "version", _int),
        routes=_req(obj, at, "routes", _tuple_of(_route)),
        revisions=_req(obj, at, "revisions", _tuple_of(_revision)),
        brokers=_opt(obj, at, "brokers", _tuple_of(_broker), ()),
        peers=_opt(obj, at, "peers", _tuple_of(_peer), ()),
    )


def _peer(value: Any, parent: str, key: str | int) -> Peer:
    at = _join(parent, key)
    obj = _obj(value, parent, key)
    return Peer(_req(obj, at, "gateway", _str), _req(obj, at, "host", _str), _req(obj, at, "port", _int))


def _route(value: Any, parent: str, key: str | int) -> RouteEntry:
    at = _join(parent, key)
    obj = _obj(value, parent, key)
    return RouteEntry(
        namespace=_req(obj, at, "namespace", _str),
        name=_req(obj, at, "name", _str),
        hosts=_req(obj, at, "hosts", _tuple_of(_str)),
        traffic=_req(obj, at, "traffic", _tuple_of(_split)),
        tags=_req(obj, at, "tags", _tuple_of(_tag)),
        cluster_local=_opt(obj, at, "cluster_local", _bool, False),
    )


def _split(value: Any, parent: str, key: str | int) -> TrafficSplit:
    at = _join(parent, key)
    obj = _obj(value, parent, key)
    return TrafficSplit(_req(obj, at, "revision", _str), _req(obj, at, "percent", _int))


def _tag(value: Any, parent: str, key: str | int) -> TagTarget:
    at = _join(parent, key)
    obj = _obj(value, parent, key)
    return TagTarget(
        _req(obj, at, "tag", _str), _req(obj, at, "revision", _str),
        _req(obj, at, "hosts", _tuple_of(_str)),
    )


def _revision(value: Any, parent: str, key: str | int) -> RevisionTarget:
    at = _join(parent, key)
    obj = _obj(value, parent, key)
    return RevisionTarget(
        namespace=_req(obj, at, "namespace", _str),
        name=_req(obj, at, "name", _str),
        service=_opt(obj, at, "service", _str, ""),
        timeout_s=_req(obj, at, "timeout_s", _float),
        response_start_timeout_s=_req(obj, at, "response_start_timeout_s", _float),
        idle_timeout_s=_req(obj, at, "idle_timeout_s", _float),
        container_concurrency=_req(obj, at, "container_concurrency", _int),
        endpoints=_req(obj, at, "endpoints", _tuple_of(_endpoint)),
        failure=_opt(obj, at, "failure", _str, ""),
    )


def _endpoint(value: Any, parent: str, key: str | int) -> Endpoint:
    at = _join(parent, key)
    obj = _obj(value, parent, key)
    return Endpoint(
        _req(obj, at, "id", _str), _req(obj, at, "host", _str), _req(obj, at, "port", _int),
        _opt(obj, at, "starting", _bool, False), _opt(obj, at, "owner", _str, ""),
    )


def _broker(value: Any, parent: str, key: str | int) -> BrokerEntry:
    at = _join(parent, key)
    obj = _obj(value, parent, key)
    return BrokerEntry(
        namespace=_req(obj, at, "namespace", _str),
        name=_req(obj, at, "name", _str),
        uid=_req(obj, at, "uid", _str),
        log=_req(obj, at, "log", _str),
        durable=_opt(obj, at, "durable", _bool, True),
        kind=_opt(obj, at, "kind", _str, "broker"),
        backend=_opt(obj, at, "backend", _str, "sqlite"),
        stream=_opt(obj, at, "stream", _str, ""),
    )


# ---------------------------------------------------------------------------------------------
# Reading JSON values. A reader gets the value and where it is, as its parent's path and its key
# (a field name, an array index or a map key in brackets): the path is joined only for an error
# or to descend, so a large snapshot does not cost a string per field.
# ---------------------------------------------------------------------------------------------

Read = Callable[[Any, str, str | int], T]


def _join(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if not parent or key.startswith("["):
        return parent + key
    return f"{parent}.{key}"


def _parse(text: str | bytes, what: str = "message") -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"invalid JSON: {exc}") from exc
    return _obj(value, "", what)


def _type_of(obj: Mapping[str, Any]) -> str:
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise WireError("message: 'type' is missing or not a string")
    return kind


def _req(obj: Mapping[str, Any], at: str, name: str, read: Read[T]) -> T:
    try:
        value = obj[name]
    except KeyError:
        raise WireError(f"{_join(at, name)}: missing") from None
    return read(value, at, name)


def _opt(obj: Mapping[str, Any], at: str, name: str, read: Read[T], default: T) -> T:
    return read(obj[name], at, name) if name in obj else default


def _kind(value: Any) -> str:
    """The JSON name of a decoded value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _wrong(value: Any, parent: str, key: str | int, expected: str) -> WireError:
    return WireError(f"{_join(parent, key)}: expected {expected}, got {_kind(value)}")


def _obj(value: Any, parent: str, key: str | int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong(value, parent, key, "an object")
    return value


def _str(value: Any, parent: str, key: str | int) -> str:
    if not isinstance(value, str):
        raise _wrong(value, parent, key, "a string")
    return value


def _int(value: Any, parent: str, key: str | int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(value, parent, key, "an integer")
    return value


def _float(value: Any, parent: str, key: str | int) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _wrong(value, parent, key, "a number")
    return float(value)


def _bool(value: Any, parent: str, key: str | int) -> bool:
    if not isinstance(value, bool):
        raise _wrong(value, parent, key, "a boolean")
    return value


def _tuple_of(read: Read[T]) -> Read[tuple[T, ...]]:
    def read_array(value: Any, parent: str, key: str | int) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise _wrong(value, parent, key, "an array")
        at = _join(parent, key)
        return tuple([read(item, at, i) for i, item in enumerate(value)])

    return read_array


def _map_of(read: Read[T]) -> Read[dict[str, T]]:
    def read_object(value: Any, parent: str, key: str | int) -> dict[str, T]:
        at = _join(parent, key)
        return {k: read(item, at, f"[{k!r}]") for k, item in _obj(value, parent, key).items()}

    return read_object
