"""One request's way through the gateway, from its head to its count in the metrics.

The client connection hands each request whose head is complete to its `Exchange`, which

1. **admits** it: answers what it must refuse (malformed target, CONNECT, no Host, unknown
   host, a cluster-local route on a public listener), recognises a broker or channel ingress
   host, and routes anything else to a revision picked by its traffic split;
2. forwards it to the revision's (or the SQLite log's) home worker when another worker owns it
   (`gateway.home`; a Redis-backed log takes appends from every worker), or reserves a replica
   slot, or **waits** for one in the activator's queue
   (`granted` / `rejected` are the queue's answers);
3. **attaches** it to an upstream port, which relays the response: `ReplicaUpstream` for a
   replica or a home worker, `LocalUpstream` for an ingress request this worker answers;
4. **finishes** it: the revision's concurrency stats and the per-route answer counters.

One per client connection, reused by its requests one after the other.
"""

from __future__ import annotations

import httptools

from flint_common.snapshot import Endpoint, RevisionTarget
from gateway.activator import INF, Rejection, Ticket
from gateway.context import WorkerContext
from gateway.headers import (
    CRLF,
    H_INTERNAL_PEER,
    H_INTERNAL_REVISION,
    H_INTERNAL_ROUTE,
    forwarding_headers,
    new_traceparent,
)
from gateway.ingress import HOST_PREFIXES, REDIS, Answer, classify, home_key, ingress_target
from gateway.local_upstream import LocalUpstream, respond_answer
from gateway.ports import P_QUEUED, ClientSink
from gateway.proxy_metrics import ProxyMetrics, RouteCounter
from gateway.relay import Relay
from gateway.request import ClientRequest
from gateway.router import RouteMiss
from gateway.stats import RevStats

__all__ = ["HOME_SLACK_S", "Exchange"]

HOME_SLACK_S = 1.0
"""A request forwarded to its revision's home worker waits this much longer than the
revision's timeout, so that the home worker's own 504 (which knows why) reaches the client."""

REQUEUE_LIMIT = 16
"""Times one request may be put back in its queue because a replica did not take it: a
request that kills every connection it is sent on is not sent on forever."""
ALONE_RETRIES = 4
"""Times a request whose connect was *refused* while nothing else was in flight on the replica
is sent again (the replica is more likely dead than busy); then it fails over or fails. Other
signals (timeouts, resets, stalls: a full accept queue, perhaps filled by another worker) are
retried up to `REQUEUE_LIMIT`."""
ALONE_BACKOFF_S = 0.02
ALONE_BACKOFF_MAX_S = 0.5
"""How long such a request waits before its queue is dispatched again (doubling, capped)."""

INGRESS_ROUTE = "broker-ingress"
"""The route an ingress request forwarded to its log's home worker is counted under."""


