"""A tiny stdlib-only HTTP app used by the tests (no SDK: it serves on $HOST:$PORT).

Endpoints: ``/`` (build and instance), ``/env`` (JSON of selected variables), ``/status``
(200), ``/crash`` (exits the process), ``/chatty`` (writes a lot to stdout),
``/slow?ms=N`` (answers after N milliseconds).
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

ENV_NAMES = (
    "TAKO_ENV",
    "TAKO_BUILD",
    "TAKO_APP_NAME",
    "TAKO_INSTANCE",
    "HOST",
    "PORT",
    "NODE_ENV",
    "GREETING",
    "API_KEY",
    "SECRET_TOKEN",
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if url.path == "/status":
            self._send(200, b"ok")
        elif url.path == "/env":
            data = {name: os.environ.get(name) for name in ENV_NAMES}
            self._send(200, json.dumps(data).encode(), "application/json")
        elif url.path == "/crash":
            self._send(200, b"bye")
            threading.Timer(0.05, lambda: os._exit(3)).start()
        elif url.path == "/chatty":
            for i in range(2000):
                print(f"chatty line {i} " + "x" * 100)
            sys.stdout.flush()
            self._send(200, b"chatted")
        elif url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["500"])[0])
            time.sleep(ms / 1000)
            self._send(200, b"slow done")
        else:
            build = os.environ.get("TAKO_BUILD", "?")
            instance = os.environ.get("TAKO_INSTANCE", "?")
            self._send(200, f"hello from pyapp build={build} instance={instance}\n".encode())

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        print(f"request {self.command} {self.path}", flush=True)


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer((host, port), Handler)
    print(f"pyapp listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
