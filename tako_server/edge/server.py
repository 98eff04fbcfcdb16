"""The :class:`Edge`: started by the daemon, serves HTTP/HTTPS in workers or in-process.

Rules:

- ``workers > 0``: the main process opens one ``SO_REUSEPORT`` listener per worker and
  port (:func:`.listen.open_listeners`), starts that many worker processes
  (:mod:`.workers`) that serve on the one they inherit, pushes every snapshot and
  "certs changed" to them, answers their cold-start and challenge requests through its
  :class:`~.hooks.EdgeHooks`, and forwards their activity reports (reporter
  ``edge-{index}``). Everything on the channel is a typed message (:mod:`.messages`); a
  message that has no business going main-wards is logged and dropped. A worker that
  dies is restarted (with backoff) and its in-flight counts are reported as zero.
- A worker accepts nothing until it has the routes: it says ``started``, gets the last
  snapshot that compiled here, applies it, reads the certificates, serves, says
  ``ready`` (:mod:`.workers`). :meth:`Edge.start` returns only once every worker is
  ready, so a takeover successor tells its predecessor to go only when each of its
  workers routes with the current table; a restarted worker goes through the same
  handshake while the others keep serving.
- ``workers == 0``: the same edge runs in this process directly on the hooks (reporter
  ``edge``).
- What to route is pushed, never pulled: :meth:`Edge.update` takes the next
  :class:`~.snapshot.EdgeSnapshot` (call it once before :meth:`Edge.start` so the first
  request already has routes). Updates are coalesced: one compile and one encoded push
  per loop iteration; a snapshot that does not compile is refused (logged) and the
  previous one stays.
- ``listeners=`` adopts listening sockets inherited from a previous server process (a
  takeover, :mod:`tako_server.upgrade`); :attr:`Edge.listeners` is what a successor
  inherits. :meth:`Edge.stop` closes this process's references at once, so a socket a
  successor also holds keeps its accept queue.
- :meth:`Edge.stop` stops accepting, lets in-flight exchanges finish within the drain
  timeout, then closes what is left. Background tasks (one reader per worker, answers
  to its requests) run in a :class:`~tako_common.tasks.TaskGroup`, cancelled at stop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tako_common.errors import TakoError
from tako_common.tasks import TaskGroup

from .channel import Channel
from .hooks import ColdStartError, ColdStartKind, EdgeHooks
from .listen import Acceptor, open_listeners, serve_sockets
from .messages import (
    ActivityReport,
    AppLogLine,
    CertsChanged,
    ChallengeReply,
    ChallengeRequest,
    ColdStartReply,
    ColdStartRequest,
    Message,
    MeterReport,
    Ready,
    SnapshotPush,
    Started,
    StopWorker,
    encode,
)
from .meter import empty_snapshot, merge_snapshots
from .runtime import EdgeConfig, EdgeRuntime
from .snapshot import EdgeSnapshot, EdgeState
from .tls import EdgeTls
from .workers import worker_argv, worker_config

log = logging.getLogger(__name__)
READY_TIMEOUT = 15.0
RESTART_BACKOFF_CAP = 30.0


class EdgeError(TakoError):
    """The edge could not start (a port is taken, workers did not come up)."""

    code = "edge"


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
        self.meter: Mapping[str, Any] | None = None  # its last MeterReport

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"WorkerHandle(index={self.index}, pid={pid}, ready={self.ready.is_set()})"

    def send(self, message: Message) -> None:
        if self.channel is not None:
            self.channel.send(message)

    def send_encoded(self, line: bytes) -> None:
        if self.channel is not None:
            self.channel.send_encoded(line)


class Edge:
    """HTTP(S) edge proxy; see the module docstring for the process model."""

    def __init__(
        self,
        hooks: EdgeHooks,
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
        self.hooks = hooks
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
        self._acceptors: list[Acceptor] = []
        self._rt: EdgeRuntime | None = None
        self._retired_meter = empty_snapshot()
        self.worker_restarts = 0  # worker processes that exited while the edge served
        self._tls: EdgeTls | None = None
        self._handles: list[WorkerHandle] = []
        self._tasks = TaskGroup()
        self._push_handle: asyncio.Handle | None = None
        self._snapshot = EdgeSnapshot()  # the newest one handed to update()
        self._snapshot_line = encode(SnapshotPush(EdgeSnapshot()))  # the last that compiled
        self._started = False
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
        self._open_listeners()
        self.http_port = self._listeners["http"][0].getsockname()[1]
        self.https_port = self._listeners["https"][0].getsockname()[1]
        public = self._public_https_port or self.https_port
        self.config = replace(self._base_config, https_port=public)
        if self.workers == 0:
            self._rt = EdgeRuntime(self.config, self.hooks)
        self._started = True
        self._push()  # the routes every serving process starts with
        if self._rt is not None:
            self._acceptors = serve_sockets(
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

    def _open_listeners(self) -> None:
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

    def update(self, snapshot: EdgeSnapshot) -> None:
        """Route with ``snapshot`` from now on (coalesced: one push per loop iteration)."""
        self._snapshot = snapshot
        if self._push_handle is None and self._started and not self._stopping:
            self._push_handle = asyncio.get_running_loop().call_soon(self._push)

    def certs_changed(self) -> None:
        """Certificates on disk changed: every process re-reads them."""
        if self._tls is not None:
            self._tls.refresh()
        for handle in self._handles:
            handle.send(CertsChanged())

    async def stop(self, drain_timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to ``drain_timeout``), close."""
        self._stopping = True
        if self._push_handle is not None:
            self._push_handle.cancel()
            self._push_handle = None
        for acceptor in self._acceptors:
            acceptor.close()
        for socks in self._listeners.values():
            for sock in socks:
                sock.close()
        self._listeners = {}
        if self._rt is not None:
            await self._rt.drain(drain_timeout)
            for acceptor in self._acceptors:
                acceptor.abort()  # connections still in their handshake after the drain
            self._rt.close()
        for handle in self._handles:
            handle.send(StopWorker(drain_timeout))
        await asyncio.gather(*(self._reap(h, drain_timeout + 5.0) for h in self._handles))
        await self._tasks.cancel_all()

    # --- snapshots ----------------------------------------------------------------------
    def _push(self) -> None:
        self._push_handle = None
        snapshot = self._snapshot
        try:
            state = EdgeState.compile(snapshot)
        except Exception:
            log.exception("edge: snapshot refused (routes invalid), keeping the previous one")
            return
        self._snapshot_line = line = encode(SnapshotPush(snapshot))
        if self._rt is not None:
            self._rt.set_state(state)
        for handle in self._handles:
            handle.send_encoded(line)

    # --- workers ------------------------------------------------------------------------
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
        self._tasks.spawn(self._serve_worker(handle), name=f"edge-worker-{handle.index}")

    async def _serve_worker(self, handle: WorkerHandle) -> None:
        channel = handle.channel
        assert channel is not None
        while (message := await channel.recv()) is not None:
            self._on_message(handle, message)
        await self._on_worker_exit(handle)

    def meter_snapshot(self) -> dict[str, Any]:
        """Request counters of every edge process since this edge started (summed)."""
        parts = [self._retired_meter]
        parts += [dict(h.meter) for h in self._handles if h.meter is not None]
        if self._rt is not None:
            parts.append(self._rt.meter.snapshot())
        return merge_snapshots(parts)

    def _on_message(self, handle: WorkerHandle, message: Message) -> None:
        match message:
            case ActivityReport(in_flight=in_flight):
                self._on_activity(handle, in_flight)
            case ColdStartRequest(key=key):
                name = f"edge-cold-start-{key}"
                self._tasks.spawn(self._answer_cold_start(handle, message), name=name)
            case ChallengeRequest():
                name = f"edge-acme-{message.token[:16]}"
                self._tasks.spawn(self._answer_challenge(handle, message), name=name)
            case AppLogLine(key=key, line=line):
                _safe(self.hooks.app_log, key, line)
            case Started():  # it serves once it has this (the pushes after it follow it)
                handle.send_encoded(self._snapshot_line)
            case Ready():
                handle.ready.set()
            case MeterReport(snapshot=snapshot):
                handle.meter = snapshot
            case _:
                log.error(
                    "edge: refused %r from worker %d (not a worker's message)",
                    message.op,
                    handle.index,
                )

    def _on_activity(
        self, handle: WorkerHandle, in_flight: Mapping[str, Mapping[int, int]]
    ) -> None:
        for key, counts in in_flight.items():
            if counts:
                handle.busy_keys.add(key)
            else:
                handle.busy_keys.discard(key)
        _safe(self.hooks.report, handle.reporter, in_flight)

    async def _answer_cold_start(self, handle: WorkerHandle, request: ColdStartRequest) -> None:
        try:
            backends = await self.hooks.cold_start(request.key)
            reply = ColdStartReply(request.id, backends=tuple(backends))
        except ColdStartError as exc:
            reply = ColdStartReply(request.id, error=exc.kind, message=exc.message)
        except Exception as exc:  # the hooks broke their rule: the edge answers 502
            reply = ColdStartReply(request.id, error=ColdStartKind.FAILED, message=repr(exc))
        handle.send(reply)

    async def _answer_challenge(self, handle: WorkerHandle, request: ChallengeRequest) -> None:
        try:
            answer = await self.hooks.challenge(request.token)
        except Exception:
            log.exception("edge: challenge hook failed")
            answer = None
        handle.send(ChallengeReply(request.id, answer))

    async def _on_worker_exit(self, handle: WorkerHandle) -> None:
        process = handle.process
        code = await process.wait() if process is not None else None
        if handle.busy_keys:
            _safe(self.hooks.report, handle.reporter, {key: {} for key in handle.busy_keys})
        handle.busy_keys.clear()
        if handle.meter is not None:  # what it counted stays counted
            self._retired_meter = merge_snapshots([self._retired_meter, dict(handle.meter)])
            handle.meter = None
        if not self._stopping:
            self.worker_restarts += 1
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


def _safe(call: Callable[..., Any], *args: Any) -> Any:
    try:
        return call(*args)
    except Exception:
        log.exception("edge: hook call failed")
        return None


__all__ = ["Edge", "EdgeError"]
