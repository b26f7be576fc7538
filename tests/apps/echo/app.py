"""Echo: answers with its env, the request's headers and body, for end-to-end tests (stdlib only)."""

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

UMASK = os.umask(0o022)  # the umask the replica was started with (read by setting it, then put back)
os.umask(UMASK)


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 drops connections in a burst
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out in separate writes

    def _answer(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        delay = float(query.get("delay", ["0"])[0])
        if delay:
            time.sleep(delay)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        data = {
            "revision": os.environ.get("K_REVISION"),
            "service": os.environ.get("K_SERVICE"),
            "configuration": os.environ.get("K_CONFIGURATION"),
            "port": os.environ.get("PORT"),
            "env": {k: v for k, v in os.environ.items() if k in ("TARGET", "HOME", "TMPDIR", "PATH")},
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_length": len(body),
            "pid": os.getpid(),
            "umask": UMASK,
        }
        out = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = Server((os.environ.get("POD_IP", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("echo ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
