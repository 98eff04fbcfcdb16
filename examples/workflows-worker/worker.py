"""A Tako workflow worker in plain Python (standard library only; no SDK).

It speaks the queue's HTTP API (docs/workflows.md): claim a run of its group (long
poll), heartbeat while working, then complete it or fail it (the server retries with
backoff). ``TAKO_WORKFLOW_CONCURRENCY`` runs at once; on SIGTERM it claims nothing new,
finishes what it holds and exits.

Demo work, driven by the payload: ``{"sleep": 2}`` works 2 seconds, ``{"fail": "why"}``
fails with that error, anything else is echoed back as the result.

Output goes through ``say()``: the threads share stdout, and ``print()`` from several
threads at once can glue two lines together (one line's text, then the other's, then
both newlines), so each line is written whole under a lock.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

API = os.environ["TAKO_API_URL"]
TOKEN = os.environ["TAKO_API_TOKEN"]
GROUP = os.environ.get("TAKO_WORKFLOW_GROUP", "default")
WORKER = os.environ.get("TAKO_WORKER_ID", f"pid-{os.getpid()}")
CONCURRENCY = int(os.environ.get("TAKO_WORKFLOW_CONCURRENCY", "1"))
HEARTBEAT_EVERY = 10.0
stopping = threading.Event()
_output = threading.Lock()


def say(text: str, *, err: bool = False) -> None:
    """Print one whole line (never mixed with another thread's), flushed at once."""
    stream = sys.stderr if err else sys.stdout
    with _output:
        stream.write(text + "\n")
        stream.flush()


def call(path: str, body: dict[str, Any] | None = None, timeout: float = 40.0) -> tuple[int, Any]:
    """POST (or GET without a body) to the queue API; returns (status, JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        API + path,
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def handle(run: dict[str, Any]) -> Any:
    """The work itself: replace this with your own."""
    payload = run["payload"] if isinstance(run["payload"], dict) else {}
    if "sleep" in payload:
        time.sleep(float(payload["sleep"]))
    if "fail" in payload:
        raise RuntimeError(str(payload["fail"]))
    return {"echo": run["payload"]}


def heartbeat(run_id: int, done: threading.Event) -> None:
    while not done.wait(HEARTBEAT_EVERY):
        try:
            call(f"/v1/runs/{run_id}/heartbeat", {"worker": WORKER})
        except OSError as exc:  # missed beats only matter if they go on: keep beating
            say(f"run {run_id} heartbeat not sent: {exc}", err=True)


def work(run: dict[str, Any]) -> None:
    done = threading.Event()
    threading.Thread(target=heartbeat, args=(run["id"], done), daemon=True).start()
    say(f"run {run['id']} attempt {run['attempts']} (worker {WORKER}, pid {os.getpid()})")
    try:
        result = handle(run)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the queue
        done.set()
        report(run["id"], "fail", {"worker": WORKER, "error": repr(exc)}, f"failed: {exc!r}")
        return
    done.set()
    report(run["id"], "complete", {"worker": WORKER, "result": result}, "done")


def report(run_id: int, verb: str, body: dict[str, Any], outcome: str) -> None:
    """Tell the queue how a run ended. If the server cannot be reached, the run stays
    claimed and goes back to the queue when its heartbeats stop; this thread goes on."""
    try:
        status, _ = call(f"/v1/runs/{run_id}/{verb}", body)
    except OSError as exc:
        say(f"run {run_id} {outcome} (not reported: {exc})", err=True)
        return
    say(f"run {run_id} {outcome} ({status})")


def loop() -> None:
    while not stopping.is_set():
        try:
            status, body = call("/v1/claim", {"group": GROUP, "worker": WORKER, "wait": 20})
        except OSError as exc:  # the server restarts: try again shortly
            say(f"queue unreachable: {exc}", err=True)
            time.sleep(1)
            continue
        if status == 200:
            work(body["run"])
        elif status != 204:
            say(f"claim answered {status}: {body}", err=True)
            time.sleep(1)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    threads = [threading.Thread(target=loop) for _ in range(max(1, CONCURRENCY))]
    for thread in threads:
        thread.start()
    say(f"worker {WORKER} of {GROUP}: {len(threads)} at once")
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
