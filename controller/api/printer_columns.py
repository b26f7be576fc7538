"""Knative's printer columns per kind (its CRDs' additionalPrinterColumns) and their cell values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from controller.api import eventing, messaging
from controller.api.ages import human_duration, parse_time
from controller.api.jsonpath import JsonPath, parse
from controller.api.naming import GROUP as SERVING_GROUP

ColumnType = Literal["string", "integer", "number", "boolean", "date"]


@dataclass(frozen=True)
class PrinterColumn:
    """One CRD `additionalPrinterColumns` entry: what `kubectl get` shows as a column."""

    name: str
    type: ColumnType
    json_path: str
    priority: int = 0
    """0 shows in `kubectl get`; higher only with `-o wide`."""
    description: str = ""
    path: JsonPath = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", parse(self.json_path))

    def crd(self) -> dict[str, Any]:
        """As a CRD's `additionalPrinterColumns` item."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.priority:
            out["priority"] = self.priority
        if self.description:
            out["description"] = self.description
        return out

    def definition(self) -> dict[str, Any]:
        """As a `meta.k8s.io/v1` Table's column definition (the API server's words for CRDs)."""
        return {
            "name": self.name,
            "type": self.type,
            "format": "",
            "description": self.description
            or f"Custom resource definition column (in JSONPath format): {self.json_path}",
            "priority": self.priority,
        }

    def cell(self, obj: Any, now: datetime) -> Any:
        """The column's value for `obj`: None when the path finds nothing or the wrong type."""
        found = self.path.find(obj)
        if not found or found[0] is None:
            return None
        return typed_cell(self.type, found[0], now)


def typed_cell(column_type: ColumnType, value: Any, now: datetime) -> Any:
    """A found value as the Table cell of a column of `column_type`, as Kubernetes types it."""
    if column_type == "string":
        return _text(value)
    if column_type == "integer":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return int(value)
    if column_type == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    when = parse_time(value) if isinstance(value, str) else None
    if when is None:
        return "<invalid>"
    return human_duration((now - when).total_seconds())


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


_READY = ".status.conditions[?(@.type=='Ready')].status"
_REASON = ".status.conditions[?(@.type=='Ready')].reason"
_EVENTING_READY = '.status.conditions[?(@.type=="Ready")].status'
_EVENTING_REASON = '.status.conditions[?(@.type=="Ready")].reason'
AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")
"""The API server's only column for a CRD that defines none."""


def _serving_ready() -> tuple[PrinterColumn, ...]:
    return (PrinterColumn("Ready", "string", _READY), PrinterColumn("Reason", "string", _REASON))


def _eventing_ready() -> tuple[PrinterColumn, ...]:
    return (
        PrinterColumn("Ready", "string", _EVENTING_READY),
        PrinterColumn("Reason", "string", _EVENTING_REASON),
    )


PRINTER_COLUMNS: dict[tuple[str, str], tuple[PrinterColumn, ...]] = {
    # knative/serving config/core/300-resources/*.yaml
    (SERVING_GROUP, "Service"): (
        PrinterColumn("URL", "string", ".status.url"),
        PrinterColumn("LatestCreated", "string", ".status.latestCreatedRevisionName"),
        PrinterColumn("LatestReady", "string", ".status.latestReadyRevisionName"),
        *_serving_ready(),
    ),
    (SERVING_GROUP, "Configuration"): (
        PrinterColumn("LatestCreated", "string", ".status.latestCreatedRevisionName"),
        PrinterColumn("LatestReady", "string", ".status.latestReadyRevisionName"),
        *_serving_ready(),
    ),
    (SERVING_GROUP, "Revision"): (
        PrinterColumn(
            "Config Name", "string", ".metadata.labels['serving\\.knative\\.dev/configuration']"
        ),
        PrinterColumn(
            "Generation",
            "string",
            ".metadata.labels['serving\\.knative\\.dev/configurationGeneration']",
        ),
        *_serving_ready(),
        PrinterColumn("Actual Replicas", "integer", ".status.actualReplicas"),
        PrinterColumn("Desired Replicas", "integer", ".status.desiredReplicas"),
    ),
    (SERVING_GROUP, "Route"): (PrinterColumn("URL", "string", ".status.url"), *_serving_ready()),
    # knative/eventing config/core/resources/*.yaml and config/channels/in-memory-channel/
    (eventing.GROUP, "Broker"): (
        PrinterColumn("URL", "string", ".status.address.url"),
        AGE,
        *_eventing_ready(),
        PrinterColumn(
            "Class",
            "string",
            ".metadata.annotations.eventing\\.knative\\.dev/broker\\.class",
            priority=1,
        ),
    ),
    (eventing.GROUP, "Trigger"): (
        PrinterColumn("Broker", "string", ".spec.broker"),
        PrinterColumn("Subscriber_URI", "string", ".status.subscriberUri"),
        AGE,
        *_eventing_ready(),
    ),
    (messaging.GROUP, "Channel"): (
        PrinterColumn("URL", "string", ".status.address.url"),
        AGE,
        *_eventing_ready(),
    ),
    (messaging.GROUP, "InMemoryChannel"): (
        PrinterColumn("URL", "string", ".status.address.url"),
        AGE,
        *_eventing_ready(),
    ),
    (messaging.FLINT_GROUP, "RedisChannel"): (
        PrinterColumn("URL", "string", ".status.address.url"),
        AGE,
        *_eventing_ready(),
    ),
    (messaging.GROUP, "Subscription"): (AGE, *_eventing_ready()),
}
"""Each kind's columns after NAME, in its Knative CRD's order (the API server adds NAME)."""


def columns_for(group: str, kind: str) -> tuple[PrinterColumn, ...]:
    """A kind's printer columns; a kind without any gets AGE, as a CRD without any does."""
    return PRINTER_COLUMNS.get((group, kind), (AGE,))
