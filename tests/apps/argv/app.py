"""Answers with the argv its process sees (/proc/self/cmdline), for the cmd/args tests (stdlib only)."""

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        with open("/proc/self/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0")[:-1]]
        out = json.dumps({"argv": argv, "revision": os.environ.get("K_REVISION")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:
        pass


HTTPServer((os.environ.get("POD_IP", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
