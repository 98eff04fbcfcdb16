"""Zero-downtime takeover (SIGHUP) of a real tako-server with its edge and a real app.

A load of keep-alive and new-connection clients runs against the edge on loopback while
the server is told to take over; every request must succeed. A client may retry a GET
once when a REUSED keep-alive connection is closed before any byte of the answer (the
idle-close race every HTTP/1.1 client handles, RFC 9112 §9.3.1); a reset or refusal of
a NEW connection is a failure (that is what a lost accept queue looks like).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tako_common.errors import ValidationError
from tako_server.notify import format_message, socket_address
from tako_server.upgrade import format_listen_fds, parse_listen_fds, successor_argv
from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.integration.conftest import APPS_DIR, ControlClient, ServerProcess, deploy_message

pytestmark = pytest.mark.timeout(120)

HOST = "web.localhost"
LOAD_LIMIT = 20.0  # seconds of load at most
REQUESTS_LIMIT = 20_000


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("fds", "text"),
    [
        ({"http": [5, 6], "https": [7, 8]}, "http:5,6;https:7,8"),
        ({"http": [3]}, "http:3"),
        ({"http": [], "https": [9]}, "https:9"),
        ({}, ""),
    ],
)
def test_listen_fds_round_trip_through_the_environment_format(
    fds: dict[str, list[int]], text: str
) -> None:
    assert format_listen_fds(fds) == text
    assert parse_listen_fds(text) == {k: v for k, v in fds.items() if v}


@pytest.mark.parametrize("text", ["ftp:5", "http:x", "http:5;http:6", "http", "http:1"])
def test_listen_fds_with_unknown_kinds_or_bad_numbers_are_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_listen_fds(text)


@pytest.mark.parametrize(
    ("frozen", "expected"),
    [
        (True, ["/usr/local/bin/tako-server", "run", "--data-dir", "/d"]),
        (False, ["/venv/bin/python", "-m", "tako_server.cli", "run", "--data-dir", "/d"]),
    ],
)
def test_successor_runs_the_frozen_binary_or_the_interpreter_with_its_options(
    frozen: bool, expected: list[str]
) -> None:
    argv = successor_argv(
        frozen=frozen,
        executable=expected[0],
        argv=["/usr/local/bin/tako-server", "run", "--data-dir", "/d"],
        orig_argv=["python3", "-m", "tako_server.cli", "run", "--data-dir", "/d"],
    )
    assert argv == expected


@pytest.mark.parametrize(
    ("value", "address"),
    [("/run/systemd/notify", "/run/systemd/notify"), ("@abstract", "\0abstract"), ("x", None)],
)
def test_notify_socket_addresses_support_paths_and_abstract_names(
    value: str, address: str | None
) -> None:
    assert socket_address(value) == address


def test_notify_messages_are_key_value_lines_without_embedded_newlines() -> None:
    assert format_message({"MAINPID": 7, "READY": 1, "STATUS": "a\nb"}) == (
        b"MAINPID=7\nREADY=1\nSTATUS=a b\n"
    )


# --------------------------------------------------------------------------- helpers


class NotifyListener:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def collect(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(m) for m in self.collect()):
                return
        raise AssertionError(f"no matching sd_notify message; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


class WorkerServer(ServerProcess):
    """A :class:`ServerProcess` whose edge runs ``workers`` worker processes."""

    def __init__(self, root: Path, workers: int, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.workers = workers

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--workers") + 1] = str(self.workers)
        return cmd


def pid_alive(pid: int) -> bool:
    """Running (a zombie left to a non-reaping init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int, timeout: float = 45) -> None:
    """End a server this test made (the successor is no child of ours): SIGTERM, SIGKILL."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def server_pids(data_dir: Path) -> list[int]:
    """PIDs of tako-server main processes serving ``data_dir`` (unique per test)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tako_server.cli" in argv and str(data_dir).encode() in argv:
            pids.append(int(entry.name))
    return [pid for pid in pids if pid_alive(pid)]


@pytest.fixture
def make_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with an edge (``workers`` processes); at teardown every server of
    their data dirs is stopped by PID, successors included, and output shown on failure."""
    servers: list[ServerProcess] = []

    def make(workers: int = 0, env: dict[str, str] | None = None) -> ServerProcess:
        server = WorkerServer(tmp_path / f"server{len(servers)}", workers, edge=True, env=env)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        for pid in server_pids(server.data_dir):
            if server.proc is None or pid != server.proc.pid:
                stop_pid(pid)
        server.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for server in servers:
            print(f"\n----- tako-server output ({server.root}) -----\n{server.output()}")


def deploy_pyapp(server: ServerProcess, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(APPS_DIR / "pyapp", src)
    name, digest = place_artifact(tar_zst_from_dir(src), server.incoming)
    with server.client() as client:
        client.ok(deploy_message(name, digest, routes=[HOST], instances=2))
        wait_healthy(client, 2)


def app_status(client: ControlClient) -> dict[str, Any]:
    apps = client.ok({"command": "status", "app": "web", "env": "production"})["apps"]
    status: dict[str, Any] = apps[0]
    return status


def wait_healthy(client: ControlClient, count: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = app_status(client)
        if status["healthy_instances"] >= count:
            return status
        time.sleep(0.1)
    raise AssertionError(f"app not healthy in {timeout}s: {status}")


def server_info(server: ServerProcess) -> dict[str, Any]:
    with server.client() as client:
        return client.ok({"command": "server_info"})


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def kill_daemon(server: ServerProcess, pid: int) -> None:
    """``kill -9`` of a tako-server (apps and all left as they are), reaped if ours."""
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), "the killed daemon", 10)
    if server.proc is not None and server.proc.pid == pid:
        server.proc.wait(10)
    server.proc = None


# --------------------------------------------------------------------------- load


@dataclass
class Target:
    """Where the load goes: address, port, TLS (``server_hostname``) and the Host header."""

    address: str
    port: int
    host: str = HOST
    body: bytes = b"hello from pyapp"
    tls: ssl.SSLContext | None = None

    def request(self, close: bool = False) -> bytes:
        extra = "Connection: close\r\n" if close else ""
        return f"GET / HTTP/1.1\r\nHost: {self.host}\r\n{extra}\r\n".encode()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        hostname = self.host if self.tls is not None else None
        return await asyncio.wait_for(
            asyncio.open_connection(
                self.address, self.port, ssl=self.tls, server_hostname=hostname
            ),
            10,
        )


def insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Load:
    """Counters of a bounded request load (``LOAD_LIMIT`` seconds, ``REQUESTS_LIMIT``)."""

    target: Target
    ok: int = 0
    retries: int = 0
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    deadline: float = 0.0
    max_requests: int = REQUESTS_LIMIT

    @property
    def running(self) -> bool:
        done = self.ok + len(self.failures)
        return (
            not self.stop.is_set() and time.monotonic() < self.deadline and done < self.max_requests
        )


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, body_has: bytes
) -> bool:
    """Send one request and check the answer; True when the server wants to close."""
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    if status != 200 or body_has not in body:
        raise AssertionError(f"status {status}: {body[:200]!r}")
    return headers.get("connection", "").lower() == "close"


async def keepalive_client(load: Load) -> None:
    target = load.target
    reader = writer = None
    reused = False
    while load.running:
        try:
            if writer is None:
                reader, writer = await target.connect()
                reused = False
            assert reader is not None
            close = await exchange(reader, writer, target.request(), target.body)
            load.ok += 1
            reused = True
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
            if not reused or partial:
                load.failures.append(f"keep-alive: {exc!r}")
            else:
                load.retries += 1  # idle connection closed under us: retry on a new one
            close = True
        except Exception as exc:
            load.failures.append(f"keep-alive: {exc!r}")
            close = True
        if close and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def new_connection_client(load: Load) -> None:
    target = load.target
    while load.running:
        writer = None
        try:
            reader, writer = await target.connect()
            await exchange(reader, writer, target.request(close=True), target.body)
            load.ok += 1
        except Exception as exc:
            load.failures.append(f"new connection: {exc!r}")
        finally:
            if writer is not None:
                writer.close()


async def run_load(load: Load, clients: int = 4, limit: float = LOAD_LIMIT) -> None:
    """``clients`` keep-alive and ``clients`` new-connection-per-request clients, for at
    most ``limit`` seconds."""
    load.deadline = time.monotonic() + limit
    tasks = [keepalive_client(load) for _ in range(clients)]
    tasks += [new_connection_client(load) for _ in range(clients)]
    await asyncio.gather(*tasks)


async def until(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- takeover


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


@pytest.mark.parametrize("workers", [0, 2])
async def test_sighup_hands_over_to_a_new_process_without_failing_a_request(
    make_server: Callable[..., ServerProcess],
    notify: NotifyListener,
    tmp_path: Path,
    workers: int,
) -> None:
    server = await asyncio.to_thread(make_server, workers, {"NOTIFY_SOCKET": str(notify.path)})
    assert server.proc is not None
    old = server.proc
    await asyncio.to_thread(deploy_pyapp, server, tmp_path)
    notify.wait_for(lambda m: m.get("READY") == "1" and m.get("MAINPID") == str(old.pid))
    with server.client() as client:
        old_instances = {i["pid"] for i in app_status(client)["instances"]}

    load = Load(Target("127.0.0.1", server.http_port))
    loader = asyncio.create_task(run_load(load))
    await until(lambda: load.ok >= 200, "load warm-up", 15)
    old.send_signal(signal.SIGHUP)
    code = await asyncio.to_thread(old.wait, 60)
    after_exit = load.ok
    await until(lambda: load.ok >= after_exit + 200, "requests to the successor", 10)
    load.stop.set()
    await loader

    info = await asyncio.to_thread(server_info, server)
    assert code == 0
    assert info["pid"] != old.pid and pid_alive(info["pid"])
    assert info["mode"] == "normal"
    assert (info["took_over_from"], info["predecessor_running"]) == (old.pid, False)
    assert load.failures == [], f"{len(load.failures)} failed of {load.ok}: {load.failures[:5]}"
    assert load.ok >= 400
    print(f"takeover under load: {load.ok} ok, {load.retries} idle-close retries")
    with server.client() as client:
        status = wait_healthy(client, 2)
    assert {i["pid"] for i in status["instances"]} == old_instances  # adopted, not restarted
    assert all(pid_alive(p) for p in old_instances)
    notify.wait_for(lambda m: m.get("READY") == "1" and m.get("MAINPID") == str(info["pid"]))
    assert not any(m.get("STOPPING") for m in notify.messages)


def test_a_successor_that_cannot_start_leaves_the_old_server_serving(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server()
    assert server.proc is not None
    old_pid = server.proc.pid
    deploy_pyapp(server, tmp_path)
    config = server.data_dir / "server-config.toml"
    config.write_text("[server]\nno_such_setting = 1\n")

    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "takeover failed" in server.output(), "the failed takeover in the log")
    assert "no_such_setting" in server.output()
    info = server_info(server)
    assert (info["pid"], info["mode"]) == (old_pid, "normal")
    takeover = info["takeover"]
    assert (takeover["state"], takeover["attempt"]) == ("rolled_back", 1)
    assert "exited with code" in takeover["error"] and takeover["successor_pid"] is None
    assert via_edge(server) == 200

    config.unlink()  # fixed: the next SIGHUP succeeds
    server.proc.send_signal(signal.SIGHUP)
    code = server.proc.wait(60)
    info = server_info(server)
    assert code == 0 and info["pid"] != old_pid
    assert via_edge(server) == 200


def via_edge(server: ServerProcess) -> int:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(Target("127.0.0.1", server.http_port).request(close=True))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_a_second_sighup_during_a_takeover_starts_no_second_successor(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server()
    assert server.proc is not None
    old = server.proc
    deploy_pyapp(server, tmp_path)  # the successor waits for healthy instances: time to race
    old.send_signal(signal.SIGHUP)
    wait_for(lambda: "takeover: started successor" in server.output(), "the first takeover")
    old.send_signal(signal.SIGHUP)
    assert old.wait(60) == 0
    info = server_info(server)
    output = server.output()
    assert output.count("takeover: started successor") == 1, output
    assert "SIGHUP ignored: a takeover is already in progress" in output
    assert server_pids(server.data_dir) == [info["pid"]]
