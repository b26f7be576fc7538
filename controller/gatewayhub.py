"""The controller's end of the gateway link: publishes versioned snapshots, tracks every worker's acks.

Each publish goes to a worker as a delta (`flint_common.delta`, `wire.DeltaMessage`) when its
Hello said it reads them and its link was last sent the version just before (messages on one
link arrive in order, so it serves that version by then, or links again on a gap), unless the
delta is not much smaller than the snapshot; otherwise, and on every (re)link, as the whole
snapshot. An ack counts the same either way: the worker serves that version."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from aiohttp import WSMsgType, web

from flint_common.delta import SnapshotDelta, diff, worth_sending
from flint_common.snapshot import Snapshot
from flint_common.wire import (
    DELTA_FORMAT,
    NOT_LEADER,
    NOT_LEADER_REASON,
    Ack,
    DeltaMessage,
    Hello,
    Poke,
    SnapshotMessage,
    Stats,
    WireError,
    decode_up,
)

log = logging.getLogger("flint.gatewayhub")


@dataclass
class WorkerState:
    id: str
    version: int = 0
    """Last snapshot version the worker acked."""
    draining: dict[str, int] = field(default_factory=dict)
    """Endpoint id → requests still in flight on endpoints no longer in its snapshot."""
    gateway: str = ""
    """Its gateway's id (`Hello.gateway`)."""
    peer: tuple[str, int] | None = None
    """Its gateway's peer listener (`Hello.peer`), or None."""
    owned: frozenset[str] = frozenset()
    """The replicas its snapshot gave it when it linked (`Hello.owned`), until it acks a
    snapshot of ours (which then says what it owns)."""
    hello_version: int = 0
    deltas: int = 0
    """The delta format it reads (`Hello.deltas`; 0: full snapshots only)."""
    sent: int = 0
    """Version of the last snapshot (or delta) sent on its link (0: none yet)."""


REFUSE_TIMEOUT_S = 1.0
"""How long a standby waits for one gateway's close handshake before it lets the link go."""


