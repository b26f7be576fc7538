"""Listen addresses as users write them (`ADDR[:PORT]`, `[V6]:PORT`) and whether they are loopback."""

from __future__ import annotations

import ipaddress

HostPort = tuple[str, int]


def parse_listen(value: str, default_port: int) -> HostPort:
    """`ADDR`, `ADDR:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 address → (host, port); raises
    ValueError naming what is wrong. ADDR must be an IP address (a name could resolve to many)."""
    text = value.strip()
    if not text:
        raise ValueError("an empty address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{value!r}: missing ']' after the IPv6 address")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{value!r}: expected ':PORT' after ']'")
        port_text = rest[1:]
    elif text.count(":") > 1:
        host, port_text = text, ""  # a bare IPv6 address
    else:
        host, _, port_text = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def format_hostport(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_listen(pairs: tuple[HostPort, ...]) -> str:
    """Pairs as one comma-separated string that `parse_listen_list` reads back."""
    return ",".join(format_hostport(h, p) for h, p in pairs)


def parse_listen_list(text: str, default_port: int) -> tuple[HostPort, ...]:
    return tuple(parse_listen(v, default_port) for v in text.split(",") if v.strip())


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1, their IPv4-mapped forms (`::ffff:127.0.0.1`), and `localhost`; an
    IPv6 zone (`%lo`) or surrounding brackets are ignored."""
    name = host.strip("[]").split("%", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def host_of(authority: str) -> str:
    """The host of a `Host` header value (`host`, `host:port`, `[v6]:port`)."""
    text = authority.strip()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    if text.count(":") > 1:
        return text  # a bare IPv6 address
    return text.partition(":")[0]