class Exchange:
    """The state machine of one client connection's active request (see the module)."""

    __slots__ = (
        "_activator",
        "_alone",
        "_client",
        "_counter",
        "_ctx",
        "_fwd_block",
        "_fwd_host",
        "_head",
        "_home",
        "_local",
        "_loop",
        "_metrics",
        "_peer",
        "_public",
        "_relay",
        "_req",
        "_requeues",
        "_rev",
        "_route_key",
        "_router",
        "_rs",
        "_stats",
        "_t0",
        "_ticket",
        "_total_deadline",
        "_trusted",
    )

    def __init__(
        self, ctx: WorkerContext, client: ClientSink, metrics: ProxyMetrics, *, trusted: bool, public: bool,
        peer: bool = False,
    ) -> None:
        self._ctx = ctx
        self._peer = peer
        """Accepted on the peer listener: another gateway forwarded its requests (`gateway.subsets`)."""
        self._client = client
        self._metrics = metrics
        self._trusted = trusted
        self._public = public
        """Accepted on a `--listen` address: cluster-local routes are not served here."""
        self._loop = ctx.loop
        self._router = ctx.router
        self._activator = ctx.activator
        self._stats = ctx.stats
        self._home = ctx.home
        self._relay = Relay(client, ctx.router, ctx.pool, ctx.loop, metrics, self.requeue)
        self._local: LocalUpstream | None = None
        """The ingress port, made by the connection's first ingress request."""
        self._req: ClientRequest | None = None
        self._rev: RevisionTarget | None = None
        self._route_key = ""
        self._t0 = 0.0
        self._total_deadline = INF
        self._ticket: Ticket | None = None
        self._rs: RevStats | None = None
        self._counter: RouteCounter | None = None
        """The last route's answer counter (the same one, request after request)."""
        self._head = b""
        """The head of a request waiting in a queue, sent when it is granted a slot."""
        self._alone = 0
        """Times the active request was put back in its queue with nothing else in flight."""
        self._requeues = 0
        """Times the active request was put back in its queue."""
        self._fwd_host = b""
        self._fwd_block = b""
        """The forwarding headers of this connection's requests to `_fwd_host`."""

    # -- admit --------------------------------------------------------------------------------

    def start(self, req: ClientRequest) -> None:
        """Route a request whose head is complete and send it on (or queue it, or answer it)."""
        metrics = self._metrics
        metrics.requests_total += 1
        client = self._client
        if req.error is not None:
            client.respond_error(*req.error)
            return
        if req.method == b"CONNECT":
            client.respond_error(405, "CONNECT is not supported")
            return
        host = req.host
        if req.url[:1] not in (b"/", b"*"):
            try:
                parsed = httptools.parse_url(req.url)
            except httptools.HttpParserInvalidURLError:
                client.respond_error(400, "invalid request target")
                return
            if parsed.host:
                host = parsed.host if parsed.port is None else b"%s:%d" % (parsed.host, parsed.port)
            req.url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        if not host:
            client.respond_error(400, "missing Host header")
            return
        if host.startswith(HOST_PREFIXES):
            kind = self._ctx.ingress.kind_of(host)
            if kind is not None:
                self._start_ingress(kind, req, host)
                return
        router = self._router
        if req.internal_rev is not None:
            # Forwarded by another worker: this worker is the revision's home.
            key = req.internal_rev.decode("latin-1")
            current = router.current(key)
            if current is None:
                client.respond_error(
                    503, f"revision {key} is not in this worker's routing snapshot", retry_after=True
                )
                return
            target = current
            self._route_key = (req.internal_route or b"").decode("latin-1")
        else:
            found = router.route_raw(host, req.tag)
            if isinstance(found, RouteMiss):
                if found.reason == "unknown-host":
                    self._respond_unknown_host(found.host)
                else:
                    client.respond_error(503, found.message, retry_after=True)
                return
            if found.cluster_local and self._public:
                # Knative's cluster-local visibility: not exposed on a public listener, and
                # answered exactly as a host nothing routes (this worker accepted the client,
                # so a request forwarded to a home worker has passed here first).
                self._respond_unknown_host(host.decode("latin-1"))
                return
            self._route_key = found.route
            target = found.target
            key = target.key
        self._req = req
        self._rev = target
        self._t0 = now = self._loop.time()
        metrics.inflight_requests += 1
        if target.container_concurrency > 0 and self._elsewhere(target, req, host, now):
            return
        head = self._build_head(req, host)
        timeout = target.timeout_s
        deadline = self._total_deadline = now + timeout if timeout > 0 else INF
        act = self._activator
        self._rs = self._stats.enter(key, now)
        if target.failure or not target.endpoints:
            refusal = act.refuse(target)
            if refusal is not None:
                client.respond_error(refusal.status, refusal.message, retry_after=True)
                return
        ep = None if act.has_waiters(key) else router.acquire(target)
        if ep is not None:
            self._relay.begin(target, ep, head, now, now, deadline, False)
            return
        self._enqueue(target, req, head, now)

    def _elsewhere(self, target: RevisionTarget, req: ClientRequest, host: bytes, now: float) -> bool:
        """Send a limited revision's request to where its limit is kept, if not here: this
        gateway's home worker of the revision (`gateway.home`), else an owner gateway when this
        gateway owns none of its replicas (`gateway.subsets`). True when it was sent (or refused)."""
        key = target.key
        home = self._home
        if home is not None and (req.internal_rev is None or self._peer):
            home_ep = home.endpoint_for(key)
            if home_ep is not None:
                # Another worker owns this revision's limit, queue and stats.
                self._to_home(target, home_ep, req, host, now)
                return True
        router = self._router
        if self._peer or req.from_peer_hop:  # from another gateway: served here, never sent on
            if target.endpoints or not router.forwarded(key):
                return False
            self._client.respond_error(
                503, f"revision {key}: this gateway owns none of its replicas in its routing "
                f"snapshot (version {router.version}); the gateways' snapshots differ for a moment",
                retry_after=True)
            return True
        peer_ep = router.forward_for(key)
        if peer_ep is None:
            return False
        # Other gateways own every replica of it: one of them queues and limits the request.
        self._to_home(target, peer_ep, req, host, now, peer=True)
        return True

    def _respond_unknown_host(self, host: str) -> None:
        self._client.respond_error(404, f"no route for host {host!r}")

    def _start_ingress(self, kind: str, req: ClientRequest, host: bytes) -> None:
        """A request to a broker or channel ingress host: answered by the worker that writes
        the log (forwarded to it when that is another worker)."""
        found = classify(req.method, req.url, req.headers, kind)
        if isinstance(found, Answer):
            respond_answer(self._client, found)
            return
        entry = self._ctx.ingress.lookup(found[0], found[1], kind)
        if entry is None:
            respond_answer(self._client, Answer(404, f"{kind} {found[0]}/{found[1]} not found"))
            return
        home = self._home
        if req.internal_rev is None and home is not None and entry.backend != REDIS:
            # A SQLite log has one writer; a Redis stream takes appends from any worker.
            home_ep = home.endpoint_for(home_key(entry))
            if home_ep is not None:  # another worker writes this log: forward the request to it
                target = ingress_target(entry)
                self._req = req
                self._rev = target
                self._route_key = INGRESS_ROUTE
                self._t0 = now = self._loop.time()
                self._metrics.inflight_requests += 1
                self._to_home(target, home_ep, req, host, now)
                return
        local = self._local
        if local is None:
            ctx = self._ctx
            local = self._local = LocalUpstream(self._client, ctx.ingress, ctx.settings, ctx.loop)
        local.start(entry, req)

    def _to_home(
        self, target: RevisionTarget, home_ep: Endpoint, req: ClientRequest, host: bytes, now: float,
        peer: bool = False,
    ) -> None:
        """Forward the active request to the worker that owns `target` (a limited revision's
        limit and queue, or a log's writes), or to an owner gateway (`peer`: two hops, its peer
        listener's worker and that one's home worker); it waits a little longer than they would."""
        if peer:
            self._metrics.peer_forwards += 1
        else:
            self._metrics.home_forwards += 1
        slack = 2 * HOME_SLACK_S if peer else HOME_SLACK_S
        timeout = target.timeout_s
        deadline = self._total_deadline = now + timeout + slack if timeout > 0 else INF
        head = self._build_head(req, host, target.key)
        self._relay.begin(target, home_ep, head, now, self._t0, deadline, True)

    def _build_head(self, req: ClientRequest, host: bytes, home_key: str | None = None) -> bytes:
        """The request head as the upstream gets it: hop-by-hop headers dropped, this hop's
        forwarding headers and a traceparent added, the body's framing restated."""
        parts = [req.method, b" ", req.url, b" HTTP/1.1\r\n"]
        for name, value in req.headers:
            parts += (name, b": ", value, CRLF)
        if self._trusted:
            # From another worker, which already appended this hop's forwarding headers.
            if req.forwarded:
                parts += (b"Forwarded: ", req.forwarded, CRLF)
            if req.xff:
                parts += (b"X-Forwarded-For: ", req.xff, CRLF)
            parts += (b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: ", host, CRLF)
        elif req.forwarded or req.xff:
            client = self._client
            forwarding_headers(parts, req.forwarded, req.xff, client.for_node, client.client_ip, host)
        else:  # the usual case: the same block for every request of this connection to `host`
            if host != self._fwd_host:
                client = self._client
                block: list[bytes] = []
                forwarding_headers(block, None, None, client.for_node, client.client_ip, host)
                self._fwd_block = b"".join(block)
                self._fwd_host = host
            parts.append(self._fwd_block)
        if home_key is not None:
            parts.append(self._internal_headers(home_key, req))
        if not req.traceparent:
            parts += (b"traceparent: ", new_traceparent(), CRLF)
        if req.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif req.content_length is not None:
            parts.append(b"Content-Length: %d\r\n" % req.content_length)
        if req.upgrade:
            parts += (b"Connection: Upgrade\r\nUpgrade: ", req.upgrade_value or b"", CRLF)
        parts.append(CRLF)
        return b"".join(parts)

    def _internal_headers(self, key: str, req: ClientRequest) -> bytes:
        """The `x-flint-*` headers of a request forwarded to a home worker or a peer gateway."""
        peer = H_INTERNAL_PEER + b": 1\r\n" if self._peer or req.from_peer_hop else b""
        return b"".join((H_INTERNAL_REVISION, b": ", key.encode("latin-1"), CRLF,
                         H_INTERNAL_ROUTE, b": ", self._route_key.encode("latin-1"), CRLF, peer))

    # -- wait ---------------------------------------------------------------------------------

    def _enqueue(self, target: RevisionTarget, req: ClientRequest, head: bytes, now: float) -> None:
        """No routable replica or no free slot: wait in the revision's queue."""
        client = self._client
        body_bytes = req.pending_size
        if req.body_expected and not req.complete:
            length = req.content_length
            if length is not None and length <= self._ctx.settings.queue_body_buffer_bytes:
                body_bytes = max(body_bytes, length)  # small: read and buffered while waiting
            else:
                client.pause(P_QUEUED)  # stays unread in the socket until forwarded
        act = self._activator
        res = act.enqueue(target, self, now, deadline=self._total_deadline, body_bytes=body_bytes)
        if isinstance(res, Rejection):
            client.resume(P_QUEUED)
            act.rejections += 1
            client.respond_error(res.status, res.message, retry_after=True)
            return
        self._ticket = res
        self._head = head

    def requeue(self, head: bytes, alone: bool, refused: bool) -> bool:
        """A replica did not take a fresh connection (`ReplicaUpstream._not_taken`): wait
        again, at the front of the revision's queue, within the same deadline. `alone`
        (nothing else was in flight there, so no release will dispatch the queue): dispatch it
        after a backoff; `refused` too: only `ALONE_RETRIES` times. False when it cannot wait
        (gone, past its deadline, queue full, out of retries)."""
        rev = self._rev
        client = self._client
        req = client.cur
        if rev is None or req is None or self._ticket is not None:
            return False
        now = self._loop.time()
        if now >= self._total_deadline or self._requeues >= REQUEUE_LIMIT:
            return False
        if alone and refused and self._alone >= ALONE_RETRIES:
            return False
        current = self._router.current(rev.key)
        if current is None:
            return False
        res = self._activator.enqueue(
            current, self, now, deadline=self._total_deadline, body_bytes=req.replay_size,
            front=True,
        )
        if isinstance(res, Rejection):
            return False
        self._ticket = res
        self._head = head
        self._requeues += 1
        if alone:
            delay = min(ALONE_BACKOFF_S * (1 << self._alone), ALONE_BACKOFF_MAX_S)
            self._loop.call_later(delay, self._activator.dispatch_now, rev.key)
            self._alone += 1
        if not req.complete:
            client.pause(P_QUEUED)  # the rest of the body waits in the socket, not in memory
        self._relay.waiting()
        return True

    def granted(self, rev: RevisionTarget, ep: Endpoint, ticket: Ticket, now: float) -> None:
        """A slot on `ep` was reserved for the queued request (the activator's `Waiter`)."""
        client = self._client
        req = client.cur
        if self._ticket is not ticket or req is None or client.closing:
            self._router.release(ep.id)
            return
        self._ticket = None
        if ticket.cold:
            self._activator.count_cold_start(rev.key, now - ticket.enqueued)
        self._rev = rev
        client.resume(P_QUEUED)
        head, self._head = self._head, b""
        self._relay.begin(rev, ep, head, now, self._t0, self._total_deadline, False)

    def forward(self, ticket: Ticket, now: float) -> None:
        """The queued request's revision is now owned by other gateways only (the activator's
        `Waiter`): send it to one of them, or answer 503 if it came from one."""
        client = self._client
        req = client.cur
        rev = self._rev
        if self._ticket is not ticket or req is None or rev is None or client.closing:
            return
        self._ticket = None
        rs = self._rs
        if rs is not None:  # the owner counts it from now on
            self._rs = None
            rs.leave(now)
        client.resume(P_QUEUED)
        peer_ep = None if self._peer or req.from_peer_hop else self._router.forward_for(rev.key)
        if peer_ep is None:
            client.respond_error(503, f"revision {rev.key}: its replicas are owned by other "
                                 "gateways now", retry_after=True)
            return
        self._metrics.peer_forwards += 1
        head, self._head = self._head, b""
        head = head[:-2] + self._internal_headers(rev.key, req) + CRLF  # before the blank line
        self._total_deadline += 2 * HOME_SLACK_S
        self._relay.begin(rev, peer_ep, head, now, self._t0, self._total_deadline, True)

    def rejected(self, status: int, message: str) -> None:
        """The queued request failed: timed out, or its revision failed or is gone."""
        self._ticket = None
        client = self._client
        client.resume(P_QUEUED)
        client.respond_error(status, message, retry_after=status == 503)

    # -- the client's events ----------------------------------------------------------------

    def too_large(self) -> None:
        """The active request's body passed the limit while it was being sent on."""
        self._metrics.client_errors += 1
        client = self._client
        started = client.response_started
        self._relay.stop(reuse=False)
        if started:
            client.close()
        else:
            limit = self._ctx.settings.max_request_body_bytes
            client.respond_error(413, f"request body exceeds the limit of {limit} bytes")

    def splice_in(self, data: bytes) -> None:
        self._relay.splice_in(data)

    def client_paused(self, paused: bool) -> None:
        self._relay.client_paused(paused)

    def abandon(self) -> None:
        """The client connection is gone or unusable: drop the upstream side (not pooled)."""
        self._relay.cancel_timer()
        self._relay.stop(reuse=False)
        if self._client.closing:
            self.finish(self._loop.time())

    def close(self) -> None:
        """The client connection is closing (maybe lingering for seconds): the exchange is over."""
        self._relay.cancel_timer()
        self.finish(self._loop.time())

    def next(self, now: float) -> None:
        """The active request is answered (at `now`): forget it before the next one."""
        self.finish(now)
        local = self._local
        if local is not None:
            local.reset()
        self._rev = None
        self._req = None
        self._alone = self._requeues = 0

    # -- finish -------------------------------------------------------------------------------

    def finish(self, now: float) -> None:
        """The exchange is over (at `now`, the loop's time): count it (stats, metrics) and leave
        any queue. Idempotent."""
        ticket = self._ticket
        if ticket is not None:
            self._ticket = None
            self._activator.cancel(ticket)
        rev = self._rev
        req = self._req
        if rev is None or not self._t0 or req is None:
            return
        rs = self._rs
        if rs is not None:
            self._rs = None
            rs.leave(now)
        self._metrics.inflight_requests -= 1
        status = req.status
        if status and not self._trusted:
            counter = self._counter
            route = self._route_key
            key = rev.key
            if counter is None or counter.route != route or counter.revision != key:
                counter = self._counter = self._metrics.counter(route, key)
            counter.count(status, now - self._t0)
        self._t0 = 0.0
