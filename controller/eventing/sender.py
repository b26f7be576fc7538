"""One delivery attempt over HTTP: the request a subscriber gets and what its answer means.

Subscribers are usually Flint services: their URLs (`http://hello.default.localhost:8080`) name
hosts that Python does not resolve, so requests to the cluster domain go to the gateway's
address with the URL's host in the `Host` header; the gateway routes them (and scales a
service at zero up) like any request. Other URLs are used as they are.

Outcome of an attempt (`Outcome`), as the issue and Knative define it:

* 2xx with an empty body, or 202 whatever the body: delivered;
* 2xx with a CloudEvent (binary or structured): delivered, with a reply. The reply is decoded by
  the ingress's codec, so the same rules hold: a binary reply's body is opaque data, kept byte for
  byte even when its Content-Type says JSON and it does not parse;
* 2xx with a body that is not a CloudEvent: a failure (counted as 502, like Knative's filter);
* any other status, a timeout or a connection error: a failure with that status (None: none).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from flint_common.cloudevents.codec import (
    CONTENT_TYPE_STRUCTURED,
    CloudEventError,
    Event,
    NotACloudEvent,
    decode_http,
)

__all__ = ["Outcome", "Sender"]

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""Largest subscriber answer read (a reply event); a longer one is a failure."""


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None
    """The HTTP status (None: no response: connection error or timeout); 502 for a 2xx whose
    body is not an event."""
    reply: Event | None = None
    retry_after: str | None = None
    body: bytes = b""
    detail: str = ""


class Sender:
    """Posts events; owns the HTTP client session."""

    def __init__(self, *, domain: str, gateway: str) -> None:
        self.domain = domain.lower()
        self.domains = tuple(d.strip().lower() for d in self.domain.split(",") if d.strip())
        """Where URLs go through the gateway: `domain`, or several comma-separated (Routes under
        other domains by `config-domain`)."""
        self.gateway = urlsplit(gateway)
        self._session: aiohttp.ClientSession | None = None

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300),
                auto_decompress=False,
            )
        return self._session

    def target(self, url: str) -> tuple[str, str | None]:
        """(URL to connect to, Host header to send or None) for a destination URL."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if any(host == d or host.endswith("." + d) for d in self.domains):
            netloc = parts.netloc.rpartition("@")[2]
            return urlunsplit(
                (self.gateway.scheme, self.gateway.netloc, parts.path or "/", parts.query, "")
            ), netloc
        return url, None

    async def send(
        self, url: str, event: Event, *, structured: bool, timeout_s: float, prefer_reply: bool = True
    ) -> Outcome:
        if structured:
            headers: dict[str, str] = {"Content-Type": CONTENT_TYPE_STRUCTURED}
            body = event.to_structured()
        else:
            raw_headers, body = event.to_binary()
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
        if prefer_reply:
            headers["Prefer"] = "reply"
        target, host = self.target(url)
        if host is not None:
            headers["Host"] = host
        try:
            async with self._session_().post(
                target,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as resp:
                payload = await resp.content.read(MAX_RESPONSE_BYTES + 1)
                if len(payload) > MAX_RESPONSE_BYTES:
                    return Outcome(False, 502, detail="the response body is too large")
                return _outcome(resp.status, list(resp.raw_headers), payload, resp.headers.get("Retry-After"))
        except TimeoutError:
            return Outcome(False, None, detail=f"no response within {timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(False, None, detail=f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            raise

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _outcome(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, retry_after: str | None
) -> Outcome:
    if not 200 <= status < 300:
        return Outcome(
            False, status, retry_after=retry_after, body=body, detail=f"the subscriber answered {status}"
        )
    has_ce = any(k.lower() == b"ce-specversion" for k, _ in headers)
    if status == 202 or (not body and not has_ce):
        return Outcome(True, status)
    try:
        events = decode_http(headers, body, max_event_bytes=MAX_RESPONSE_BYTES)
    except NotACloudEvent:
        return Outcome(False, 502, body=body, detail=f"{status} with a body that is not a CloudEvent")
    except CloudEventError as exc:
        return Outcome(False, 502, body=body, detail=f"{status} with an invalid reply event: {exc.message}")
    if len(events) != 1:
        return Outcome(
            False, 502, body=body, detail=f"{status} with a batch of {len(events)} events as reply"
        )
    return Outcome(True, status, reply=events[0])
