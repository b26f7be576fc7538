"""The API server's error Statuses as the Store protocol's errors (pure: status code and body in)."""

from __future__ import annotations

from typing import Any

import orjson

from controller.store.base import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    Kind,
    NotFound,
    StoreError,
    TooLarge,
)

_BY_CODE: dict[int, type[StoreError]] = {
    400: BadRequest,
    404: NotFound,
    410: Gone,
    422: Invalid,
}


def status_of(body: Any) -> dict[str, Any]:
    """The `Status` object in an error body (text, bytes or an already decoded dict); {} if none."""
    if isinstance(body, dict):
        return body
    if isinstance(body, (bytes, str)) and body:
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    return {}


def _causes(status: dict[str, Any]) -> list[dict[str, Any]]:
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    return [c for c in causes if isinstance(c, dict)] if isinstance(causes, list) else []


def store_error(code: int, body: Any, *, kind: Kind | None = None, name: str = "") -> StoreError:
    """The store error for an HTTP status and its Status body, naming `kind` and `name`.

    409 is `AlreadyExists` or `Conflict` by the Status' reason; 504 with a
    `ResourceVersionTooLarge` cause (or reason) is `TooLarge`; 400/404/410/422 map one to one;
    anything else is a `StoreError` carrying that code. The message is the API server's.
    """
    status = status_of(body)
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "") or f"{kind or 'the API server'}: HTTP {code}"
    cls: type[StoreError] | None
    if code == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif code == 504 and (
        reason == "ResourceVersionTooLarge"
        or any(c.get("reason") == "ResourceVersionTooLarge" for c in _causes(status))
    ):
        cls = TooLarge
    else:
        cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message, kind=kind, name=name)
    err = StoreError(message, kind=kind, name=name)
    err.code = code
    if reason:
        err.reason = reason
    return err
