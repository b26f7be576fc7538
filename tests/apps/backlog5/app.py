"""A thread-per-request app with the stdlib's defaults: an accept backlog of 5, HTTP/1.0 (one
request per connection). Many real apps look like this to a proxy (Flask's development server,
gunicorn with sync workers); a burst must not turn into 502s (stdlib only)."""

import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Server(ThreadingHTTPServer):
    request_queue_size = 5  # the stdlib's default, spelled out: the point of this app
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        delay = float(query.get("delay", ["0.005"])[0])
        if delay:
            time.sleep(delay)  # a little work, holding a thread
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(0.005)
        answer = b"got %d bytes ending %s\n" % (len(body), body[-8:])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = Server((os.environ.get("POD_IP", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
