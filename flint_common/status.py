"""Kubernetes `Status` objects: how every Flint endpoint that speaks the API's language fails."""

from __future__ import annotations

from typing import Any


def failure(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `Status` with `status: Failure` (what kube-apiserver answers for 401, 404, 422, ...)."""
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        out["details"] = details
    return out
