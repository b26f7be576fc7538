"""Deaf: runs but never listens on $PORT, so tests can see the progress deadline."""

import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("deaf: not listening on purpose", flush=True)
while True:
    time.sleep(1)
