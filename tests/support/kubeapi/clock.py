"""The fake's clock: timestamps as the API server writes them (RFC 3339, UTC, whole seconds), and
a `Clock` tests can move forward (`KubeApiFake.advance_clock`) so that issued tokens expire."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    """Wall-clock seconds since the epoch, plus what tests advanced it by."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds
