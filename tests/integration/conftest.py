"""Integration fixtures: a REAL ``tako-server run`` subprocess and a control-socket client.

- ``server_factory(...)`` builds a :class:`ServerProcess` on a temporary data dir, free
  loopback ports and a socket inside the temp dir; ``tako_server`` is one already
  started. ``start()`` waits until the socket answers ``hello``; ``stop()`` sends SIGTERM
  to the PID it started (SIGKILL after a deadline); ``restart()`` does both.
- The server's output goes to a file; when a test fails, it is printed.
- :class:`ControlClient` is a tiny synchronous JSON-lines client over the Unix socket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tako_common.protocol import PROTOCOL_VERSION

START_TIMEOUT = 30.0
STOP_TIMEOUT = 45.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ControlClient:
    """One connection to the management socket; ``request`` sends a line, reads a line."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._buf = b""

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        value: dict[str, Any] = json.loads(line)
        return value

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send_raw(json.dumps(message).encode() + b"\n")
        return self.read_line()

    def ok(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request that must succeed; return its ``data``."""
        reply = self.request(message)
        assert reply["status"] == "ok", reply
        data: dict[str, Any] = reply["data"]
        return data


class ServerProcess:
    def __init__(
        self,
        root: Path,
        *,
        edge: bool = False,
        env: dict[str, str] | None = None,
        workers: int = 0,
    ) -> None:
        self.root = root
        self.workers = workers
        self.data_dir = root / "data"
        self.socket = root / "run" / "tako.sock"
        self.http_port = free_port()
        self.https_port = free_port()
        self.log_path = root / "server.log"
        self.edge = edge
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"ServerProcess(pid={pid}, data_dir={str(self.data_dir)!r})"

    @property
    def incoming(self) -> Path:
        return self.data_dir / "incoming"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "tako_server.cli",
            "run",
            "--data-dir",
            str(self.data_dir),
            "--socket",
            str(self.socket),
            "--http-port",
            str(self.http_port),
            "--https-port",
            str(self.https_port),
            "--workers",
            str(self.workers),
        ]
        return cmd if self.edge else [*cmd, "--no-edge"]

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAKO_")}
        # per-app users stay off (they would be made in this machine's /etc/passwd); the
        # isolation tests opt in with TAKO_APP_USERS=on
        defaults = {"TAKO_ACME_ENABLED": "false", "TAKO_APP_USERS": "off", "PYTHONUNBUFFERED": "1"}
        env.update({**defaults, **self.extra_env})
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root
            )
        finally:
            log.close()
        return self.proc

    def start(self) -> ServerProcess:
        proc = self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"tako-server exited with {proc.returncode}:\n{self.output()}")
            if self._answers_hello():
                return self
            time.sleep(0.05)
        raise RuntimeError(
            f"tako-server did not answer hello in {START_TIMEOUT}s:\n{self.output()}"
        )

    def _answers_hello(self) -> bool:
        try:
            with ControlClient(self.socket, timeout=2.0) as client:
                reply = client.request({"command": "hello", "protocol_version": PROTOCOL_VERSION})
        except OSError:
            return False
        return reply.get("status") == "ok"

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def client(self) -> ControlClient:
        return ControlClient(self.socket)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def server_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def make(**kwargs: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / f"server{len(servers)}", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
    failed = any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed:
        for server in servers:
            print(f"\n----- tako-server output ({server.root}) -----\n{server.output()}")


@pytest.fixture
def tako_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory().start()


@pytest.fixture
def control(tako_server: ServerProcess) -> Iterator[ControlClient]:
    with tako_server.client() as client:
        yield client


@pytest.fixture(scope="module")
def shared_tako_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One tako-server for the tests of a module that leave it as they found it: queries,
    and requests it must refuse while changing nothing (each such test checks that itself;
    placing an artifact in ``incoming`` for it to refuse is part of such a test).
    A test that changes the server (deploys, stops it, writes into its data dir) takes its
    own ``tako_server``. Starting a server is about a second of imports: per test it adds up.
    """
    server = ServerProcess(tmp_path_factory.mktemp("shared-server"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def shared_control(
    shared_tako_server: ServerProcess, request: pytest.FixtureRequest
) -> Iterator[ControlClient]:
    """A new connection to ``shared_tako_server`` for one test (its output shown on failure)."""
    with shared_tako_server.client() as client:
        yield client
    failed = getattr(getattr(request.node, "rep_call", None), "failed", False)
    if failed:
        print(f"\n----- shared tako-server output -----\n{shared_tako_server.output()}")


APPS_DIR = Path(__file__).resolve().parent.parent / "apps"
PYAPP_MANIFEST = {"runtime": "python", "main": "app.py"}
NODEAPP_MANIFEST = {"runtime": "node", "main": "server.js"}


def deploy_message(
    artifact: str,
    sha256: str,
    *,
    app: str = "web",
    env: str = "production",
    version: str = "v1",
    routes: list[str] | None = None,
    manifest: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A deploy request with sensible defaults (the pyapp manifest, a localhost route)."""
    return {
        "command": "deploy",
        "app": app,
        "env": env,
        "version": version,
        "artifact": artifact,
        "sha256": sha256,
        "routes": routes if routes is not None else [f"{app}.localhost"],
        "manifest": manifest or dict(PYAPP_MANIFEST),
        **extra,
    }


def tree_listing(root: Path) -> list[str]:
    """Every path under ``root`` (relative), for before/after comparisons."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
