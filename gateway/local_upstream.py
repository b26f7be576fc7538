"""The upstream port of a request this worker answers itself: the broker and channel ingress.

When the exchange finds that this worker writes the addressed log, `LocalUpstream` takes the
place of a replica: it collects the body the client connection would otherwise send on (within
`max_ingress_body_bytes`), asks for it with `100 Continue` when the client waits for that, and
once the body is complete hands it to `BrokerIngress.accept`; the answer is written when the
events are committed to the log.
"""

from __future__ import annotations

import asyncio

from flint_common.snapshot import BrokerEntry
from gateway.config import GatewaySettings
from gateway.headers import CONTINUE
from gateway.ingress import Answer, BrokerIngress, local_response
from gateway.ports import P_PENDING, ClientSink
from gateway.request import ClientRequest

__all__ = ["LocalUpstream", "respond_answer"]


def respond_answer(client: ClientSink, answer: Answer) -> None:
    """Write a response the gateway makes itself (keep-alive kept when possible)."""
    if answer.status >= 400 and not answer.headers:
        client.respond_error(answer.status, answer.message, answer.retry_after)
    else:
        client.respond_local(answer.status, lambda close: local_response(answer, close))


class LocalUpstream:
    """One client connection's ingress port (made by its first ingress request)."""

    needs_end = True  # the answer follows the whole body, whatever its framing

    __slots__ = ("_body", "_client", "_entry", "_ingress", "_limit", "_loop", "_size", "_task")

    def __init__(
        self,
        client: ClientSink,
        ingress: BrokerIngress,
        settings: GatewaySettings,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._client = client
        self._ingress = ingress
        self._limit = settings.max_ingress_body_bytes
        self._loop = loop
        self._body: list[bytes] = []
        self._size = 0
        self._entry: BrokerEntry | None = None
        self._task: asyncio.Task[None] | None = None
        """Keeps the append's task referenced until it answers."""

    def start(self, entry: BrokerEntry, req: ClientRequest) -> None:
        """Answer the active request, addressed to `entry`, from this worker."""
        limit = self._limit
        client = self._client
        if req.content_length is not None and req.content_length > limit:
            respond_answer(
                client,
                Answer(413, f"request body of {req.content_length} bytes exceeds the limit of {limit} bytes"),
            )
            return
        self._entry = entry
        self._body = req.pending
        self._size = req.pending_size
        req.pending = []
        req.pending_size = 0
        client.sink = self
        if client.pmask & P_PENDING:
            client.resume(P_PENDING)
        transport = client.transport
        if req.expect and not req.http10 and not req.complete and transport is not None:
            transport.write(CONTINUE)  # no upstream will say it: the body is wanted
        if req.complete:
            self.end(req)  # else the end of the message runs it

    def body(self, req: ClientRequest, data: bytes) -> None:
        self._size += len(data)
        limit = self._limit
        if self._size > limit:
            self._body = []
            respond_answer(self._client, Answer(413, f"request body exceeds the limit of {limit} bytes"))
            return
        self._body.append(data)

    def end(self, req: ClientRequest) -> None:
        """The body is complete: append its events (once per request)."""
        cur = self._client.cur
        entry = self._entry
        if cur is None or cur.response_done or entry is None:
            return
        if self._task is not None:  # already started for this request
            return
        body = b"".join(self._body)
        self._body = []
        self._task = self._loop.create_task(self._accept(entry, cur, body))

    async def _accept(self, entry: BrokerEntry, req: ClientRequest, body: bytes) -> None:
        answer = await self._ingress.accept(entry, req.headers, body)
        client = self._client
        if client.cur is req and not client.closing:
            respond_answer(client, answer)

    def reset(self) -> None:
        """Forget the answered request (its append, if still running, answers no one)."""
        client = self._client
        if client.sink is self:
            client.sink = None
        self._body = []
        self._size = 0
        self._entry = None
        self._task = None
