"""Broker and channel ingress inside the proxy: a request answered by the gateway itself.

The proxy hands a request whose Host is an ingress host to `IngressExchange._start_ingress`:
it is forwarded to the log's home worker, or its body is collected (the client side calls
`_forward_body` / `_forward_end` as for an upstream, with `_local` set) and given to
`BrokerIngress.accept`, whose answer is written when the append has committed.
"""

from __future__ import annotations

import asyncio

from gateway.client import P_PENDING, ClientConnection, ClientRequest
from gateway.config import BrokerEntry, Endpoint, RevisionTarget
from gateway.context import WorkerContext
from gateway.headers import CONTINUE
from gateway.ingress import Answer, BrokerIngress, classify, home_key, ingress_target, local_response

__all__ = ["IngressExchange"]


class IngressExchange(ClientConnection):
    """The ingress half of `ProxyProtocol` (which provides the forwarding it reuses)."""

    __slots__ = ("_ibody", "_ientry", "_isize", "_itask")

    _ctx: WorkerContext  # ProxyProtocol's (in its __slots__)

    def _forward_ingress(
        self, target: RevisionTarget, home: Endpoint, req: ClientRequest, host: bytes
    ) -> None:
        """Send the request to the home worker `home` as an upstream described by `target`."""
        raise NotImplementedError

    def _init_ingress(self) -> None:
        self._ibody: list[bytes] = []
        self._isize = 0
        self._ientry: BrokerEntry | None = None
        self._itask: asyncio.Task[None] | None = None
        """Keeps the append's task referenced until it answers."""

    def _reset_ingress(self) -> None:
        self._local = False
        self._up_ready = False
        self._init_ingress()

    def _start_ingress(self, ingress: BrokerIngress, kind: str, req: ClientRequest, host: bytes) -> None:
        found = classify(req.method, req.url, req.headers, kind)
        if isinstance(found, Answer):
            self._respond_answer(found)
            return
        entry = ingress.lookup(found[0], found[1], kind)
        if entry is None:
            self._respond_answer(Answer(404, f"{kind} {found[0]}/{found[1]} not found"))
            return
        home = self._ctx.home
        if req.internal_rev is None and home is not None:
            home_ep = home.endpoint_for(home_key(entry))
            if home_ep is not None:  # another worker writes this log: forward the request to it
                self._forward_ingress(ingress_target(entry), home_ep, req, host)
                return
        limit = self._settings.max_ingress_body_bytes
        if req.content_length is not None and req.content_length > limit:
            self._respond_answer(
                Answer(413, f"request body of {req.content_length} bytes exceeds the limit of {limit} bytes")
            )
            return
        self._local = True
        self._ientry = entry
        self._ibody = req.pending
        self._isize = req.pending_size
        req.pending = []
        req.pending_size = 0
        self._up_ready = True
        if self._pmask & P_PENDING:
            self._resume(P_PENDING)
        if req.expect and not req.http10 and not req.complete and self.transport is not None:
            self.transport.write(CONTINUE)  # no upstream will say it: the body is wanted
        if req.complete:
            self._ingress_run()  # else the end of the message runs it (`_forward_end`)

    def _ingress_body(self, req: ClientRequest, data: bytes) -> None:
        self._isize += len(data)
        limit = self._settings.max_ingress_body_bytes
        if self._isize > limit:
            self._ibody = []
            self._respond_answer(Answer(413, f"request body exceeds the limit of {limit} bytes"))
            return
        self._ibody.append(data)

    def _ingress_run(self) -> None:
        req = self._cur
        entry = self._ientry
        if req is None or req.response_done or entry is None:
            return
        if self._itask is not None:  # already started for this request
            return
        body = b"".join(self._ibody)
        self._ibody = []
        self._itask = self._loop.create_task(self._ingress_accept(self._ctx.ingress, entry, req, body))

    async def _ingress_accept(
        self, ingress: BrokerIngress, entry: BrokerEntry, req: ClientRequest, body: bytes
    ) -> None:
        answer = await ingress.accept(entry, req.headers, body)
        if self._cur is req and not self._closing:
            self._respond_answer(answer)

    def _respond_answer(self, answer: Answer) -> None:
        """Write a response the gateway makes itself (keep-alive kept when possible)."""
        if answer.status >= 400 and not answer.headers:
            self._respond_error(answer.status, answer.message, answer.retry_after)
        else:
            self._respond_local(answer.status, lambda close: local_response(answer, close))
