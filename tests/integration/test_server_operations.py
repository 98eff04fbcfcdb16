"""A real ``tako-server run`` with two edge workers: shutdown that never waits for idle or
finished connections, descriptors released after ``Connection: close``, Prometheus
metrics that move with traffic, and the access log under the data dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.integration.conftest import (
    APPS_DIR,
    ServerProcess,
    deploy_message,
    free_port,
)

HOST = "web.localhost"


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def worker_pids(server: ServerProcess) -> list[int]:
    assert server.proc is not None
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def tls_client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@contextmanager
def clients_holding_sockets(server: ServerProcess, tls: int, idle: int) -> Iterator[None]:
    """``tls`` HTTPS clients answered with ``Connection: close`` that never close their
    side, and ``idle`` plain keep-alive clients between requests."""
    with ExitStack() as stack:
        for _ in range(tls):
            raw = socket.create_connection(("127.0.0.1", server.https_port), timeout=5)
            sock = stack.enter_context(tls_client().wrap_socket(raw, server_hostname="x.test"))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 404")
        for _ in range(idle):
            sock = stack.enter_context(
                socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
            )
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: tako.internal\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        yield


def test_sigterm_exits_fast_whatever_clients_hold_open(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(edge=True, workers=2).start()
    with clients_holding_sockets(server, tls=1, idle=50):
        time.sleep(0.5)
        assert server.proc is not None
        proc = server.proc
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - started
    assert proc.returncode == 0, server.output()
    assert took < 2.0, f"SIGTERM with no request in flight took {took:.2f}s"


def test_closed_tls_connections_release_their_descriptors(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(edge=True, workers=2).start()
    pids = worker_pids(server)
    assert len(pids) == 2
    before = {pid: fd_count(pid) for pid in pids}
    with clients_holding_sockets(server, tls=20, idle=0):
        # the edge waits ssl_shutdown (2 s) for the clients' close_notify, then lets go
        wait_until(
            lambda: all(fd_count(pid) <= before[pid] + 1 for pid in pids),
            "worker descriptors back to their baseline while clients still hold theirs",
            timeout=8,
        )


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def via_edge(server: ServerProcess, path: str = "/") -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}{path}", headers={"Host": HOST}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return int(response.status)


def test_metrics_move_with_traffic_and_the_access_log_has_every_request(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    port = free_port()
    server = server_factory(edge=True, workers=2, env={"TAKO_METRICS_PORT": str(port)}).start()
    name, digest = place_artifact(tar_zst_from_dir(APPS_DIR / "pyapp"), server.incoming)
    with server.client() as client:
        client.ok(deploy_message(name, digest, routes=[HOST]))
    first = scrape(port)
    app = {"app": "web", "env": "production"}
    assert value(first, "tako_deploys_total", **app, result="ok") == 1
    assert value(first, "tako_instances", **app, state="healthy") == 1
    assert value(first, "tako_certificate_expiry_timestamp_seconds", host=HOST) > time.time()
    assert value(first, "tako_edge_worker_restarts_total") == 0
    for _ in range(6):
        assert via_edge(server) == 200
    ok = {**app, "status_class": "2xx", "method": "GET"}
    wait_until(
        lambda: (
            value(scrape(port), "tako_http_requests_total", **ok)
            >= value(first, "tako_http_requests_total", **ok) + 6
        ),
        "the six requests in the metrics (workers report every second)",
    )
    later = scrape(port)
    count = value(later, "tako_http_request_duration_seconds_count", **app)
    assert count >= 6
    assert value(later, "tako_http_request_duration_seconds_bucket", **app, le="+Inf") == count
    assert value(later, "tako_http_requests_in_flight", **app) == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10):
        pass
    log = server.data_dir / "logs" / "access.log"
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 6, "access log")
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    served = [x for x in lines if x["app"] == "web" and x["status"] == 200]
    assert len(served) >= 6 and {x["host"] for x in served} == {HOST}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_tls_handshakes_without_requests_leave_no_memory_behind(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(edge=True, workers=1).start()
    (pid,) = worker_pids(server)
    ctx = tls_client()

    def handshakes(count: int) -> None:
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", server.https_port), timeout=5)
            ctx.wrap_socket(raw, server_hostname="x.test").close()

    def held_connections(count: int) -> None:  # they live long enough to grow old
        with ExitStack() as stack:
            for _ in range(count):
                raw = socket.create_connection(("127.0.0.1", server.https_port), timeout=5)
                sock = stack.enter_context(ctx.wrap_socket(raw, server_hostname="x.test"))
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x.test\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 404")
            time.sleep(1.5)

    handshakes(50)
    time.sleep(1.5)
    before = rss_mb(pid)
    handshakes(500)
    held_connections(300)
    time.sleep(2.5)  # the edge collects closed connections within a second when idle
    grown = rss_mb(pid) - before
    # the SSL objects of closed connections wait in reference cycles: without the edge's
    # collection a worker kept ~20 MB per 500 handshakes for good, and connections that
    # lived a second reach the oldest generation (only a full collection frees them)
    assert grown < 8, f"the worker kept {grown:.1f} MB after 500 handshakes"
