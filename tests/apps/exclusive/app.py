"""Exclusive: answers 500 whenever it sees two requests at once, so tests can prove a limit of 1."""

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 drops connections in a burst
    daemon_threads = True

_lock = threading.Lock()
_active = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out in separate writes

    def do_GET(self) -> None:
        global _active
        with _lock:
            _active += 1
            overlap = _active > 1
        try:
            time.sleep(0.02)
            body = (b"overlap\n" if overlap else b"ok " + os.environ.get("K_REVISION", "").encode() + b"\n")
            self.send_response(500 if overlap else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with _lock:
                _active -= 1

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = Server((os.environ.get("POD_IP", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
