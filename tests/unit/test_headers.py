"""Header hygiene helpers of the proxy: forwarding headers, traceparent, Connection tokens."""

from __future__ import annotations

import re

from gateway.headers import (
    connection_tokens,
    drop_named,
    error_response,
    forwarded_node,
    forwarding_headers,
    new_traceparent,
)


def test_forwarded_node_quotes_ipv6() -> None:
    assert forwarded_node(("10.1.2.3", 5555)) == (b"10.1.2.3", b"10.1.2.3")
    assert forwarded_node(("::1", 5555, 0, 0)) == (b'"[::1]"', b"::1")
    assert forwarded_node(None) == (b"unknown", b"unknown")


def test_forwarding_headers_append_to_existing_values() -> None:
    parts: list[bytes] = []
    forwarding_headers(parts, b"for=1.1.1.1", b"1.1.1.1", b"2.2.2.2", b"2.2.2.2", b"h.example:80")
    block = b"".join(parts)
    assert block == (
        b'Forwarded: for=1.1.1.1, for=2.2.2.2;proto=http;host="h.example:80"\r\n'
        b"X-Forwarded-For: 1.1.1.1, 2.2.2.2\r\n"
        b"X-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Host: h.example:80\r\n"
    )
    parts = []
    forwarding_headers(parts, None, None, b"2.2.2.2", b"2.2.2.2", b"h.example")
    assert b"Forwarded: for=2.2.2.2;proto=http;host=h.example\r\n" in b"".join(parts)


def test_new_traceparent_is_valid_and_random() -> None:
    seen = {new_traceparent() for _ in range(100)}
    assert len(seen) == 100
    for tp in seen:
        m = re.fullmatch(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]", tp)
        assert m is not None
        assert m.group(1) != b"0" * 32 and m.group(2) != b"0" * 16


def test_connection_named_headers_are_dropped() -> None:
    headers = [(b"X-A", b"1"), (b"x-secret", b"2"), (b"Accept", b"*/*")]
    tokens = connection_tokens(b"keep-alive, X-Secret")
    assert drop_named(headers, tokens) == [(b"X-A", b"1"), (b"Accept", b"*/*")]
    same = drop_named(headers, connection_tokens(b"close"))
    assert same is headers


def test_error_response_framing() -> None:
    raw = error_response(503, "revision default/x-1 has no ready replica", True, True)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Content-Type: text/plain; charset=utf-8" in head
    assert b"Connection: close" in head and b"Retry-After: 1" in head
    assert b"Content-Length: %d" % len(body) in head
    assert body == b"revision default/x-1 has no ready replica\n"
