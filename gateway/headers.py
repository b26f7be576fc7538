"""Header hygiene for the proxy: hop-by-hop stripping, forwarding headers, framing (pure)."""

from __future__ import annotations

import random
import re
from http import HTTPStatus

CRLF = b"\r\n"
COLON = b": "

# Request header kinds (lowercased name → kind); anything absent passes through untouched.
H_DROP = 0
H_HOST = 1
H_CONNECTION = 2
H_CONTENT_LENGTH = 3
H_TRANSFER_ENCODING = 4
H_UPGRADE = 5
H_FORWARDED = 6
H_XFF = 7
H_TAG = 8
H_TRACEPARENT = 9
H_EXPECT = 10
H_PROXY_CONNECTION = 11

REQUEST_KINDS: dict[bytes, int] = {
    b"host": H_HOST,
    b"connection": H_CONNECTION,
    b"content-length": H_CONTENT_LENGTH,
    b"transfer-encoding": H_TRANSFER_ENCODING,
    b"upgrade": H_UPGRADE,
    b"forwarded": H_FORWARDED,
    b"x-forwarded-for": H_XFF,
    b"knative-serving-tag": H_TAG,
    b"traceparent": H_TRACEPARENT,
    b"expect": H_EXPECT,
    b"keep-alive": H_DROP,
    b"proxy-connection": H_PROXY_CONNECTION,  # dropped, but llhttp's keep-alive decision reads it
    b"te": H_DROP,
    b"trailer": H_DROP,
    b"x-forwarded-proto": H_DROP,
    b"x-forwarded-host": H_DROP,
}
"""Request headers the proxy interprets or replaces. `x-flint-*` is dropped separately."""

INTERNAL_PREFIX = b"x-flint-"
H_INTERNAL_REVISION = b"x-flint-revision"
"""Worker → home worker (trusted unix socket only): `namespace/name` of the routed revision."""
H_INTERNAL_ROUTE = b"x-flint-route"
"""Worker → home worker: `namespace/name` of the route that matched (for metrics)."""
H_INTERNAL_PEER = b"x-flint-peer"
H_PEER_REFUSED = b"x-flint-peer-refused"
"""On a peer listener's 503: the connection's source is not a peer of the receiver's snapshots
(yet): the request was not read, so the forwarding gateway may send it again."""
"""Worker → home worker: the request came from another gateway's peer listener (`gateway.subsets`)."""

# Response header kinds.
R_DROP = 0
R_CONNECTION = 1
R_CONTENT_LENGTH = 2
R_TRANSFER_ENCODING = 3
R_UPGRADE = 4

RESPONSE_KINDS: dict[bytes, int] = {
    b"connection": R_CONNECTION,
    b"content-length": R_CONTENT_LENGTH,
    b"transfer-encoding": R_TRANSFER_ENCODING,
    b"upgrade": R_UPGRADE,
    b"keep-alive": R_DROP,
    b"proxy-connection": R_DROP,
    b"te": R_DROP,
    b"trailer": R_DROP,
}

STANDARD_CONNECTION_TOKENS = frozenset((b"close", b"keep-alive", b"upgrade", b""))


def connection_tokens(value: bytes) -> set[bytes]:
    """Lowercased tokens of a Connection header value."""
    return {t.strip().lower() for t in value.split(b",")}


def drop_named(headers: list[tuple[bytes, bytes]], tokens: set[bytes]) -> list[tuple[bytes, bytes]]:
    """Headers minus those a Connection header names as hop-by-hop."""
    extra = tokens - STANDARD_CONNECTION_TOKENS
    if not extra:
        return headers
    return [(n, v) for n, v in headers if n.lower() not in extra]


def forwarded_node(peer: object) -> tuple[bytes, bytes]:
    """(`for=` value for Forwarded, address for X-Forwarded-For) of a transport peername."""
    if isinstance(peer, tuple) and peer:
        ip = str(peer[0])
        if ":" in ip:
            return f'"[{ip}]"'.encode(), ip.encode()
        return ip.encode(), ip.encode()
    return b"unknown", b"unknown"


_NEEDS_QUOTES = re.compile(rb'[:\[\]"\\ ,;=]').search
_host_cache: dict[bytes, bytes] = {}


def _forwarded_host(host: bytes) -> bytes:
    """`host=` value of a Forwarded element: quoted unless it is a plain token (cached)."""
    quoted = _host_cache.get(host)
    if quoted is None:
        quoted = host
        if _NEEDS_QUOTES(host):
            quoted = b'"' + host.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        if len(_host_cache) >= 4096:
            _host_cache.clear()
        _host_cache[host] = quoted
    return quoted


def forwarding_headers(
    parts: list[bytes],
    forwarded: bytes | None,
    xff: bytes | None,
    for_node: bytes,
    client_ip: bytes,
    host: bytes,
) -> None:
    """Append Forwarded, X-Forwarded-For/-Proto/-Host lines (existing values extended)."""
    element = b"for=" + for_node + b";proto=http;host=" + _forwarded_host(host)
    parts += (
        b"Forwarded: ",
        forwarded + b", " + element if forwarded else element,
        b"\r\nX-Forwarded-For: ",
        xff + b", " + client_ip if xff else client_ip,
        b"\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ",
        host,
        CRLF,
    )


_getrandbits = random.getrandbits
_TRACE_BITS = (1 << 128) - 1


def new_traceparent() -> bytes:
    """A fresh W3C traceparent (version 00, random non-zero ids, not sampled)."""
    ids = _getrandbits(192)  # the trace id in the low 128 bits, the parent id above
    if not ids & _TRACE_BITS or not ids >> 128:  # an all-zero id is invalid
        ids |= 1 | 1 << 128
    # Little-endian bytes: the trace id's 16 first, hex'd as "<32 digits>-<16 digits>".
    return b"00-" + ids.to_bytes(24, "little").hex("-", -16).encode() + b"-00"


def _reason_table() -> dict[int, bytes]:
    table = {status.value: status.phrase.encode("latin-1") for status in HTTPStatus}
    table[413] = b"Content Too Large"  # RFC 9110's name; Python 3.11 still says "Request Entity…"
    return table


REASONS: dict[int, bytes] = _reason_table()
"""Status code → reason phrase (RFC 9110's), for the responses the gateway writes itself."""
STATUS_LINES: dict[int, bytes] = {code: b"HTTP/1.1 %d %s\r\n" % (code, r) for code, r in REASONS.items()}
"""Status code → its status line, as relayed when a replica sends the standard phrase."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
"""The interim response that asks a client for the body it announced with `Expect`."""


def error_response(status: int, message: str, close: bool, retry_after: bool = False) -> bytes:
    """A short text/plain response generated by the proxy itself."""
    body = message.encode("utf-8", "replace") + b"\n"
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Error")),
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(body),
            b"Connection: close\r\n" if close else b"",
            b"Retry-After: 1\r\n" if retry_after else b"",
            b"X-Flint-Error: gateway\r\n\r\n",
            body,
        )
    )


def peer_refused_response() -> bytes:
    """A peer listener's answer to a source it does not admit (`gateway.client.PeerConnection`)."""
    body = b"the peer listener serves only the gateways of the routing snapshot\n"
    return b"".join((
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n" % len(body),
        H_PEER_REFUSED, b": 1\r\nX-Flint-Error: gateway\r\n\r\n", body,
    ))
