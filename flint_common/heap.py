"""Long-lived objects kept out of the cyclic garbage collector's full passes: at 10,000 Services
an informer cache or a worker's routing structures are millions of objects, and a full pass over
them pauses the process for 100-150 ms (measured by loadtests/bench_control_plane: one change's
way to the gateways went from 60 to 175 ms when one fell in it)."""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect what is garbage now, then freeze every object still alive (`gc.freeze`): later
    passes skip them. Frozen objects are still freed by reference counting when dropped, but a
    frozen cycle that dies is never collected, so call it once per process, when what it keeps
    for long has just been made: the controller's caches once listed, a worker's routing
    structures after its first whole snapshot (not after every one: in-flight requests' cycles
    would pile up). A process's entry point calls it, never a library: in a test process it
    would freeze the test runner's heap too."""
    gc.collect()
    gc.freeze()
