"""Edge worker processes: ``python -m tako_server.edge --channel-fd N --config JSON``.

A worker serves the listeners the main process opened for it (inherited descriptors
``http_fds``/``https_fds`` in its config; :mod:`.listen`) on uvloop and talks to the main process
over a socketpair (:mod:`.channel`) with the typed messages of :mod:`.messages`:

- main -> worker: ``snapshot``, ``certs`` (re-read certificates), ``stop`` (drain
  seconds), ``cold_start_reply`` and ``challenge_reply`` (answers to its requests).
- worker -> main: ``started`` (listening to the channel, not serving yet), ``ready``
  (first snapshot applied, certificates read, accepting now), ``activity`` (key ->
  instance id -> in-flight), ``cold_start``, ``challenge``, ``app_log``.

Start-up handshake (the same at a first start, in a takeover successor and when a crashed
worker is restarted): ``started`` -> the main answers with its current ``snapshot`` ->
the worker applies it, re-reads the certificates and only then starts accepting on its
listeners and says ``ready``. Before that a connection waits in the kernel accept queue
(shared with the other processes serving the socket), so it is never routed with an
empty table (a 404 for a host that exists).

Rules: the worker owns no state the main process needs back; if the channel closes
(main gone) it drains briefly and exits. SIGINT is ignored (the main process decides),
SIGTERM drains like ``stop``. :class:`WorkerHooks` is the worker's
:class:`~.hooks.EdgeHooks`: cold-start errors come back as :class:`~.hooks.ColdStartError`
with the kind the main process's hooks raised. Workers never import the supervisor or
the server module (memory: a worker is a small process).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .channel import Channel
from .hooks import ColdStartError
from .listen import Acceptor, serve, serve_sockets
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
    Reply,
    SnapshotPush,
    Started,
    StopWorker,
)
from .runtime import EdgeConfig, EdgeRuntime
from .snapshot import Backend, EdgeState
from .tls import EdgeTls

log = logging.getLogger("tako_server.edge.worker")

STOP_ON_EOF_DRAIN = 5.0
KINDS = ("http", "https")
GC_THRESHOLD = 20_000  # requests allocate short-lived objects; collect young ones less often


def worker_argv(channel_fd: int, config: dict[str, Any]) -> list[str]:
    """The command line that starts one worker."""
    return [
        sys.executable,
        "-m",
        "tako_server.edge",
        "--channel-fd",
        str(channel_fd),
        "--config",
        json.dumps(config),
    ]


def worker_config(
    *, index: int, host: str, http_port: int, https_port: int, certs_dir: Path, edge: EdgeConfig
) -> dict[str, Any]:
    return {
        "index": index,
        "host": host,
        "http_port": http_port,
        "https_port": https_port,
        "certs_dir": str(certs_dir),
        "edge": asdict(edge),
    }


class WorkerHooks:
    """The worker's :class:`~.hooks.EdgeHooks`: every call is a message to the main process."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Reply]] = {}

    def __repr__(self) -> str:
        return f"WorkerHooks(waiting={len(self._waiting)})"

    async def _ask(self, make: Callable[[int], Message]) -> Reply:
        request_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            self.channel.send(make(request_id))
            return await future
        finally:
            self._waiting.pop(request_id, None)

    def resolve(self, reply: Reply) -> None:
        future = self._waiting.get(reply.id)
        if future is not None and not future.done():
            future.set_result(reply)

    def fail_all(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("edge main process went away"))

    async def cold_start(self, key: str) -> list[Backend]:
        reply = await self._ask(lambda i: ColdStartRequest(i, key))
        if not isinstance(reply, ColdStartReply):
            raise ConnectionError(f"cold start of {key} answered by {reply.op}")
        if reply.error is not None:
            raise ColdStartError(reply.error, reply.message)
        return list(reply.backends)

    async def challenge(self, token: str) -> str | None:
        reply = await self._ask(lambda i: ChallengeRequest(i, token))
        return reply.answer if isinstance(reply, ChallengeReply) else None

    def app_log(self, key: str, line: str) -> None:
        self.channel.send(AppLogLine(key, line))

    def report(self, reporter: str, in_flight: Mapping[str, Mapping[int, int]]) -> None:
        """The main process knows which worker this is; ``reporter`` is not sent."""
        self.channel.send(ActivityReport(in_flight))


