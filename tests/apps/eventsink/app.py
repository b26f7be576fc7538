"""Event sink: records every CloudEvent it receives to $SINK_FILE (JSON lines), for e2e tests.

Behaviour by environment: FAIL_EVERY=N answers 503 to every Nth request of this process;
REPLY_TYPE=T answers each event with a reply event of type T (binary mode); DELAY_S=S waits S
seconds before recording and answering each request (deliveries stay in flight). stdlib only.
"""

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
COUNT = [0]


class Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        delay = float(os.environ.get("DELAY_S") or 0)
        if delay:
            time.sleep(delay)  # a handler thread of its own
        with LOCK:
            COUNT[0] += 1
            n = COUNT[0]
        every = int(os.environ.get("FAIL_EVERY") or 0)
        if every and n % every == 0:
            self._send(503, b"failing on purpose\n", {"Content-Type": "text/plain"})
            return
        record = {
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
            "pid": os.getpid(),
        }
        with LOCK, open(os.environ["SINK_FILE"], "a") as f:
            f.write(json.dumps(record) + "\n")
        reply = os.environ.get("REPLY_TYPE")
        if reply:
            ce_id = self.headers.get("ce-id", "x")
            self._send(200, b'{"reply": true}', {
                "Content-Type": "application/json", "ce-specversion": "1.0", "ce-type": reply,
                "ce-source": "eventsink", "ce-id": f"r-{ce_id}",
            })
            return
        self._send(202, b"", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = Server((os.environ.get("POD_IP", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("eventsink ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
