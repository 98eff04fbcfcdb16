"""The demo's web app: POST /signup enqueues an email run through TAKO_API_URL."""

import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def enqueue(group: str, payload: object) -> dict:
    request = urllib.request.Request(
        os.environ["TAKO_API_URL"] + "/v1/runs",
        data=json.dumps({"group": group, "payload": payload}).encode(),
        headers={"Authorization": "Bearer " + os.environ["TAKO_API_TOKEN"]},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.reply(200, {"ok": True})

    def do_POST(self) -> None:
        if self.path != "/signup":
            self.reply(404, {"error": "not found"})
            return
        run = enqueue("email", {"template": "welcome"})["run"]
        self.reply(202, {"run": run["id"]})

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "3000")))
    ThreadingHTTPServer(address, Handler).serve_forever()
