"""Service-account tokens: TokenRequest issues them, TokenReview checks them (authentication.k8s.io/v1).

Tokens are JWT-shaped (header.claims.signature, HS256 with a key of the fake's own, where a real
server signs RS256 with its service-account key), carrying the claims a real bound token has:
`aud`, `exp`, `iat`, `nbf`, `iss`, `jti`, `sub` and `kubernetes.io` (namespace, service account
name and uid). A review accepts a token whose signature is the fake's, that has not expired by
the fake's clock (`clock.Clock`), whose audiences meet the review's (or the API server's default
audience when the review names none), and whose service account still exists with the same uid.
As a real server, a refused review omits `authenticated` (Go's omitempty on false) and says why
in `status.error`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from . import errors
from .clock import Clock, rfc3339
from .resources import Resource

JSON = dict[str, Any]
ISSUER = "https://kubernetes.default.svc.cluster.local"
"""The issuer and the API server's default audience (`--api-audiences` defaults to the issuer)."""
MIN_EXPIRATION_S = 600
DEFAULT_EXPIRATION_S = 3600
MAX_EXPIRATION_S = 1 << 32
TOKEN_REQUEST = Resource("authentication.k8s.io", "v1", "TokenRequest", "tokenrequests")
"""How 422s name a TokenRequest (it is only ever a subresource of a ServiceAccount)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """Issues and reviews the tokens of one fake."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._key = secrets.token_bytes(32)

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest())

    def request(self, account: JSON, body: JSON) -> JSON:
        """The TokenRequest `body` for ServiceAccount `account`, answered (status.token)."""
        meta = account["metadata"]
        spec = body.get("spec") or {}
        audiences = spec.get("audiences") or [ISSUER]
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
            raise errors.bad_request("spec.audiences must be a list of non-empty strings")
        seconds = spec.get("expirationSeconds")
        seconds = DEFAULT_EXPIRATION_S if seconds is None else seconds
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise errors.bad_request("spec.expirationSeconds must be an integer")
        field = "spec.expirationSeconds"
        if seconds < MIN_EXPIRATION_S:
            raise errors.invalid(TOKEN_REQUEST, meta["name"], [errors.cause(
                "FieldValueInvalid", field,
                f"Invalid value: {seconds}: may not specify a duration less than 10 minutes")])
        if seconds > MAX_EXPIRATION_S:
            raise errors.invalid(TOKEN_REQUEST, meta["name"], [errors.cause(
                "FieldValueInvalid", field,
                f"Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds")])
        now = int(self.clock.now())
        claims = {
            "aud": audiences, "exp": now + seconds, "iat": now, "nbf": now, "iss": ISSUER,
            "jti": str(uuid.uuid4()), "sub": f"system:serviceaccount:{meta['namespace']}:{meta['name']}",
            "kubernetes.io": {"namespace": meta["namespace"],
                              "serviceaccount": {"name": meta["name"], "uid": meta["uid"]}},
        }
        head = _b64(orjson.dumps({"alg": "HS256", "kid": "flint-kubeapi-fake"})) + "." + _b64(
            orjson.dumps(claims))
        return {
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "creationTimestamp": rfc3339(now)},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": None},
            "status": {"token": f"{head}.{self._sign(head)}", "expirationTimestamp": rfc3339(now + seconds)},
        }

    def review(self, body: JSON, account: Callable[[str, str], JSON | None]) -> JSON:
        """The TokenReview `body`, answered; `account(namespace, name)` is a ServiceAccount or None."""
        spec = body.get("spec") or {}
        token = spec.get("token")
        wanted = spec.get("audiences") or [ISSUER]
        status = self._status(token if isinstance(token, str) else "", list(wanted), account)
        return {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    def _status(self, token: str, wanted: list[str], account: Callable[[str, str], JSON | None]) -> JSON:
        def refused(why: str) -> JSON:
            return {"user": {}, "error": f"[invalid bearer token, {why}]"}

        parts = token.split(".")
        if len(parts) != 3 or not hmac.compare_digest(self._sign(f"{parts[0]}.{parts[1]}"), parts[2]):
            return refused("token lookup failed")
        claims = orjson.loads(_unb64(parts[1]))
        if self.clock.now() >= claims["exp"]:
            return refused("service account token has expired")
        audiences = [a for a in claims["aud"] if a in wanted]
        if not audiences:
            return refused(f"token audiences {orjson.dumps(claims['aud']).decode()} is invalid for "
                           f"the target audiences {orjson.dumps(wanted).decode()}")
        bound = claims["kubernetes.io"]
        namespace, name = bound["namespace"], bound["serviceaccount"]["name"]
        live = account(namespace, name)
        if live is None:
            return refused(f'service account {namespace}/{name} has been deleted')
        if live["metadata"]["uid"] != bound["serviceaccount"]["uid"]:
            return refused(f"service account UID ({live['metadata']['uid']}) does not match claim "
                           f"({bound['serviceaccount']['uid']})")
        return {
            "authenticated": True,
            "user": {"username": claims["sub"], "uid": live["metadata"]["uid"],
                     "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                "system:authenticated"],
                     "extra": {"authentication.kubernetes.io/credential-id": [f"JTI={claims['jti']}"]}},
            "audiences": audiences,
        }
