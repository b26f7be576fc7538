"""The connection side of an exchange with a replica (or with another worker): send the request.

`ReplicaUpstream` takes a request the exchange has routed to an endpoint, with a slot reserved
on it. It takes a pooled keep-alive connection or opens one (failing over once to another
replica of the revision when the connect fails), writes the head and the body buffered so far,
then streams the rest of the body as the client sends it (it is the client's `UpstreamPort`).
When a reused connection is closed before it answers, it sends the request again over a fresh
one, once, if the body could be kept for that (`replay_buffer_bytes`) — toward a home worker or
a peer gateway only an idempotent request, since that hop may have passed it on already. A *fresh* connection
that fails before any response byte (refused, reset, timed out, stalled past
`TCP_USER_TIMEOUT`, closed) is a hard overload signal: the replica's learned in-flight limit
drops to what it was serving (`gateway.balancer`), and a request that can be replayed goes back
to the front of its revision's queue (`on_requeue`), to be sent again on a replica with room,
within its deadline. At the end it pools the connection (or closes it) and releases the slot.
The response is its `Relay`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from flint_common.snapshot import Endpoint, RevisionTarget
from gateway.headers import CRLF, H_PEER_REFUSED
from gateway.ports import P_PENDING, P_UPWRITE, ClientSink
from gateway.proxy_metrics import ProxyMetrics
from gateway.request import ClientRequest
from gateway.router import Router
from gateway.subsets import PEER_ENDPOINT_PREFIX
from gateway.upstream import OverLimit, UpstreamConn, UpstreamOwner, UpstreamPool

__all__ = ["LAST_CHUNK", "Failed", "ReplicaUpstream"]

LAST_CHUNK = b"0\r\n\r\n"

IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
"""RFC 9110 §9.2.2: the methods a request of which may be sent twice with the effect of once."""

Failed = Callable[[int, str, bool], None]
"""Told that the exchange failed before a response: (status, message, retry_after)."""
Requeue = Callable[[bytes, bool, bool], bool]
"""Told to put the active request (with its head) back at the front of its revision's queue:
(head, `alone`: nothing else was in flight on the replica, so no release will make room and the
queue must be dispatched again after a backoff, `refused`: the connect was refused, which with
nothing in flight means a dead replica more likely than a busy one); False when it could not
be queued."""


class ReplicaUpstream:
    """One client connection's upstream port toward replicas and home workers."""

    needs_end = False  # only a chunked body needs its last chunk written

    __slots__ = (
        "_client",
        "_connect_task",
        "_ep",
        "_exempt",
        "_failed_over",
        "_head",
        "_learned",
        "_loop",
        "_metrics",
        "_on_failed",
        "_on_requeue",
        "_owner",
        "_pool",
        "_replay",
        "_requeued",
        "_retried",
        "_reused",
        "_rev",
        "_router",
        "_via_home",
        "up",
    )

    def __init__(
        self,
        client: ClientSink,
        router: Router,
        pool: UpstreamPool,
        loop: asyncio.AbstractEventLoop,
        metrics: ProxyMetrics,
        *,
        owner: UpstreamOwner,
        on_failed: Failed,
        on_requeue: Requeue | None = None,
    ) -> None:
        """`owner` gets the responses of the connections used (the relay); `on_failed` is told
        when no connection could be had (or used); `on_requeue` when the request goes back to
        its revision's queue (an overloaded replica; without it such a request fails)."""
        self._client = client
        self._router = router
        self._pool = pool
        self._loop = loop
        self._metrics = metrics
        self._owner = owner
        self._on_failed = on_failed
        self._on_requeue = on_requeue
        self._learned = router.learned
        self._rev: RevisionTarget | None = None
        self._ep: Endpoint | None = None
        self._via_home = False
        self._head = b""
        self.up: UpstreamConn | None = None
        """The connection the active request is (being) sent on."""
        self._reused = False
        self._retried = False
        self._replay = False
        """Send the body from `req.replay` (it went out once already)."""
        self._requeued = False
        """The request was put back in the queue: its next `begin` resends the body."""
        self._exempt = False
        """The slot was marked exempt from the learned limit (`streaming`)."""
        self._failed_over = False
        self._connect_task: asyncio.Task[None] | None = None

    def begin(self, rev: RevisionTarget, ep: Endpoint, head: bytes, via_home: bool) -> None:
        """Send the active request (`head`, then its body) to `ep`: a slot reserved on a
        replica of `rev`, or a home worker (`via_home`)."""
        self._rev = rev
        self._ep = ep
        self._head = head
        self._via_home = via_home
        if self._requeued:  # sent again after waiting: the same request, the same retries
            self._requeued = False
            self._replay = True
        else:
            self._failed_over = self._retried = self._replay = False
        self._dispatch(ep, fresh=False)

    def _dispatch(self, ep: Endpoint, fresh: bool) -> None:
        """Attach a pooled connection to `ep` (unless `fresh`), or connect a new one."""
        if not fresh:
            up = self._pool.get(ep.id)
            if up is not None:
                self._attach(up, reused=True)
                return
        self._connect_task = self._loop.create_task(self._connect(ep, fresh))

    async def _connect(self, ep: Endpoint, fresh: bool) -> None:
        pool = self._pool
        try:
            try:
                up = await pool.connect(ep, self._admit, pooled=not fresh)
            except OverLimit:
                # Reserved before the replica's learned limit was lowered: wait for room again.
                self._connect_task = None  # before: the requeue may dispatch this exchange anew
                req = self._client.cur
                if self._ep is not ep or req is None or self._requeue(req):
                    return
                up = await pool.connect(ep, pooled=not fresh)  # cannot wait again: send it
        except (OSError, TimeoutError) as exc:
            self._connect_task = None
            self._connect_failed(ep, exc)
            return
        self._connect_task = None
        if self._ep is not ep or self._client.cur is None or self._client.closing:
            self._pool.put(up)
            return
        self._attach(up, reused=not up.fresh)  # a pooled one if it waited for a connect slot

    def _admit(self) -> bool:
        """Asked once a connect slot is had: still within the replica's learned limit?"""
        if not self._learned:
            return True
        ep = self._ep
        return ep is None or self._via_home or self._router.within_learned(ep.id)

    def _connect_failed(self, ep: Endpoint, exc: BaseException) -> None:
        metrics = self._metrics
        metrics.upstream_errors += 1
        metrics.upstream_connect_errors += 1
        if self._ep is not ep:
            return
        req = self._client.cur
        refused = isinstance(exc, ConnectionRefusedError)
        if req is not None and not self._via_home and self._not_taken(ep, req, refused):
            return
        self.release()
        rev = self._rev
        if rev is None or self._client.cur is None:
            return
        if self._via_home:
            self._on_failed(
                503,
                f"the gateway worker that owns revision {rev.key} is not reachable: "
                f"{str(exc) or type(exc).__name__}",
                True,
            )
            return
        if self._fail_over(rev, ep):
            return
        reason = str(exc) or type(exc).__name__
        self._on_failed(502, f"could not connect to a replica of revision {rev.key}: {reason}", False)

    def _fail_over(self, rev: RevisionTarget, failed: Endpoint) -> bool:
        """Once per request: send it to another replica of `rev` with room (the slot on
        `failed` is released already); False when there is none."""
        if self._failed_over:
            return False
        self._failed_over = True
        current = self._router.current(rev.key)  # never a stale (maybe removed) endpoint
        other = None if current is None else self._router.acquire(current, exclude=(failed.id,))
        if other is None:
            return False
        self._ep = other
        self._dispatch(other, fresh=False)
        return True

    def _attach(self, up: UpstreamConn, reused: bool) -> None:
        client = self._client
        req = client.cur
        assert req is not None and up.transport is not None
        if self._replay and req.replay is None:
            # The body outgrew the replay buffer while waiting to be resent: cannot resend.
            self._pool.put(up)
            rev = self._rev
            key = rev.key if rev is not None else "?"
            self._on_failed(502, f"a replica of revision {key} dropped the connection", False)
            return
        self.up = up
        self._reused = reused
        if up.fresh and req.body_expected and (
            req.chunked or (req.content_length or 0) > self._pool.replay_limit
        ):
            # Not replayable if the replica stalls: the accept-stall timeout would only cut a
            # slow upload (TCP_USER_TIMEOUT also fires on a zero receive window).
            up.clear_user_timeout()
        up.begin(self._owner, req.method == b"HEAD")
        if client.write_paused:
            up.transport.pause_reading()
        if up.write_paused:
            client.pause(P_UPWRITE)
        chunks = req.replay if self._replay and req.replay is not None else req.pending
        if not chunks and not (req.complete and req.chunked):
            up.transport.write(self._head)
        else:
            out = [self._head]
            if req.chunked:
                for data in chunks:
                    out += (b"%x\r\n" % len(data), data, CRLF)
                if req.complete:
                    out.append(LAST_CHUNK)
            else:
                out += chunks
            up.transport.writelines(out)
        if req.pending:
            req.pending = []
            req.pending_size = 0
        if client.pmask & P_PENDING:
            client.resume(P_PENDING)
        client.sink = self

    # -- UpstreamPort: the rest of the body -------------------------------------------------

    def body(self, req: ClientRequest, data: bytes) -> None:
        up = self.up
        assert up is not None and up.transport is not None
        if req.chunked:
            up.transport.writelines((b"%x\r\n" % len(data), data, CRLF))
        else:
            up.transport.write(data)

    def end(self, req: ClientRequest) -> None:
        up = self.up
        assert up is not None and up.transport is not None
        up.transport.write(LAST_CHUNK)

    def splice_in(self, data: bytes) -> None:
        """Raw bytes from the client of an upgraded connection."""
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.write(data)

    def client_paused(self, paused: bool) -> None:
        """The client's write buffer filled up (or drained): stop (or resume) reading the replica."""
        up = self.up
        if up is not None and up.transport is not None and not up.closed:
            if paused:
                up.transport.pause_reading()
            else:
                up.transport.resume_reading()

    # -- after a lost connection, and at the end ----------------------------------------------

    def lost(self) -> None:
        """The connection closed under the exchange: forget it (the relay decides what next)."""
        self.up = None
        client = self._client
        client.sink = None
        client.resume(P_UPWRITE)

    def retry(self, req: ClientRequest, fresh: bool) -> bool:
        """The connection closed before a response (`fresh`: before any byte of one, on a
        connection that never answered). Send `req` again if its body could be kept: over a
        fresh connection if the lost one was reused (a replica may close an idle keep-alive
        connection just as a request goes out), once; through the queue if the replica did
        not take a fresh one (`_overloaded`). False when it is not sent again."""
        ep = self._ep
        if ep is None:
            return False
        if self._reused:
            # A home worker or a peer gateway (`_via_home`) closes a pooled connection only
            # when it goes away (its client keep-alive timeout, 75 s, outlives our pool's idle
            # 30 s), and it may have passed the request to a replica already: sent again only
            # when doing so twice is harmless. A replica's close before it answers is the
            # keep-alive race: it did not take the request.
            if self._via_home and req.method not in IDEMPOTENT:
                return False
            if not self._retried and req.replay is not None:
                self._retried = self._replay = True
                self._metrics.upstream_retries += 1
                self._dispatch(ep, fresh=True)
                return True
            return False
        if not fresh or self._via_home:
            return False
        return self._not_taken(ep, req, refused=False)

    def peer_refused(self, up: UpstreamConn) -> bool:
        """`up` (a peer gateway's listener) answered 503 `x-flint-peer-refused`: it does not list
        this gateway yet (its snapshot is older than ours) and did not read the request. Wait
        and send it again (to an owner then: the next one round) rather than pass the refusal
        on; True when it will be, or when it was answered 503 here (it could not wait)."""
        ep, req = self._ep, self._client.cur
        if (ep is None or req is None or not self._via_home
                or not ep.id.startswith(PEER_ENDPOINT_PREFIX)
                or not any(n.lower() == H_PEER_REFUSED for n, _ in up.headers)):
            return False
        self.stop(reuse=False)
        if self._requeue(req, alone=True, refused=True):
            return True
        self._on_failed(503, f"the gateway that owns the replicas of revision "
                        f"{self._rev.key if self._rev else '?'} does not admit this one yet", True)
        return True

    def _not_taken(self, ep: Endpoint, req: ClientRequest, refused: bool) -> bool:
        """A fresh connection to `ep` failed before any response byte (`refused`: its connect
        was refused), a hard overload signal: lower `ep`'s learned limit to what it serves now.
        Then, if the body can be replayed, send the request on (True): back to the front of
        the revision's queue when other requests are in flight there (their ends make room),
        else to another replica with room now, else to the queue with a backoff. False: the
        caller answers (its slot may be released already)."""
        serving = self._pool.serving(ep.id) + self._pool.connecting(ep.id)
        if self._router.lower(ep.id, serving) is not None:
            self._metrics.learned_limit_lowered += 1
        if req.replay is None:
            return False
        if self._router.counted(ep.id) > 1:
            return self._requeue(req)
        rev = self._rev
        self.release()
        self._replay = True
        if rev is not None and self._fail_over(rev, ep):
            return True
        return self._requeue(req, alone=True, refused=refused)

    def _requeue(self, req: ClientRequest, alone: bool = False, refused: bool = False) -> bool:
        """Put the request back at the front of its revision's queue and free its slot, if its
        body can be replayed; False when it cannot wait again."""
        if req.replay is None or self._on_requeue is None:
            return False
        self._requeued = True
        # Queued before the slot is released, so that the release's dispatch can grant it.
        if not self._on_requeue(self._head, alone, refused):
            self._requeued = False
            return False
        self._metrics.upstream_requeues += 1
        self.release()
        return True

    def answered(self) -> None:
        """The replica answered the request (a success toward its learned limit's growth)."""
        ep = self._ep
        if ep is not None and ep.id in self._learned:
            self._router.succeeded(ep.id)

    def streaming(self) -> None:
        """The response upgraded or streams: the slot stops counting against the replica's
        learned limit (`Balancer.exempt`)."""
        ep = self._ep
        if ep is not None and not self._exempt and not self._via_home:
            self._exempt = True
            self._router.exempt(ep.id)

    def release(self) -> None:
        """Free the reserved slot (once)."""
        ep = self._ep
        if ep is not None:
            self._ep = None
            if not self._via_home:  # a home worker is not a balancer slot
                exempt, self._exempt = self._exempt, False
                self._router.release(ep.id, exempt)

    def stop(self, reuse: bool) -> None:
        """Detach the connection (pooling it if `reuse`), free the slot. Idempotent."""
        task = self._connect_task
        if task is not None:
            self._connect_task = None
            task.cancel()
        up = self.up
        if up is not None:
            self.up = None
            up.owner = None  # detach
            if reuse:
                if self._learned:  # rare: some replica has a learned limit
                    self.answered()
                self._pool.put(up)  # closes it unless reusable
            else:
                up.close()
        client = self._client
        client.sink = None
        if client.pmask & P_UPWRITE:
            client.resume(P_UPWRITE)
        self.release()
