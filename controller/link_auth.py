"""The Kubernetes engine's second way onto the gateway link and the dispatch plan: TokenReviews.

`TokenReviewer` asks the API server (`api_review`: `POST /apis/authentication.k8s.io/v1/tokenreviews`,
through kubernetes-asyncio) about a bearer token that is not the owner's, keeps the verdicts
(`controller.tokenreview.ReviewCache`) and lets concurrent requests with the same token share one
review in flight. `link_authenticator` turns a verdict into what `flint_common.httpauth`'s
`alternate` hook answers: through (None), 401 (refused) or 503 with `Retry-After` (no review could
be had: the client retries). No token is ever logged or put in an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from kubernetes_asyncio import client

from controller.tokenreview import (
    LinkAuthSettings,
    Outcome,
    ReviewCache,
    Verdict,
    decide,
    jwt_expiry,
    prescreen,
    token_key,
)
from flint_common.httpauth import AlternateAuth, unauthorized
from flint_common.status import failure

log = logging.getLogger(__name__)


Review = Callable[[str], Awaitable[Verdict]]
"""Asks about one token (`api_review`; tests script it)."""


class TokenReviewer:
    """Verdicts on bearer tokens by TokenReview, cached and single-flight per token."""

    def __init__(
        self,
        review: Review,
        settings: LinkAuthSettings,
        *,
        now: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._review = review
        self.settings = settings
        self.cache = ReviewCache(settings)
        self._now, self._wall = now, wall
        self._in_flight: dict[str, asyncio.Task[Verdict]] = {}
        self.reviews = 0
        """TokenReviews asked so far (a cached or shared verdict asks none)."""

    async def verdict(self, token: str) -> Verdict:
        key = token_key(token)
        cached = self.cache.get(key, self._now())
        if cached is not None:
            return cached
        task = self._in_flight.get(key)
        if task is None:
            if len(self._in_flight) >= self.settings.max_reviews:
                return Verdict(Outcome.UNAVAILABLE, "too many TokenReviews under way")
            task = asyncio.create_task(self._review_and_keep(key, token), name="token-review")
            self._in_flight[key] = task
            task.add_done_callback(lambda _t: self._in_flight.pop(key, None))
        # shielded: a client that goes away does not cancel the review the others wait for
        return await asyncio.shield(task)

    async def _review_and_keep(self, key: str, token: str) -> Verdict:
        self.reviews += 1
        verdict = await self._review(token)
        exp = jwt_expiry(token)
        self.cache.put(key, verdict, self._now(), lives_s=None if exp is None else exp - self._wall())
        return verdict


def api_review(api: client.ApiClient, settings: LinkAuthSettings) -> Review:
    """A TokenReview on the API server `api` talks to, for tokens bound to `settings.audience`."""
    authentication: Any = client.AuthenticationV1Api(api)  # called raw, below
    timeout = aiohttp.ClientTimeout(total=settings.review_timeout_s)

    async def review(token: str) -> Verdict:
        early = prescreen(token, settings)
        if early is not None:
            return early
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [settings.audience]}}
        try:
            # raw (`_preload_content=False`), as the store's calls: the status and body are
            # read here, and kubernetes-asyncio neither raises nor debug-logs the answer
            response = await authentication.create_token_review(
                body, _preload_content=False, _request_timeout=timeout)
            try:
                data = await response.read()
            finally:
                response.release()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # never %r of a client error: it may carry the request (its body holds the token)
            return Verdict(Outcome.UNAVAILABLE, f"the API server could not be reached "
                           f"({type(exc).__name__})")
        if not 200 <= response.status < 300:
            # 5xx, 429, and 403 (the controller may not create tokenreviews: its RBAC) are
            # failures to review, not verdicts on the token
            return Verdict(Outcome.UNAVAILABLE, f"the TokenReview was answered {response.status}")
        try:
            status = orjson.loads(data).get("status") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return Verdict(Outcome.UNAVAILABLE, "the TokenReview's answer is not a JSON object")
        return decide(status if isinstance(status, dict) else {}, settings)

    return review


def link_authenticator(reviewer: TokenReviewer,
                       path_accounts: Mapping[str, Collection[str]] | None = None) -> AlternateAuth:
    """The `alternate` of `flint_common.httpauth.auth_middleware` for the link and the plan;
    `path_accounts`: the accounts each path accepts (a path not named accepts every reviewed
    one)."""
    retry_after = str(reviewer.settings.retry_after_s)
    accounts = dict(path_accounts or {})

    async def check(token: str, request: web.Request) -> web.StreamResponse | None:
        verdict = await reviewer.verdict(token)
        if verdict.allowed:
            allowed = accounts.get(request.path)
            if allowed is None or verdict.user in allowed:
                return None
            log.warning("event=token_refused path=%s why=%s may not use this path",
                        request.path, verdict.user[:200])
            return unauthorized()
        if verdict.outcome is Outcome.UNAVAILABLE:
            log.warning("event=token_review_unavailable path=%s why=%s retry_after_s=%s",
                        request.path, verdict.why, retry_after)
            return web.Response(
                status=503, content_type="application/json", headers={"Retry-After": retry_after},
                body=orjson.dumps(failure(
                    503, "ServiceUnavailable",
                    f"the service-account token could not be reviewed ({verdict.why}): "
                    f"retry in {retry_after} s")))
        log.warning("event=token_refused path=%s why=%s", request.path, verdict.why)
        return unauthorized()

    return check
