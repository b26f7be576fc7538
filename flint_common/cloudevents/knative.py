"""The extension attributes a Knative broker stamps on the events it stores, and its dispatcher reads."""

from __future__ import annotations

DEFAULT_TTL = 255
"""Knative's `knativebrokerttl` for an event entering a broker without one."""
TTL_ATTR = "knativebrokerttl"
"""Hops an event may still make through brokers: the ingress defaults and checks it, the
dispatcher decrements it on a reply."""
ARRIVAL_ATTR = "knativearrivaltime"
"""When the broker's ingress accepted the event (RFC 3339, UTC)."""
