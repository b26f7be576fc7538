"""A worker's websocket link to the controller: routing snapshots in, acks (and draining) out."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp

from flint_common import heap
from flint_common.delta import SnapshotDelta
from flint_common.httpauth import describe_error
from flint_common.link_tls import ControllerCAUnusable, LinkTLS, refusal
from flint_common.secret import Secret, read_token
from flint_common.snapshot import Snapshot
from flint_common.wire import (
    DELTA_FORMAT,
    NOT_LEADER,
    Ack,
    DeltaMessage,
    Hello,
    UpMessage,
    WireError,
    decode_down,
)
from gateway.config import GatewaySettings
from gateway.failover import Failover
from gateway.snapshot_journal import SnapshotJournal

if TYPE_CHECKING:
    from gateway.router import Router

log = logging.getLogger("flint.gateway.link")

HEARTBEAT_S = 10.0
"""Websocket ping interval (seconds); a controller silent for 2 intervals is considered gone."""
CONNECT_TIMEOUT_S = 5.0
"""Seconds to establish the TCP connection and the websocket handshake."""
DRAIN_ACK_COALESCE_S = 0.02
"""Drained-endpoint notifications within this window (seconds) are sent as one ack."""
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""Largest down message accepted (a snapshot of a very large installation)."""


class LinkTokenUnreadable(Exception):
    """The link token file could not be read (its path and the error's type; never its content)."""


