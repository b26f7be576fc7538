"""A stdlib-only HTTP app for the local runtime's tests; its behaviour is chosen by flags."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONTROL = Path(os.environ.get("CONTROL_DIR", "/nonexistent"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/ready":
            self._reply(503 if (CONTROL / "unready").exists() else 200, b"ready?\n")
        elif self.path == "/live":
            self._reply(500 if (CONTROL / "dead").exists() else 200, b"live?\n")
        elif self.path == "/env":
            self._reply(200, json.dumps(dict(os.environ)).encode())
        else:
            self._reply(200, b"hello\n")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", default="")
    ap.add_argument("--exit-code", type=int)
    ap.add_argument("--no-listen", action="store_true")
    ap.add_argument("--alloc", type=int, default=0)
    ap.add_argument("--fork", action="store_true")
    ap.add_argument("--ignore-term", action="store_true")
    args = ap.parse_args()
    print(f"starting pid={os.getpid()} port={os.environ.get('PORT')}", flush=True)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.fork:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "while True: time.sleep(1)\n",
            ]
        )
        (CONTROL / "grandchild.pid").write_text(str(child.pid))
    if args.alloc:
        print(f"allocating {args.alloc} bytes", flush=True)
        hog = bytearray(args.alloc)
        print(f"allocated {len(hog)} bytes", flush=True)
    if args.exit_code is not None:
        for i in range(30):
            print(f"log line {i}", flush=True)
        print("boom: giving up", file=sys.stderr, flush=True)
        sys.exit(args.exit_code)
    if args.no_listen:
        while True:
            time.sleep(1)
    server = ThreadingHTTPServer((os.environ.get("POD_IP", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
