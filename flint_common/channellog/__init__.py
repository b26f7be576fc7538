"""The channel log as its writer (a gateway worker) and its reader (the dispatcher) share it."""