@dataclass
class WorkerControl:
    """What the channel tells the worker's start-up and shutdown (set by the reader)."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    has_snapshot: asyncio.Event = field(default_factory=asyncio.Event)
    drain: float = STOP_ON_EOF_DRAIN

    def __repr__(self) -> str:
        return (
            f"WorkerControl(has_snapshot={self.has_snapshot.is_set()},"
            f" stop={self.stop.is_set()}, drain={self.drain})"
        )

    async def wait_snapshot(self) -> bool:
        """Wait for the first snapshot; False when told to stop (or the main went) first."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self.has_snapshot, self.stop)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self.has_snapshot.is_set() and not self.stop.is_set()


async def run_worker(channel_fd: int, config: dict[str, Any]) -> None:
    """Serve until told to stop (or the main process goes away); accept nothing before
    the first snapshot is applied (see the start-up handshake in the module docstring)."""
    channel = await Channel.open(socket.socket(fileno=channel_fd))
    hooks = WorkerHooks(channel)
    rt = EdgeRuntime(EdgeConfig(**config["edge"]), hooks, reporter=f"edge-{config['index']}")
    tls = EdgeTls(Path(config["certs_dir"]))
    inherited = {kind: [_adopt(fd) for fd in config.get(f"{kind}_fds", [])] for kind in KINDS}
    control = WorkerControl()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, control.stop.set)
    rt.on_meter = lambda snapshot: channel.send(MeterReport(snapshot))
    reader = rt.spawn(_read_loop(channel, hooks, rt, tls, control), name="edge-worker-channel")
    channel.send(Started(os.getpid()))
    acceptors: list[Acceptor] = []
    if await control.wait_snapshot():
        tls.refresh()  # certificates at least as new as the snapshot (main wrote them first)
        acceptors = _serve(rt, tls, config, inherited)
        gc.collect()
        gc.freeze()  # start-up objects never need scanning again
        gc.set_threshold(GC_THRESHOLD, 20, 100)
        channel.send(Ready(os.getpid()))
    await control.stop.wait()
    for acceptor in acceptors:
        acceptor.close()
    if not acceptors:  # stopped before serving: the listeners were never handed to one
        for sock in (s for socks in inherited.values() for s in socks):
            sock.close()
    await rt.drain(control.drain)
    for acceptor in acceptors:
        acceptor.abort()  # connections still in their handshake after the drain
    rt.close()
    reader.cancel()
    await channel.drain()
    channel.close()


def _serve(
    rt: EdgeRuntime, tls: EdgeTls, config: dict[str, Any], inherited: dict[str, list[socket.socket]]
) -> list[Acceptor]:
    """Start accepting: on the inherited listeners, or bind our own (no fds in config)."""
    if "http_fds" in config:
        return serve_sockets(rt, inherited["http"], inherited["https"], tls.context)
    return serve(rt, config["host"], config["http_port"], config["https_port"], tls.context)


def _adopt(fd: int) -> socket.socket:
    """An inherited listening socket, no longer inheritable by anything this worker starts."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


async def _read_loop(
    channel: Channel, hooks: WorkerHooks, rt: EdgeRuntime, tls: EdgeTls, control: WorkerControl
) -> None:
    while True:
        message = await channel.recv()
        match message:
            case None:
                hooks.fail_all()
                control.stop.set()
                return
            case SnapshotPush(snapshot=snapshot):
                try:
                    rt.set_state(EdgeState.compile(snapshot))
                except Exception:
                    log.exception("edge worker: snapshot refused, keeping the previous one")
                else:
                    control.has_snapshot.set()
            case ColdStartReply() | ChallengeReply():
                hooks.resolve(message)
            case CertsChanged():
                tls.refresh()
            case StopWorker(drain=drain):
                control.drain = drain
                control.stop.set()
                return
            case _:
                log.error("edge worker: refused %r (main -> worker messages only)", message.op)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tako_server.edge")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="edge-worker %(levelname)s %(message)s")
    import uvloop

    uvloop.run(run_worker(args.channel_fd, json.loads(args.config)))
