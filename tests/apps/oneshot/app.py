"""Oneshot: serves in its first life only; every later start exits at once (the file named by
$MARKER records the first life), so tests can crash a revision's wake-up from zero."""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 drops connections in a burst
    daemon_threads = True

marker = os.environ["MARKER"]
if os.path.exists(marker):
    print("oneshot: second life, exiting with code 4", flush=True)
    sys.exit(4)
with open(marker, "w") as f:
    f.write("first life\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out in separate writes

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
server = Server((os.environ.get("POD_IP", "127.0.0.1"), int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
