"""Eventing helpers of the multi-process tests: manifests, a recording subscriber that can fail a
chosen share of its requests, and a bounded concurrent sender spread over several gateways.

The subscriber decides failure per (event id, attempt number) by a hash, not by arrival order:
whether an event ends delivered or dead-lettered depends only on its id and the trigger's
`delivery.retry`, so a test knows exactly which outcome each event must have, however many
dispatchers deliver concurrently (`Recorder.expected_dead`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

from loadtests.flint_process import Flint, free_port

INGRESS = "broker-ingress.localhost"
BROKER_CLASS_ANNOTATION = "eventing.knative.dev/broker.class"
DELIVERY_ORDER_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"
BACKEND_ANNOTATION = "eventing.flint.dev/backend"
"""Where a broker's status says its backend (issue 12 §1): `sqlite` or `redis`."""

Obj = dict[str, Any]


# --- manifests -------------------------------------------------------------------------------


def apply(f: Flint, *objs: Obj) -> None:
    f.cli("apply", "-f", "-", input=yaml.safe_dump_all(objs))


def broker(name: str, *, broker_class: str | None = None, delivery: Obj | None = None) -> Obj:
    meta: Obj = {"name": name}
    if broker_class:
        meta["annotations"] = {BROKER_CLASS_ANNOTATION: broker_class}
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": meta,
            "spec": {"delivery": delivery} if delivery else {}}


def trigger(name: str, broker_name: str, subscriber: Obj, *, ordered: bool = False,
            **spec: Any) -> Obj:
    meta: Obj = {"name": name}
    if ordered:
        meta["annotations"] = {DELIVERY_ORDER_ANNOTATION: "ordered"}
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": meta,
            "spec": {"broker": broker_name, "subscriber": subscriber, **spec}}


def conditions(f: Flint, kind: str, name: str) -> dict[str, Obj]:
    obj = f.get(kind, name)
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def condition_is(f: Flint, kind: str, name: str, type_: str, status: str = "True",
                 reason: str | None = None, message_has: str | None = None) -> bool:
    c = conditions(f, kind, name).get(type_) or {}
    return (c.get("status") == status and (reason is None or c.get("reason") == reason)
            and (message_has is None or message_has in str(c.get("message", ""))))


def backend_of(obj: Obj) -> str | None:
    """A broker's backend as its status says (`status.annotations`, Knative's place for it)."""
    annotations = (obj.get("status") or {}).get("annotations") or {}
    value = annotations.get(BACKEND_ANNOTATION)
    return None if value is None else str(value)


# --- a recording subscriber ------------------------------------------------------------------


def fails(event_id: str, attempt: int, share: float) -> bool:
    """Whether attempt `attempt` (1, 2, …) of `event_id` fails, for a subscriber failing `share`
    of its requests: a hash of both, so the same on every run and with any delivery order."""
    h = int.from_bytes(hashlib.sha256(f"{event_id}/{attempt}".encode()).digest()[:8], "big")
    return h / 2**64 < share


