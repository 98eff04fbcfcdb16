"""A tiny Tako example app: standard library only, serves on $HOST:$PORT."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/status":
            body = b"ok"
        elif self.path == "/env":
            keys = ("TAKO_ENV", "TAKO_BUILD", "TAKO_APP_NAME", "TAKO_INSTANCE", "GREETING")
            keys += tuple(k for k in os.environ if k.startswith("SECRET_"))
            body = json.dumps({k: os.environ.get(k) for k in keys}).encode()
        else:
            greeting = os.environ.get("GREETING", "Hello")
            body = (
                f"{greeting} from {os.environ.get('TAKO_APP_NAME', 'app')} "
                f"({os.environ.get('TAKO_ENV', '?')}, build {os.environ.get('TAKO_BUILD', '?')}, "
                f"instance {os.environ.get('TAKO_INSTANCE', '?')})\n"
            ).encode()
        print(f"GET {self.path}", flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(
        (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "3000"))), Handler
    )
    print(f"listening on {server.server_address}", flush=True)
    server.serve_forever()
