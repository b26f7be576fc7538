"""`python -m gateway`: the gateway's command line (main process and, internally, its workers)."""

from __future__ import annotations

import sys

from gateway.server import main

if __name__ == "__main__":
    sys.exit(main())
