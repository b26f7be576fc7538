"""Hello: answers with its revision and $TARGET. Standard library only, so any python3 runs it."""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 drops connections in a burst
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out in separate writes
    server_version = "hello"

    def do_GET(self) -> None:
        target = os.environ.get("TARGET", "World")
        revision = os.environ.get("K_REVISION", "unknown")
        if self.path.startswith("/json"):
            body = json.dumps({"target": target, "revision": revision}).encode()
            ctype = "application/json"
        else:
            body = f"Hello {target}! (revision {revision})\n".encode()
            ctype = "text/plain; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"hello listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
