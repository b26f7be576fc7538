"""Which controller the gateway's link tries next, and how long it waits first (pure).

The link knows one controller URL or several (each replica's, or the cluster's one leader
Service). A link that served and then ended is tried again at once on the same controller (a
restart, a blip). A failed attempt moves on to the next controller after the shortest pause, so
the leader is found within one pass over the list; a pass that found no leader ends with the
exponential backoff (`flint_common.backoff`), capped lower when a controller answered as a
standby during it: an election is under way and its winner will lead within a retry period or
two, so the link looks for it every second rather than every five.
"""

from __future__ import annotations

from flint_common.backoff import backoff_delay

__all__ = ["FIRST_S", "MAX_S", "STANDBY_MAX_S", "Failover"]

FIRST_S = 0.1
"""First pause after a failure (and between the controllers of one pass)."""
MAX_S = 5.0
"""Longest pause between passes when no controller answered."""
STANDBY_MAX_S = 1.0
"""Longest pause between passes when a standby answered (`NOT_LEADER`)."""


class Failover:
    """The link's next controller (`index`) and pause (`served` / `failed` return it)."""

    __slots__ = ("_count", "_passes", "_standby", "_tried", "index")

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("the link needs at least one controller URL")
        self._count = count
        self.index = 0
        """Of the URLs, the one tried next."""
        self._tried = 0
        """Failed attempts since a link last served."""
        self._passes = 0
        """Passes over every URL that found no leader, in a row."""
        self._standby = False
        """A standby answered in the current pass."""

    def served(self) -> float:
        """A link served, then ended: the same controller again, soon."""
        self._tried = self._passes = 0
        self._standby = False
        return FIRST_S

    def failed(self, *, standby: bool = False) -> float:
        """An attempt failed (`standby`: the controller is not the leader): the pause before the
        next one, which is on the next controller."""
        self._tried += 1
        self._standby = self._standby or standby
        self.index = (self.index + 1) % self._count
        if self._tried % self._count:
            return FIRST_S  # the rest of this pass first
        cap = STANDBY_MAX_S if self._standby else MAX_S
        self._standby = False
        delay = backoff_delay(FIRST_S, cap, self._passes)
        self._passes += 1
        return delay
