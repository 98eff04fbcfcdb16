"""A small HTTP app for supervisor tests, configured by environment variables.

START_DELAY=<s>      sleep before listening (slow start)
START_GATE=<path>    do not listen before this file exists (the test decides when; <= 60 s)
EXIT_AT_START=<code> print to stderr and exit at once
STATUS_CODE=<n>      answer /status with this code (default 200)
CHATTY_MB=<n>        write n MiB of lines to stdout in the background
SPAWN_CHILD=1        start `sleep 1000` as a child; GET /child returns its pid
APP_VERSION          echoed by GET /env
GET /env    -> JSON of HOST, PORT, TAKO_*, APP_VERSION
GET /slow?s=<sec> -> answers after sleeping
GET /say?m=<text>&n=<k> -> prints text (k times over) to stdout and stderr
"""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

if os.environ.get("EXIT_AT_START"):
    print("pyapp: refusing to start (EXIT_AT_START)", file=sys.stderr, flush=True)
    sys.exit(int(os.environ["EXIT_AT_START"]))

time.sleep(float(os.environ.get("START_DELAY", "0")))
if os.environ.get("START_GATE"):
    gate_deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["START_GATE"]) and time.monotonic() < gate_deadline:
        time.sleep(0.02)
CHILD = subprocess.Popen(["sleep", "1000"]) if os.environ.get("SPAWN_CHILD") else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/status":
            self.reply(int(os.environ.get("STATUS_CODE", "200")), {"status": "ok"})
        elif url.path == "/env":
            keys = [k for k in os.environ if k.startswith("TAKO_")]
            env = {k: os.environ.get(k) for k in [*keys, "HOST", "PORT", "APP_VERSION"]}
            self.reply(200, env | {"pid": os.getpid(), "cwd": os.getcwd()})
        elif url.path == "/slow":
            time.sleep(float(query.get("s", ["1"])[0]))
            self.reply(200, {"slept": True})
        elif url.path == "/say":
            text = query.get("m", [""])[0] * int(query.get("n", ["1"])[0])
            print(f"said {text}", flush=True)
            print(f"err {text}", file=sys.stderr, flush=True)
            self.reply(200, {"said": text})
        elif url.path == "/child":
            self.reply(200, {"child": CHILD.pid if CHILD else None})
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, code: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def chatter(megabytes: int) -> None:
    line = ("chatter " + "z" * 1015 + "\n").encode()  # 1 KiB per line
    out = sys.stdout.buffer
    for _ in range(megabytes * 1024):
        out.write(line)
    out.flush()
    print("chatter done", flush=True)


server = ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler)
server.daemon_threads = True
print(f"pyapp {os.environ.get('APP_VERSION')} listening on {os.environ['PORT']}", flush=True)
print("pyapp stderr hello", file=sys.stderr, flush=True)
if os.environ.get("CHATTY_MB"):
    threading.Thread(target=chatter, args=(int(os.environ["CHATTY_MB"]),), daemon=True).start()
server.serve_forever()