class ControllerLink:
    """Keeps one worker's router fed with the controller's snapshots, reconnecting forever.

    The data plane never waits for it: while disconnected the router keeps its last snapshot.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        router: Router,
        worker_id: str,
        *,
        persist: bool = True,
        rnd: Callable[[], float] = random.random,
        token: Secret | None = None,
        settle_heap: bool = False,
    ) -> None:
        self._settings = settings
        self._settle_heap = settle_heap
        """`heap.settle` after the first whole snapshot (a worker process's own link: it freezes
        the whole process's heap)."""
        self._token = token
        self._router = router
        self.worker_id = worker_id
        self._persist = persist
        self._rnd = rnd
        self.connected = False
        """Whether the websocket to the controller is open."""
        self.last_version = router.version
        """Version of the snapshot the router serves (from the controller or the persisted file)."""
        self.connects = 0
        """Successful connections so far (a reconnect counts again)."""
        self._settled = False
        """`heap.settle` ran (once per worker: after the first whole snapshot it applied)."""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tls = LinkTLS(settings.controller_ca)
        self._send_lock = asyncio.Lock()
        self._drained = asyncio.Event()
        self._journal = SnapshotJournal(settings.snapshot_path)
        """The persisted snapshot and its delta journal (`gateway.snapshot_journal`)."""

    def endpoint_drained(self) -> None:
        """The last request of a draining endpoint ended (the router's `on_drained`): re-ack."""
        self._drained.set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, load_persisted: bool = True) -> None:
        """Load the persisted snapshot, then connect, serve and reconnect until cancelled."""
        if load_persisted:
            await self.load_persisted()
        timeout = aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S
        )
        await self._run(client_timeout=timeout)

    async def _run(self, *, client_timeout: aiohttp.ClientTimeout) -> None:
        urls = self._settings.link_urls
        failover = Failover(len(urls))
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while True:
                url = urls[failover.index]
                try:
                    served = await self._connection(session, url)
                except aiohttp.WSServerHandshakeError as exc:
                    delay = failover.failed()
                    level = logging.ERROR if exc.status in (401, 403) else logging.WARNING
                    log.log(level, "event=link_refused worker=%s url=%s status=%d retry_s=%.2f%s",
                            self.worker_id, url, exc.status, delay,
                            self._refusal_hint() if exc.status == 401 else "")
                except LinkTokenUnreadable as exc:
                    delay = failover.failed()
                    log.error("event=link_token_unreadable worker=%s %s retry_s=%.2f",
                              self.worker_id, exc, delay)
                except ControllerCAUnusable as exc:
                    delay = failover.failed()
                    log.error("event=link_ca_unusable worker=%s error=%s retry_s=%.2f",
                              self.worker_id, exc, delay)
                except aiohttp.ClientConnectorCertificateError as exc:
                    delay = failover.failed()
                    log.error("event=link_tls_refused worker=%s url=%s reason=%r retry_s=%.2f",
                              self.worker_id, url, refusal(exc, self._settings.controller_ca), delay)
                except (aiohttp.ClientError, OSError, TimeoutError, WireError) as exc:
                    delay = failover.failed()
                    # never %r of an aiohttp response error: it carries the request's headers
                    error = exc if isinstance(exc, OSError | WireError) else (
                        describe_error(exc))
                    log.log(
                        logging.INFO if self.connects == 0 else logging.WARNING,
                        "event=link_down worker=%s url=%s error=%r retry_s=%.2f",
                        self.worker_id, url, error, delay,
                    )
                else:
                    if served:
                        delay = failover.served()
                        log.warning("event=link_closed worker=%s url=%s", self.worker_id, url)
                    else:  # a standby: the leader is another one (or none yet)
                        delay = failover.failed(standby=True)
                        log.info("event=link_not_leader worker=%s url=%s retry_s=%.2f",
                                 self.worker_id, url, delay)
                # equal jitter: uniform in [delay/2, delay]
                await asyncio.sleep(delay * (0.5 + 0.5 * self._rnd()))

    async def load_persisted(self) -> bool:
        """Apply the snapshot persisted by an earlier run, if any; returns whether it did."""
        path = self._settings.snapshot_path
        try:
            snapshot = await asyncio.to_thread(self._journal.load)
        except (OSError, ValueError) as exc:  # a WireError is a ValueError
            log.warning("event=persisted_snapshot_unreadable path=%s error=%r", path, exc)
            return False
        if snapshot is None:
            return False
        self._router.apply(snapshot)
        self.last_version = self._router.version
        log.info("event=persisted_snapshot_loaded worker=%s version=%d",
                 self.worker_id, snapshot.version)
        return True

    # -- one connection -----------------------------------------------------------------------

    def _refusal_hint(self) -> str:
        if self._settings.link_token_file is not None:
            return (" (the controller refused the token of --link-token-file: it must be a "
                    "service-account token of an accepted account, audience flint-controller)")
        return " (the controller wants the owner's token: see --token-file)"

    async def _credential(self) -> Secret | None:
        """The bearer of this connection: the link token file's content, read now (the kubelet
        rotates a projected token), else the owner's token."""
        path = self._settings.link_token_file
        if path is None:
            return self._token
        try:
            return await asyncio.to_thread(read_token, path)
        except (OSError, ValueError) as exc:  # neither names the content of the file
            raise LinkTokenUnreadable(f"path={path} error={type(exc).__name__}") from None

    async def _connection(self, session: aiohttp.ClientSession, url: str) -> bool:
        """One link until it ends; False when the controller closed it as a standby
        (`NOT_LEADER`: at once, or when it stopped leading)."""
        token = await self._credential()
        headers = {"Authorization": f"Bearer {token.reveal()}"} if token else None
        tls = await self._tls.for_url(url)  # the CA file read now: a rotated bundle is picked up
        async with session.ws_connect(
            url, heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES, headers=headers, ssl=tls
        ) as ws:
            self._ws = ws
            self.connected = True
            self.connects += 1
            log.info("event=link_up worker=%s url=%s version=%d",
                     self.worker_id, url, self._router.version)
            drain_acks = asyncio.create_task(self._drain_acks(), name="link-drain-acks")
            try:
                await self._send(Hello(self.worker_id, self._router.version,
                                       self._settings.peer_address, self._router.owned(),
                                       deltas=DELTA_FORMAT).encode())
                if self._router.version > 0:
                    # tell a (re)started controller what we serve and what still drains
                    await self._send_ack()
                async for msg in ws:
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        if not await self._on_message(msg.data):
                            await ws.close()  # a version gap: a new link brings a full snapshot
                            return True
                    elif msg.type == aiohttp.WSMsgType.ERROR:
                        raise aiohttp.ClientError(f"websocket error: {ws.exception()!r}")
                    else:
                        break
                return ws.close_code != NOT_LEADER
            finally:
                self.connected = False
                self._ws = None
                drain_acks.cancel()
                await asyncio.wait([drain_acks])  # (our own cancellation still propagates)

    async def _on_message(self, data: str | bytes) -> bool:
        """Apply one down message and ack it; False on a delta this worker cannot apply."""
        message = decode_down(data)
        if message is None:
            log.debug("event=link_message_ignored worker=%s", self.worker_id)
            return True
        if isinstance(message, DeltaMessage):
            return await self._on_delta(message)
        snapshot = message.snapshot
        before = self._router.version
        self._router.apply(snapshot)
        self.last_version = self._router.version
        if self._router.version != before:
            log.info("event=snapshot_applied worker=%s version=%d routes=%d revisions=%d",
                     self.worker_id, snapshot.version, len(snapshot.routes),
                     len(snapshot.revisions))
            if self._settle_heap and not self._settled:  # the routing structures live on
                heap.settle()
                self._settled = True
            if self._persist:
                await self._persist_snapshot(snapshot)
        await self._send_ack()
        return True

    async def _on_delta(self, message: DeltaMessage) -> bool:
        delta = message.delta
        before = self._router.version
        if not self._router.apply_delta(delta):
            log.warning("event=delta_gap worker=%s version=%d base=%d: linking again",
                        self.worker_id, before, delta.base)
            return False
        self.last_version = self._router.version
        if self._router.version != before:
            log.debug("event=delta_applied worker=%s version=%d routes=%d revisions=%d",
                      self.worker_id, delta.version, len(delta.routes) + len(delta.removed_routes),
                      len(delta.revisions) + len(delta.removed_revisions))
            if self._persist:  # appended before the ack: a restart loses nothing acked
                await self._persist_delta(delta, self._router.received)
        await self._send_ack()
        return True

    async def _persist_snapshot(self, snapshot: Snapshot) -> None:
        try:
            await asyncio.to_thread(self._journal.persist_snapshot, snapshot)
        except OSError as exc:  # serve it anyway; the file only matters after a restart
            log.warning("event=snapshot_persist_failed path=%s version=%d error=%r",
                        self._journal.path, snapshot.version, exc)

    async def _persist_delta(self, delta: SnapshotDelta, snapshot: Snapshot) -> None:
        try:
            await asyncio.to_thread(self._journal.persist_delta, delta, snapshot)
        except OSError as exc:  # as above
            log.warning("event=snapshot_persist_failed path=%s version=%d error=%r",
                        self._journal.path, delta.version, exc)

    # -- acks ---------------------------------------------------------------------------------

    async def _drain_acks(self) -> None:
        while True:
            await self._drained.wait()
            await asyncio.sleep(DRAIN_ACK_COALESCE_S)
            self._drained.clear()
            await self._send_ack()

    async def _send_ack(self) -> None:
        await self._send(Ack(self._router.version, self._router.draining()).encode())

    async def _send(self, text: str) -> bool:
        """Send one up message; False (dropped) when not connected."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        async with self._send_lock:
            try:
                await ws.send_str(text)
            except (aiohttp.ClientError, ConnectionError) as exc:
                log.debug("event=link_send_failed worker=%s error=%r", self.worker_id, exc)
                return False
        return True

    async def send_up(self, message: UpMessage) -> bool:
        """Send another up message (stats, a poke) when connected; returns False when dropped."""
        return await self._send(message.encode())
