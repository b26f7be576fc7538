"""Crasher: prints a line and exits with code 3, so tests can see ContainerHealthy=False."""

import sys

print("crasher: about to fail on purpose", flush=True)
sys.exit(3)
