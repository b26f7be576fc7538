"""Burner: each request burns CPU for `?ms=` milliseconds (default 200), so tests can drive the
HPA class by CPU."""

import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 drops connections in a burst
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out in separate writes

    def do_GET(self) -> None:
        ms = float(parse_qs(urlparse(self.path).query).get("ms", ["200"])[0])
        end = time.process_time() + ms / 1000
        n = 0
        while time.process_time() < end:
            n += 1
        body = f"burned {ms:.0f} ms ({n} loops) in {os.environ.get('K_REVISION')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
server = Server((os.environ.get("POD_IP", "127.0.0.1"), int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
