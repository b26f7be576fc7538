"""Who may use the gateway link and the dispatch plan on Kubernetes: TokenReview verdicts, cached (pure).

On the Kubernetes engine, gateway and dispatcher pods present a projected service-account token
(audience `flint-controller`) instead of the owner's token. `controller.link_auth` asks the API
server about it with a TokenReview; this module decides from the review's `status` (`decide`)
and keeps the verdicts (`ReviewCache`), keyed by a SHA-256 of the token, never the token itself.
Time is passed in (monotonic seconds), so the policy is tested without sockets or sleeps.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

AUDIENCE = "flint-controller"
"""The audience of the projected tokens gateway and dispatcher pods present."""
GATEWAY_ACCOUNT = "system:serviceaccount:flint-system:flint-gateway"
DISPATCHER_ACCOUNT = "system:serviceaccount:flint-system:flint-dispatcher"


@dataclass(frozen=True)
class LinkAuthSettings:
    """How the Kubernetes engine's controller accepts service-account tokens on the gateway link
    and the dispatch plan (`controller.link_auth`; the owner's token is accepted there too)."""

    audience: str = AUDIENCE
    """The audience a token must be bound to (the TokenReview's `spec.audiences`; the review's
    `status.audiences` must contain it). The pods' projected volumes name it."""
    gateway_accounts: tuple[str, ...] = (GATEWAY_ACCOUNT,)
    """The users (`system:serviceaccount:<namespace>:<name>`) whose tokens open a gateway link;
    any other authenticated user is refused there (401)."""
    dispatcher_accounts: tuple[str, ...] = (DISPATCHER_ACCOUNT,)
    """The users whose tokens poll the dispatch plan (a gateway's may not, nor a dispatcher's
    open a link: it could announce itself as a gateway and a peer)."""
    max_reviews: int = 32
    """TokenReviews under way at once; a token that would start one more is answered 503 (a
    flood of made-up tokens must not crowd the API server or the controller's connections)."""
    allowed_ttl_s: float = 60.0
    """Seconds an accepted token is believed without a new review (never past the token's own
    `exp` when it is a JWT): a revoked token (its pod or service account deleted) still links
    for at most this long."""
    refused_ttl_s: float = 5.0
    """Seconds a refused token is refused without a new review (a burst of retries costs one)."""
    cache_entries: int = 1024
    """Most verdicts kept (the oldest go first); one per token seen within the TTLs."""
    review_timeout_s: float = 10.0
    """Total timeout of one TokenReview request (seconds); a review that takes longer is a 503."""
    retry_after_s: int = 5
    """`Retry-After` of the 503 answered while the API server cannot review (seconds)."""

    def __post_init__(self) -> None:
        if not self.audience:
            raise ValueError("link_auth.audience must not be empty")
        for name in ("allowed_ttl_s", "refused_ttl_s", "review_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"link_auth.{name} must be above 0, not {getattr(self, name)}")
        if self.cache_entries < 1 or self.retry_after_s < 1 or self.max_reviews < 1:
            raise ValueError("link_auth.cache_entries, retry_after_s and max_reviews must be at least 1")

    @property
    def service_accounts(self) -> tuple[str, ...]:
        """Every account accepted on one path or the other."""
        return self.gateway_accounts + self.dispatcher_accounts


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    """The API server answered: not this audience, not an allowed account, not authenticated."""
    UNAVAILABLE = "unavailable"
    """No answer could be had (unreachable, 5xx, timeout, forbidden to review): try again."""


@dataclass(frozen=True)
class Verdict:
    """A decision about one token. `why` names the rule, never the token (it may be logged)."""

    outcome: Outcome
    why: str
    user: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOWED


def token_key(token: str) -> str:
    """What the cache keys a token by: its SHA-256 (hex), so the token is never held there."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def decide(status: Mapping[str, Any], settings: LinkAuthSettings) -> Verdict:
    """The verdict on a TokenReview's `status` (its JSON, as the API server wrote it)."""
    if status.get("authenticated") is not True:
        error = status.get("error")
        reason = "the API server did not authenticate the token"
        # The API server's error names the rule (expired, wrong audience), not the token.
        return Verdict(Outcome.REFUSED, f"{reason}: {str(error)[:200]}" if error else reason)
    audiences = status.get("audiences")
    if not isinstance(audiences, list) or settings.audience not in audiences:
        return Verdict(Outcome.REFUSED, f"the token is not bound to the audience {settings.audience}")
    user = status.get("user")
    username = user.get("username") if isinstance(user, Mapping) else None
    if not isinstance(username, str) or username not in settings.service_accounts:
        who = username if isinstance(username, str) else "an unnamed user"
        return Verdict(Outcome.REFUSED, f"{who[:200]} is not one of the accepted service accounts "
                       f"({', '.join(settings.service_accounts)})")
    return Verdict(Outcome.ALLOWED, "reviewed", username)


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT-shaped token, unverified (the TokenReview verifies); None if it is not
    one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim (seconds since the epoch) of a JWT-shaped token, unverified; None if it is
    not one. Used only to keep a reviewed verdict no longer than the token lives."""
    exp = (jwt_claims(token) or {}).get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def prescreen(token: str, settings: LinkAuthSettings) -> Verdict | None:
    """A refusal that needs no TokenReview: the token is no JWT (projected service-account
    tokens are), or it names audiences and not ours. None: ask the API server."""
    claims = jwt_claims(token)
    if claims is None:
        return Verdict(Outcome.REFUSED, "the token is not a service-account token (a JWT)")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if audiences is not None and settings.audience not in audiences:
        return Verdict(Outcome.REFUSED, f"the token is not bound to the audience {settings.audience}")
    return None


@dataclass(frozen=True, slots=True)
class _Entry:
    verdict: Verdict
    until: float


class ReviewCache:
    """Verdicts by token key until they expire: accepted ones `allowed_ttl_s` (or until the token
    expires, whichever is first), refused ones `refused_ttl_s`; UNAVAILABLE is never kept (the
    next request asks again). `now` is monotonic seconds, passed in."""

    def __init__(self, settings: LinkAuthSettings) -> None:
        self._settings = settings
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> Verdict | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.until:
            del self._entries[key]
            return None
        return entry.verdict

    def put(self, key: str, verdict: Verdict, now: float, *, lives_s: float | None = None) -> None:
        """Keep `verdict`; `lives_s` is what is left of the token's life, when known."""
        if verdict.outcome is Outcome.UNAVAILABLE:
            return
        ttl = self._settings.allowed_ttl_s if verdict.allowed else self._settings.refused_ttl_s
        if lives_s is not None:
            ttl = min(ttl, lives_s)
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries.pop(key, None)  # re-inserted last: the dict's order is the age order
        self._entries[key] = _Entry(verdict, now + ttl)
        self._evict(now)

    def _evict(self, now: float) -> None:
        if len(self._entries) <= self._settings.cache_entries:
            return
        for key in [k for k, e in self._entries.items() if now >= e.until]:
            del self._entries[key]
        while len(self._entries) > self._settings.cache_entries:
            del self._entries[next(iter(self._entries))]
