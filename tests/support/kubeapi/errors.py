"""Kubernetes `Status` failures as the fake raises and serves them, shaped like a real API server's."""

from __future__ import annotations

from typing import Any

from .resources import Resource

JSON = dict[str, Any]


class ApiError(Exception):
    """A request the fake refuses: its HTTP code and the `Status` body a real server would send."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JSON:
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        }
        if self.reason:  # a storage error (500) has none
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(res: Resource, name: str, kind: str | None = None) -> JSON:
    details: JSON = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = kind if kind is not None else res.plural
    return details


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name))


def conflict(res: Resource, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}',
        _details(res, name),
    )


def invalid(res: Resource, name: str, causes: list[JSON]) -> ApiError:
    """422 Invalid: one cause per field, the message joining them as the API server does."""
    summary = "; ".join(f"{c['field']}: {c['message']}" for c in causes)
    if len(causes) > 1:
        summary = "[" + ", ".join(f"{c['field']}: {c['message']}" for c in causes) + "]"
    details = _details(res, name, kind=res.kind)
    details["causes"] = causes
    return ApiError(422, "Invalid", f'{res.kind_qualified} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def cause(reason: str, field: str, message: str) -> JSON:
    return {"reason": reason, "message": message, "field": field}


def too_large(requested: int, current: int) -> ApiError:
    """A list `NotOlderThan` a version the store has not reached (the API server's 504 after its
    wait for the watch cache, which the fake skips)."""
    return ApiError(
        504,
        "Timeout",
        f"Too large resource version: {requested}, current: {current}",
        {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
         "retryAfterSeconds": 1},
    )


def service_unavailable(message: str) -> ApiError:
    """A proxy whose backend cannot be reached (the API server's 503 ServiceUnavailable)."""
    return ApiError(503, "ServiceUnavailable", message)