class Recorder:
    """An in-test HTTP subscriber on a free loopback port, recording every request.

    `fail_share`: attempts that fail (500) by `fails()`; `fail_first`: the first k attempts of
    every event fail; `fail_ids`: every attempt of these events fails (poison events);
    `statuses`: answers given in turn first (then 202); `delay_s`: each answer waits this long
    after the request is recorded (a slow subscriber: deliveries stay in flight);
    `reply=(headers, body)`: an accepted event is answered 200 with that message, a reply whose
    `ce-id` is the event's with `r-` in front."""

    def __init__(self, *, fail_share: float = 0.0, fail_first: int = 0,
                 fail_ids: Collection[str] = (), statuses: Sequence[int] = (),
                 delay_s: float = 0.0,
                 reply: tuple[dict[str, str], bytes] | None = None) -> None:
        self.fail_share, self.fail_first, self.delay_s = fail_share, fail_first, delay_s
        self.fail_ids = frozenset(fail_ids)
        self.statuses = list(statuses)
        self.reply = reply
        self.lock = threading.Lock()
        self.attempts: collections.Counter[str] = collections.Counter()
        """ce-id → requests for it (failed ones included)."""
        self.log: list[tuple[str, int]] = []
        """(ce-id, status answered) of every request, in arrival order."""
        self.events: list[Obj] = []
        """Accepted events: headers (lower-case), body, receive time (time.time())."""
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ce_id = self.headers.get("ce-id", "")
                with rec.lock:
                    rec.attempts[ce_id] += 1
                    n = rec.attempts[ce_id]
                    status = rec.statuses.pop(0) if rec.statuses else 202
                    if (n <= rec.fail_first or ce_id in rec.fail_ids
                            or (rec.fail_share and fails(ce_id, n, rec.fail_share))):
                        status = 500
                    rec.log.append((ce_id, status))
                    if status < 300:
                        rec.events.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                           "body": body, "at": time.time()})
                if rec.delay_s:
                    time.sleep(rec.delay_s)  # a handler thread of its own: no event loop here
                if rec.reply is not None and status < 300:
                    headers, reply_body = rec.reply
                    self.send_response(200)
                    for k, v in {**headers, "ce-id": f"r-{ce_id}"}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply_body)))
                    self.end_headers()
                    self.wfile.write(reply_body)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024
            daemon_threads = True

        self.port = free_port()
        self.server = Server(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def ids(self) -> list[str]:
        """The ce-id of every accepted event, in arrival order (a redelivery shows twice)."""
        with self.lock:
            return [e["headers"].get("ce-id", "") for e in self.events]

    def attempt_counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.attempts)

    @property
    def requests(self) -> int:
        """Requests received (failed ones included)."""
        with self.lock:
            return len(self.log)

    def attempt_log(self) -> list[tuple[str, int]]:
        with self.lock:
            return list(self.log)

    def expected_dead(self, ids: Sequence[str], retry: int) -> set[str]:
        """The events whose first `retry + 1` attempts all fail: the dead-lettered ones."""
        return {i for i in ids
                if i in self.fail_ids or all(k <= self.fail_first or fails(i, k, self.fail_share)
                                             for k in range(1, retry + 2))}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def recorder(**kw: Any) -> Iterator[Recorder]:
    r = Recorder(**kw)
    try:
        yield r
    finally:
        r.close()


# --- sending ---------------------------------------------------------------------------------


@dataclass
class Sent:
    """What a producer saw for each event: its answer status (0: no answer) and when."""

    status: dict[str, int] = field(default_factory=dict)
    retry_after: dict[str, str] = field(default_factory=dict)
    """ce-id → the Retry-After header of a 503 answer."""
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    """Monotonic times (time.monotonic()) around each request."""

    def accepted(self) -> list[str]:
        return [i for i, s in self.status.items() if s == 202]

    def answered(self, status: int) -> list[str]:
        return [i for i, s in self.status.items() if s == status]


def event_headers(event_id: str, type_: str = "test.event", extra: dict[str, str] | None = None
                  ) -> dict[str, str]:
    return {"Host": INGRESS, "ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/tests",
            "ce-type": type_, "Content-Type": "application/json", **(extra or {})}


async def send_many(ports: Sequence[int], broker_name: str, ids: Sequence[str], *,
                    concurrency: int = 16, rate: float | None = None, type_: str = "test.event",
                    sent: Sent | None = None, timeout_s: float = 10,
                    namespace: str = "default") -> Sent:
    """POST one binary-mode event per id to the broker, spread round-robin over the gateways on
    `ports`, at most `concurrency` at a time (and at most `rate` per second when given); every
    request bounded by `timeout_s`. Records every answer in `sent` (a new one by default)."""
    import aiohttp

    out = sent if sent is not None else Sent()
    gate = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(k: int, event_id: str, session: aiohttp.ClientSession) -> None:
        port = ports[k % len(ports)]
        async with gate:
            out.started[event_id] = time.monotonic()
            status = 0
            try:
                async with session.post(
                    f"http://127.0.0.1:{port}/{namespace}/{broker_name}", data=b'{"n": 1}',
                    headers=event_headers(event_id, type_),
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                ) as r:
                    await r.read()
                    status = r.status
                    if status == 503 and "Retry-After" in r.headers:
                        out.retry_after[event_id] = r.headers["Retry-After"]
            except (aiohttp.ClientError, OSError, TimeoutError):
                status = 0
            out.status[event_id] = status
            out.ended[event_id] = time.monotonic()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        tasks = []
        for k, event_id in enumerate(ids):
            if rate is not None:
                delay = start + k / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(k, event_id, session)))
        await asyncio.gather(*tasks)
    return out


def send_one(port: int, broker_name: str, event_id: str, *, type_: str = "test.event",
             extra: dict[str, str] | None = None) -> int:
    """POST one event through the gateway on `port`; its answer status."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/default/{broker_name}", data=b'{"n": 1}',
                                 headers=event_headers(event_id, type_, extra), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