class GatewayHub:
    """Pushes the newest snapshot to every connected gateway worker and records their acks."""

    def __init__(
        self,
        on_progress: Callable[[], None] | None = None,
        on_report: Callable[[str, Stats | Poke], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        accepting: Callable[[], bool] = lambda: True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = Snapshot.empty()
        self._delta: SnapshotDelta | None = None
        """The current snapshot as the changes to the one published before it (None: the first)."""
        self._monotonic = monotonic
        self._accepting = accepting
        """Whether this controller serves links (it leads): else each is closed at once with
        `NOT_LEADER`, and the gateway tries another controller."""
        self._workers: dict[str, WorkerState] = {}
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._on_progress = on_progress
        self._on_report = on_report
        """Called with (worker id, message) for `stats` and `poke` messages (the autoscaler)."""
        self._on_disconnect = on_disconnect
        """Called with the worker id when a worker's link goes away (not when the same worker
        id reconnects over a new link, which replaces the old one)."""
        self._sends: set[asyncio.Task[None]] = set()
        self._floor = 0
        """Highest version any worker reported serving: every version we send is above it."""
        self._rejoin_until = 0.0
        """Until then (monotonic), no version counts as acked by all (`rejoin`)."""
        self._on_peers: list[Callable[[], None]] = []

    @property
    def version(self) -> int:
        return self._snapshot.version

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def workers(self) -> list[WorkerState]:
        return list(self._workers.values())

    def peers(self) -> dict[str, tuple[str, int]]:
        """Gateway id → peer listener, of the gateways with a connected worker that announced one
        (subsetting: `controller.routing_subsets`)."""
        return {w.gateway: w.peer for w in self._workers.values() if w.peer is not None}

    def reported(self) -> dict[str, frozenset[str]]:
        """Gateway id → the replicas its workers said they own when they linked and still own
        as far as we know (they have not acked a snapshot of ours since): `Hello.owned`."""
        out: dict[str, frozenset[str]] = {}
        for w in self._workers.values():
            if w.owned:
                out[w.gateway] = out.get(w.gateway, frozenset()) | w.owned
        return out

    def rejoining(self) -> bool:
        """Within a new term's rejoin window (`rejoin`): gateways may still be on their way."""
        return bool(self._rejoin_until) and self._monotonic() < self._rejoin_until

    def on_peers_changed(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever `peers()` changes (a gateway joining or leaving)."""
        self._on_peers.append(callback)

    def _peers_changed(self, before: dict[str, tuple[str, int]]) -> None:
        if self.peers() != before:
            for callback in self._on_peers:
                try:
                    callback()
                except Exception:
                    log.exception("handling a change of the gateway peers failed")

    def _next_version(self, floor: int = 0) -> int:
        # Versions are wall-clock milliseconds or more: a restarted controller never sends a
        # version a gateway has already seen (gateways ignore versions ≤ their current one).
        return max(
            self._snapshot.version + 1, self._floor + 1, floor + 1, int(time.time() * 1000)
        )

    def publish(self, snapshot: Snapshot) -> int:
        """Send `snapshot` (its version is assigned here) if its content changed; returns the
        version that carries this content."""
        if (
            self._snapshot.version
            and snapshot.routes == self._snapshot.routes
            and snapshot.revisions == self._snapshot.revisions
            and snapshot.brokers == self._snapshot.brokers
            and snapshot.peers == self._snapshot.peers
        ):
            return self._snapshot.version
        self._advance(replace(snapshot, version=self._next_version()))
        return self._snapshot.version

    def _advance(self, snapshot: Snapshot) -> None:
        """Make `snapshot` (versioned) the current one and send it to every linked worker."""
        self._delta = diff(self._snapshot, snapshot) if self._snapshot.version else None
        self._snapshot = snapshot
        self._broadcast()

    def acked_by_all(self, version: int) -> bool:
        """Every connected worker serves `version` or newer (vacuously true with none); never
        while the gateways rejoin (`rejoin`)."""
        if self._rejoin_until and self._monotonic() < self._rejoin_until:
            return False
        return all(w.version >= version for w in self._workers.values())

    def rejoin(self, window_s: float) -> None:
        """A new leader's term: for `window_s`, the gateways that linked to the last leader are
        still finding this one, and until they are back the connected ones are not all of them
        (a gateway away serves its last snapshot: its routes must not be taken from under it).
        No version counts as acked by all until the window ends, then progress is reported."""
        self._rejoin_until = self._monotonic() + window_s
        asyncio.get_running_loop().call_later(window_s, self._rejoined)

    def _rejoined(self) -> None:
        """The rejoin window ended: what waited on it may go on (acks, owners held for it)."""
        self._progress()
        for callback in self._on_peers:
            try:
                callback()
            except Exception:
                log.exception("handling the end of the rejoin window failed")

    def connected(self) -> int:
        return len(self._workers)

    def draining(self, endpoint_id: str) -> bool:
        return any(endpoint_id in w.draining for w in self._workers.values())

    def _broadcast(self) -> None:
        full: str | None = None
        delta: str | None = None
        d = self._delta
        small = d is not None and worth_sending(d, self._snapshot)
        for worker_id, ws in list(self._sockets.items()):
            if ws.closed:
                continue
            state = self._workers.get(worker_id)
            if small and d is not None and state is not None and (
                    state.deltas >= DELTA_FORMAT and state.sent == d.base):
                data = delta = delta or DeltaMessage(d).encode()
            else:
                data = full = full or self._encode()
            if state is not None:
                state.sent = self._snapshot.version
            task = asyncio.get_running_loop().create_task(self._send(ws, data))
            self._sends.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._sends.discard)

    def _encode(self) -> str:
        return SnapshotMessage(self._snapshot).encode()

    async def _send(self, ws: web.WebSocketResponse, data: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(data)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """aiohttp handler for the link websocket (`flint_common.wire.LINK_PATH`)."""
        ws = web.WebSocketResponse(heartbeat=5.0, max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        if not self._accepting():
            await ws.close(code=NOT_LEADER, message=NOT_LEADER_REASON)
            return ws
        worker_id: str | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    message = decode_up(msg.data)
                except WireError as exc:
                    log.warning("refused a link message from worker=%s: %s", worker_id, exc)
                    continue
                if isinstance(message, Hello):
                    if not self._accepting():  # the term ended since this link was accepted
                        await ws.close(code=NOT_LEADER, message=NOT_LEADER_REASON)
                        break
                    worker_id = message.worker
                    await self._hello(ws, message)
                elif isinstance(message, Stats | Poke) and worker_id is not None:
                    if self._on_report is not None:
                        try:
                            self._on_report(worker_id, message)
                        except Exception:
                            log.exception("handling a %s message failed worker=%s",
                                          message.type, worker_id)
                elif isinstance(message, Ack) and worker_id is not None:
                    state = self._workers.get(worker_id)
                    if state is not None:
                        state.version = max(state.version, message.version)
                        if message.version > state.hello_version:
                            state.owned = frozenset()  # it serves a snapshot of ours now
                        state.draining = dict(message.draining)
                    self._progress()
        finally:
            if worker_id is not None and self._sockets.get(worker_id) is ws:
                peers = self.peers()
                self._sockets.pop(worker_id, None)
                self._workers.pop(worker_id, None)
                log.info("gateway worker disconnected worker=%s", worker_id)
                if self._on_disconnect is not None:
                    try:
                        self._on_disconnect(worker_id)
                    except Exception:
                        log.exception("handling the disconnect failed worker=%s", worker_id)
                self._peers_changed(peers)
                self._progress()
        return ws

    async def _hello(self, ws: web.WebSocketResponse, hello: Hello) -> None:
        old = self._sockets.pop(hello.worker, None)
        if old is not None:
            await old.close()
        self._sockets[hello.worker] = ws
        self._floor = max(self._floor, hello.version)
        peers = self.peers()
        state = WorkerState(hello.worker, version=0, gateway=hello.gateway, peer=hello.peer,
                            owned=frozenset(hello.owned), hello_version=hello.version,
                            deltas=hello.deltas)
        self._workers[hello.worker] = state
        if hello.version >= self._snapshot.version and self._snapshot.version:
            # (this worker was sent nothing on this link yet: it gets the whole snapshot)
            self._advance(replace(self._snapshot, version=self._next_version(hello.version)))
        elif self._snapshot.version:
            state.sent = self._snapshot.version
            await ws.send_str(self._encode())
        log.info("gateway worker connected worker=%s version=%d", hello.worker, hello.version)
        self._peers_changed(peers)

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress()

    async def refuse_all(self) -> None:
        """Close every link with `NOT_LEADER` (this controller stopped leading), all at once and
        each within `REFUSE_TIMEOUT_S` (a partitioned gateway would hold its close handshake for
        the websocket's 10 s), and forget them: the gateways keep serving their snapshot and look
        for the leader, and nothing of this term is sent to them any more."""
        sockets = list(self._sockets.values())
        self._sockets.clear()
        self._workers.clear()

        async def refuse(ws: web.WebSocketResponse) -> None:
            with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
                async with asyncio.timeout(REFUSE_TIMEOUT_S):
                    await ws.close(code=NOT_LEADER, message=NOT_LEADER_REASON)

        await asyncio.gather(*(refuse(ws) for ws in sockets))

    async def close(self) -> None:
        for ws in list(self._sockets.values()):
            await ws.close()
        self._sockets.clear()
        self._workers.clear()
