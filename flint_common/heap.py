"""Long-lived objects kept out of the cyclic garbage collector's full passes: at 10,000 Services
an informer cache or a worker's routing structures are millions of objects, and a full pass over
them pauses the process for 100-150 ms (measured by loadtests/bench_control_plane: one change's
way to the gateways went from 60 to 175 ms when one fell in it)."""

from __future__ import annotations

import gc


def settle() -> None:
    """Freeze every object alive now (`gc.freeze`): later passes skip them. They are still freed
    by reference counting when dropped (routing entries and API objects hold no cycles); call it
    once what a process keeps for long has just been made: the controller's caches after they are
    listed, a worker's routing structures after a whole snapshot."""
    gc.freeze()
