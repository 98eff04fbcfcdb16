"""The :class:`Edge`: started by the daemon, serves HTTP/HTTPS in workers or in-process.

Rules:

- ``workers > 0``: the main process opens one ``SO_REUSEPORT`` listener per worker and
  port (:func:`.listen.open_listeners`), starts that many worker processes
  (:mod:`.workers`) that serve on the one they inherit, pushes
  every snapshot and "certs changed" to them, answers their cold-start and challenge
  requests through the provider, and forwards their activity reports (reporter
  ``edge-{index}``). A worker that dies is restarted (with backoff) and its in-flight
  counts are reported as zero.
- A worker accepts nothing until it has the routes: it says ``started``, gets the last
  snapshot that compiled here, applies it, reads the certificates, serves, says
  ``ready`` (:mod:`.workers`). :meth:`Edge.start` returns only once every worker is
  ready, so a takeover successor tells its predecessor to go only when each of its
  workers routes with the current table; a restarted worker goes through the same
  handshake while the others keep serving.
- ``workers == 0``: the same edge runs in this process directly on the provider.
- ``listeners=`` adopts listening sockets inherited from a previous server process (a
  takeover, :mod:`tako_server.upgrade`); :attr:`Edge.listeners` is what a successor
  inherits. :meth:`Edge.stop` closes this process's references at once, so a socket a
  successor also holds keeps its accept queue.
- :meth:`Edge.notify` is cheap and coalesced: one snapshot push per loop iteration.
- :meth:`Edge.stop` stops accepting, lets in-flight exchanges finish within the drain
  timeout, then closes what is left.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from tako_common.errors import TakoError
from tako_server.supervisor.spec import ColdStartRejected, ColdStartTimeout

from .channel import Channel
from .exchange import ColdStartError
from .listen import open_listeners, serve_sockets
from .runtime import EdgeConfig, EdgeRuntime
from .snapshot import Backend, BackendLike, EdgeSnapshot, EdgeState, snapshot_to_wire
from .tls import EdgeTls
from .workers import worker_argv, worker_config

log = logging.getLogger(__name__)
READY_TIMEOUT = 15.0
RESTART_BACKOFF_CAP = 30.0


class EdgeProvider(Protocol):
    """Implemented by the daemon over the Supervisor and the certificate manager."""

    def snapshot(self) -> EdgeSnapshot: ...

    async def cold_start(self, key: str) -> Sequence[BackendLike]: ...

    def report_activity(
        self, key: str, in_flight: dict[int, int], now: float, reporter: str
    ) -> None: ...

    def challenge(self, token: str) -> str | None: ...

    def app_log(self, key: str, line: str) -> None: ...


class EdgeError(TakoError):
    """The edge could not start (a port is taken, workers did not come up)."""

    code = "edge"


def cold_start_error_kind(exc: BaseException) -> str:
    """Wire/edge name of a supervisor cold-start failure."""
    if isinstance(exc, ColdStartRejected):
        return "rejected"
    if isinstance(exc, ColdStartTimeout | TimeoutError):
        return "timeout"
    return "failed"


class LocalHooks:
    """:class:`~.runtime.EdgeHooks` straight onto the provider (``workers=0``)."""

    def __init__(self, provider: EdgeProvider, reporter: str = "edge") -> None:
        self.provider = provider
        self.reporter = reporter

    async def cold_start(self, key: str) -> list[Backend]:
        try:
            found = await self.provider.cold_start(key)
        except Exception as exc:
            raise ColdStartError(cold_start_error_kind(exc), str(exc)) from exc
        return [Backend(b.instance_id, b.host, b.port) for b in found]

    async def challenge(self, token: str) -> str | None:
        return self.provider.challenge(token)

    def app_log(self, key: str, line: str) -> None:
        self.provider.app_log(key, line)

    def report(self, reports: dict[str, dict[int, int]]) -> None:
        now = time.monotonic()
        for key, counts in reports.items():
            self.provider.report_activity(key, counts, now, self.reporter)


class WorkerHandle:
    """The main process's side of one worker: process, channel and what it reported."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.reporter = f"edge-{index}"
        self.process: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.ready = asyncio.Event()
        self.busy_keys: set[str] = set()
        self.failures = 0

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"WorkerHandle(index={self.index}, pid={pid}, ready={self.ready.is_set()})"

    def send(self, message: dict[str, Any]) -> None:
        if self.channel is not None:
            self.channel.send(message)


class Edge:
    """HTTP(S) edge proxy; see the module docstring for the process model."""

    def __init__(
        self,
        provider: EdgeProvider,
        *,
        http_port: int,
        https_port: int,
        certs_dir: Path,
        workers: int,
        host: str = "0.0.0.0",
        config: EdgeConfig | None = None,
        public_https_port: int | None = None,
        listeners: Mapping[str, Sequence[socket.socket]] | None = None,
    ) -> None:
        self.provider = provider
        self.host = host
        self.http_port = http_port
        self.https_port = https_port
        self.certs_dir = Path(certs_dir)
        self.workers = max(0, workers)
        self._public_https_port = public_https_port
        self._base_config = config or EdgeConfig()
        self.config = self._base_config
        self._inherited = {kind: list(socks) for kind, socks in (listeners or {}).items()}
        self._listeners: dict[str, list[socket.socket]] = {}
        self._servers: list[asyncio.Server] = []
        self._rt: EdgeRuntime | None = None
        self._tls: EdgeTls | None = None
        self._handles: list[WorkerHandle] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._push_handle: asyncio.Handle | None = None
        self._wire: dict[str, Any] = snapshot_to_wire(EdgeSnapshot())  # last that compiled
        self._stopping = False

    def __repr__(self) -> str:
        return (
            f"Edge(http={self.host}:{self.http_port}, https={self.host}:{self.https_port}, "
            f"workers={self.workers}, stopping={self._stopping})"
        )

    @property
    def worker_pids(self) -> list[int]:
        return [h.process.pid for h in self._handles if h.process and h.process.returncode is None]

    @property
    def listeners(self) -> dict[str, list[socket.socket]]:
        """The listening sockets by kind (``http``, ``https``), for a takeover successor."""
        return {kind: list(socks) for kind, socks in self._listeners.items()}

    async def start(self) -> None:
        """Open (or adopt) the listeners, load certificates, start serving; raises if a
        worker fails."""
        self._tls = EdgeTls(self.certs_dir, ensure_default=True)  # before any worker starts
        count = max(1, self.workers)
        for kind, port in (("http", self.http_port), ("https", self.https_port)):
            inherited = self._inherited.pop(kind, [])
            try:
                self._listeners[kind] = open_listeners(self.host, port, count, inherited)
            except OSError as exc:
                for socks in self._listeners.values():
                    for sock in socks:
                        sock.close()
                raise EdgeError(
                    f"cannot listen on {self.host}:{port}: {exc.strerror or exc}",
                    hint="another process holds the port, or ports below 1024 need root",
                ) from exc
        self.http_port = self._listeners["http"][0].getsockname()[1]
        self.https_port = self._listeners["https"][0].getsockname()[1]
        public = self._public_https_port or self.https_port
        self.config = replace(self._base_config, https_port=public)
        if self.workers == 0:
            self._rt = EdgeRuntime(self.config, LocalHooks(self.provider))
        self._push()  # the routes every serving process starts with
        if self._rt is not None:
            self._servers = await serve_sockets(
                self._rt,
                [s.dup() for s in self._listeners["http"]],
                [s.dup() for s in self._listeners["https"]],
                self._tls.context,
            )
            return
        self._handles = [WorkerHandle(i) for i in range(self.workers)]
        for handle in self._handles:
            await self._spawn(handle)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await asyncio.gather(*(h.ready.wait() for h in self._handles))
        except TimeoutError:
            await self.stop(0)
            raise EdgeError(
                f"edge workers did not become ready within {READY_TIMEOUT:.0f}s",
                hint="see the server log for the worker's error",
            ) from None

    def notify(self) -> None:
        """The provider's state changed: push a new snapshot (coalesced)."""
        if self._push_handle is None and not self._stopping:
            self._push_handle = asyncio.get_running_loop().call_soon(self._push)

    def certs_changed(self) -> None:
        """Certificates on disk changed: every process re-reads them."""
        if self._tls is not None:
            self._tls.refresh()
        for handle in self._handles:
            handle.send({"op": "certs"})

    async def stop(self, drain_timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to ``drain_timeout``), close."""
        self._stopping = True
        for server in self._servers:
            server.close()
        for socks in self._listeners.values():
            for sock in socks:
                sock.close()
        self._listeners = {}
        if self._rt is not None:
            await self._rt.drain(drain_timeout)
            self._rt.close()
        for handle in self._handles:
            handle.send({"op": "stop", "drain": drain_timeout})
        await asyncio.gather(*(self._reap(h, drain_timeout + 5.0) for h in self._handles))
        for task in list(self._tasks):
            task.cancel()

    # --- snapshots ----------------------------------------------------------------------
    def _push(self) -> None:
        self._push_handle = None
        snapshot = self.provider.snapshot()
        try:
            state = EdgeState.compile(snapshot)
        except Exception:
            log.exception("edge: snapshot refused (routes invalid), keeping the previous one")
            return
        self._wire = snapshot_to_wire(snapshot)
        if self._rt is not None:
            self._rt.set_state(state)
        message = {"op": "snapshot", "snapshot": self._wire}
        for handle in self._handles:
            handle.send(message)

    # --- workers ------------------------------------------------------------------------
    def _spawn_task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _spawn(self, handle: WorkerHandle) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        config = worker_config(
            index=handle.index,
            host=self.host,
            http_port=self.http_port,
            https_port=self.https_port,
            certs_dir=self.certs_dir,
            edge=self.config,
        )
        mine = {  # listener j goes to worker j % workers (more inherited than workers)
            kind: [s.fileno() for j, s in enumerate(socks) if j % self.workers == handle.index]
            for kind, socks in self._listeners.items()
        }
        config.update({"http_fds": mine["http"], "https_fds": mine["https"]})
        try:
            handle.process = await asyncio.create_subprocess_exec(
                *worker_argv(theirs.fileno(), config),
                pass_fds=(theirs.fileno(), *mine["http"], *mine["https"]),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        handle.ready.clear()
        handle.channel = await Channel.open(ours)
        self._spawn_task(self._serve_worker(handle), name=f"edge-worker-{handle.index}")

    async def _serve_worker(self, handle: WorkerHandle) -> None:
        channel = handle.channel
        assert channel is not None
        while True:
            message = await channel.recv()
            if message is None:
                break
            self._on_message(handle, message)
        await self._on_worker_exit(handle)

    def _on_message(self, handle: WorkerHandle, message: Mapping[str, Any]) -> None:
        op = message.get("op")
        if op == "activity":
            self._on_activity(handle, message.get("apps", {}))
        elif op == "cold_start":
            self._spawn_task(self._answer_cold_start(handle, message), name="edge-cold-start")
        elif op == "challenge":
            answer = _safe(self.provider.challenge, str(message["token"]))
            handle.send({"op": "reply", "id": message["id"], "answer": answer})
        elif op == "log":
            _safe(self.provider.app_log, str(message["key"]), str(message["line"]))
        elif op == "started":  # it serves once it has this (the pushes after it follow it)
            handle.send({"op": "snapshot", "snapshot": self._wire})
        elif op == "ready":
            handle.ready.set()

    def _on_activity(self, handle: WorkerHandle, apps: Mapping[str, Mapping[str, int]]) -> None:
        now = time.monotonic()
        for key, counts in apps.items():
            in_flight = {int(i): int(n) for i, n in counts.items()}
            if in_flight:
                handle.busy_keys.add(key)
            else:
                handle.busy_keys.discard(key)
            _safe(self.provider.report_activity, key, in_flight, now, handle.reporter)

    async def _answer_cold_start(self, handle: WorkerHandle, message: Mapping[str, Any]) -> None:
        reply: dict[str, Any] = {"op": "reply", "id": message["id"]}
        try:
            backends = await self.provider.cold_start(str(message["key"]))
            reply["backends"] = [[b.instance_id, b.host, b.port] for b in backends]
        except Exception as exc:
            reply["error"] = cold_start_error_kind(exc)
            reply["message"] = str(exc)
        handle.send(reply)

    async def _on_worker_exit(self, handle: WorkerHandle) -> None:
        process = handle.process
        code = await process.wait() if process is not None else None
        now = time.monotonic()
        for key in handle.busy_keys:
            _safe(self.provider.report_activity, key, {}, now, handle.reporter)
        handle.busy_keys.clear()
        if handle.channel is not None:
            handle.channel.close()
            handle.channel = None
        if self._stopping:
            return
        handle.failures += 1
        delay = min(RESTART_BACKOFF_CAP, 0.5 * 2 ** (handle.failures - 1))
        log.error("edge worker %d exited with %s; restarting in %.1fs", handle.index, code, delay)
        await asyncio.sleep(delay)
        if not self._stopping:
            await self._spawn(handle)

    async def _reap(self, handle: WorkerHandle, timeout: float) -> None:
        process = handle.process
        if process is None or process.returncode is not None:
            return
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def _safe(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except Exception:
        log.exception("edge: provider call failed")
        return None


__all__ = ["Edge", "EdgeError", "EdgeProvider", "LocalHooks", "cold_start_error_kind"]
