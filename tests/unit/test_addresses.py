"""Listen addresses as users write them, and loopback."""

from __future__ import annotations

import pytest

from flint_common.addresses import format_hostport, is_loopback, parse_listen, parse_listen_list


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.2", ("127.0.0.2", 8080)),
    ("127.0.0.2:9000", ("127.0.0.2", 9000)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::1]:9000", ("::1", 9000)),
    ("[::1]", ("::1", 8080)),
    ("::1", ("::1", 8080)),
    ("::", ("::", 8080)),
])
def test_listen_addresses_parse(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text, 8080) == want
    host, port = want
    assert parse_listen(format_hostport(host, port), 1) == want


@pytest.mark.parametrize(("text", "error"), [
    ("", "empty"),
    ("example.com:80", "not an IP address"),
    ("[::1", "missing ']'"),
    ("[::1]9000", "expected ':PORT'"),
    ("127.0.0.1:0", "1 to 65535"),
    ("127.0.0.1:http", "1 to 65535"),
    ("127.0.0.1:70000", "1 to 65535"),
])
def test_bad_listen_addresses_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse_listen(text, 8080)


def test_listen_lists_round_trip() -> None:
    pairs = (("127.0.0.2", 80), ("::1", 8080))
    assert parse_listen_list("127.0.0.2:80,[::1]:8080", 0) == pairs
    assert parse_listen_list("", 0) == ()


def test_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))
