"""Service-account tokens on the link: the verdict on a TokenReview, the cache's TTLs and bound,
and the reviewer sharing one review per token in flight (no sockets; time passed in)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from controller.link_auth import TokenReviewer, link_authenticator
from controller.tokenreview import (
    DISPATCHER_ACCOUNT,
    GATEWAY_ACCOUNT,
    LinkAuthSettings,
    Outcome,
    ReviewCache,
    Verdict,
    decide,
    jwt_expiry,
    prescreen,
    token_key,
)

S = LinkAuthSettings()
OK = {"authenticated": True, "audiences": ["flint-controller"],
      "user": {"username": GATEWAY_ACCOUNT, "uid": "u1", "groups": ["system:serviceaccounts"]}}
ALLOWED = Verdict(Outcome.ALLOWED, "reviewed", GATEWAY_ACCOUNT)
REFUSED = Verdict(Outcome.REFUSED, "no")
UNAVAILABLE = Verdict(Outcome.UNAVAILABLE, "down")


def test_an_authenticated_review_of_an_accepted_account_and_audience_is_allowed() -> None:
    assert decide(OK, S) == ALLOWED
    dispatcher = {**OK, "user": {"username": DISPATCHER_ACCOUNT}}
    assert decide(dispatcher, S).allowed


@pytest.mark.parametrize(("status", "why"), [
    ({"user": {}, "error": "[invalid bearer token, service account token has expired]"}, "expired"),
    ({**OK, "authenticated": False}, "did not authenticate"),
    ({**OK, "audiences": ["https://kubernetes.default.svc.cluster.local"]}, "audience flint-controller"),
    ({**OK, "audiences": None}, "audience"),
    ({**OK, "user": {"username": "system:serviceaccount:flint-system:default"}},
     "system:serviceaccount:flint-system:default is not one of the accepted"),
    ({**OK, "user": {"username": "system:serviceaccount:other:flint-gateway"}}, "not one of"),
    ({**OK, "user": None}, "an unnamed user"),
])
def test_anything_else_is_refused_saying_which_rule(status: dict[str, Any], why: str) -> None:
    verdict = decide(status, S)
    assert verdict.outcome is Outcome.REFUSED and why in verdict.why


def test_the_accepted_accounts_and_audience_are_settings() -> None:
    mine = LinkAuthSettings(audience="mine", gateway_accounts=("system:serviceaccount:a:b",))
    assert decide({**OK, "audiences": ["mine"], "user": {"username": "system:serviceaccount:a:b"}},
                  mine).allowed
    assert not decide(OK, mine).allowed
    with pytest.raises(ValueError, match="allowed_ttl_s"):
        LinkAuthSettings(allowed_ttl_s=0)


def test_the_cache_keys_by_a_hash_and_keeps_verdicts_for_their_ttl() -> None:
    cache = ReviewCache(S)
    key = token_key("a-token")
    assert "a-token" not in key and len(key) == 64 and key == token_key("a-token")
    cache.put(key, ALLOWED, now=100.0)
    assert cache.get(key, 159.9) == ALLOWED
    assert cache.get(key, 160.0) is None  # allowed_ttl_s 60
    cache.put(key, REFUSED, now=200.0)
    assert cache.get(key, 204.9) == REFUSED
    assert cache.get(key, 205.0) is None  # refused_ttl_s 5
    assert len(cache) == 0


def test_unavailable_is_never_kept_and_replaces_nothing_older() -> None:
    cache = ReviewCache(S)
    cache.put("k", UNAVAILABLE, now=0.0)
    assert cache.get("k", 0.0) is None
    cache.put("k", REFUSED, now=0.0)
    cache.put("k", UNAVAILABLE, now=1.0)
    assert cache.get("k", 1.0) == REFUSED


def test_an_allowed_verdict_lives_no_longer_than_its_token() -> None:
    cache = ReviewCache(S)
    cache.put("k", ALLOWED, now=0.0, lives_s=10.0)
    assert cache.get("k", 9.9) == ALLOWED and cache.get("k", 10.0) is None
    cache.put("k", ALLOWED, now=0.0, lives_s=-1.0)  # already expired: not kept
    assert cache.get("k", 0.0) is None
    cache.put("k", ALLOWED, now=0.0, lives_s=3600.0)  # the TTL still bounds it
    assert cache.get("k", 60.0) is None


def test_the_cache_is_bounded_dropping_the_expired_then_the_oldest() -> None:
    cache = ReviewCache(LinkAuthSettings(cache_entries=3))
    cache.put("refused", REFUSED, now=0.0)
    for i in range(3):
        cache.put(f"k{i}", ALLOWED, now=10.0 + i)
    assert len(cache) == 3 and cache.get("refused", 13.0) is None  # expired went first
    cache.put("k3", ALLOWED, now=14.0)
    assert len(cache) == 3 and cache.get("k0", 14.0) is None and cache.get("k3", 14.0) == ALLOWED


def jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def test_the_expiry_of_a_jwt_is_read_and_anything_else_has_none() -> None:
    assert jwt_expiry(jwt({"exp": 1700000000, "aud": ["flint-controller"]})) == 1700000000.0
    for token in ("opaque", "a.b", "a.!!!.c", jwt({"aud": "x"}), jwt({"exp": "soon"}), jwt({"exp": True})):
        assert jwt_expiry(token) is None, token


class Scripted(TokenReviewer):
    """A reviewer whose TokenReviews are answered by the test (held until `release` is set)."""

    def __init__(self, answers: list[Verdict], now: list[float], wall: float = 0.0) -> None:
        super().__init__(self._answer, S, now=lambda: now[0], wall=lambda: wall)
        self.answers = answers
        self.release = asyncio.Event()
        self.release.set()

    async def _answer(self, token: str) -> Verdict:
        await self.release.wait()
        return self.answers.pop(0)


async def test_concurrent_requests_with_one_token_share_one_review() -> None:
    reviewer = Scripted([ALLOWED, REFUSED], now=[0.0])
    reviewer.release.clear()
    waiting = [asyncio.create_task(reviewer.verdict("t")) for _ in range(5)]
    other = asyncio.create_task(reviewer.verdict("u"))
    await asyncio.sleep(0)
    waiting[0].cancel()  # a client going away cancels its wait, not the shared review
    reviewer.release.set()
    assert [await w for w in waiting[1:]] == [ALLOWED] * 4
    assert await other == REFUSED
    assert reviewer.reviews == 2
    assert await reviewer.verdict("t") == ALLOWED and reviewer.reviews == 2  # cached


async def test_verdicts_are_reviewed_again_once_they_expire_and_unavailable_at_once() -> None:
    now = [0.0]
    reviewer = Scripted([REFUSED, ALLOWED, UNAVAILABLE, ALLOWED], now=now)
    assert await reviewer.verdict("t") == REFUSED
    now[0] = 4.9
    assert await reviewer.verdict("t") == REFUSED and reviewer.reviews == 1
    now[0] = 5.0
    assert await reviewer.verdict("t") == ALLOWED and reviewer.reviews == 2
    now[0] = 65.0
    assert await reviewer.verdict("t") == UNAVAILABLE
    assert await reviewer.verdict("t") == ALLOWED and reviewer.reviews == 4


async def test_a_jwt_is_not_believed_past_its_exp() -> None:
    now = [0.0]
    reviewer = Scripted([ALLOWED, REFUSED], now=now, wall=1000.0)
    token = jwt({"exp": 1010})
    assert await reviewer.verdict(token) == ALLOWED
    now[0] = 10.0  # the token's exp, by the wall clock then: 1010
    assert await reviewer.verdict(token) == REFUSED and reviewer.reviews == 2


async def test_the_authenticator_answers_401_or_503_with_retry_after() -> None:
    request = make_mocked_request("GET", "/internal/gateway/link")
    check = link_authenticator(Scripted([ALLOWED, REFUSED, UNAVAILABLE], now=[0.0]))
    assert await check("a", request) is None
    refused = await check("b", request)
    assert isinstance(refused, web.Response) and refused.status == 401
    assert refused.body is not None and b'"reason":"Unauthorized"' in bytes(refused.body)  # type: ignore[arg-type]
    busy = await check("c", request)
    assert isinstance(busy, web.Response) and busy.status == 503
    assert busy.headers["Retry-After"] == str(S.retry_after_s)
    body = orjson.loads(bytes(busy.body))  # type: ignore[arg-type]
    assert body["kind"] == "Status" and body["reason"] == "ServiceUnavailable" and "down" in body["message"]


def test_what_is_no_service_account_token_is_refused_without_asking() -> None:
    assert prescreen("not-a-jwt", S) == Verdict(
        Outcome.REFUSED, "the token is not a service-account token (a JWT)")
    other = prescreen(jwt({"aud": ["https://kubernetes.default.svc"]}), S)
    assert other is not None and other.outcome is Outcome.REFUSED and S.audience in other.why
    assert prescreen(jwt({"aud": [S.audience], "exp": 1}), S) is None  # the API server decides
    assert prescreen(jwt({"sub": "x"}), S) is None


async def test_a_flood_of_distinct_tokens_gets_503s_past_the_bound_of_reviews_under_way() -> None:
    gate = asyncio.Event()

    async def slow(_token: str) -> Verdict:
        await gate.wait()
        return ALLOWED

    reviewer = TokenReviewer(slow, LinkAuthSettings(max_reviews=2))
    first = [asyncio.create_task(reviewer.verdict(f"t{i}")) for i in range(2)]
    await asyncio.sleep(0)
    third = await reviewer.verdict("t2")
    assert third.outcome is Outcome.UNAVAILABLE
    gate.set()
    assert [await t for t in first] == [ALLOWED, ALLOWED]
    assert reviewer.reviews == 2  # the third never reached the API server


async def test_a_reviewed_account_is_let_through_only_on_its_own_path() -> None:
    check = link_authenticator(Scripted([ALLOWED, ALLOWED], now=[0.0]),
                               {"/link": ("system:serviceaccount:x:other",)})
    refused = await check("a", make_mocked_request("GET", "/link"))
    assert isinstance(refused, web.Response) and refused.status == 401
    assert await check("b", make_mocked_request("GET", "/elsewhere")) is None
