"""The dev edge daemon: one per developer (``$TAKO_HOME``), shared by every ``tako dev``.

Start-up -> serve -> shut down:

- start: bind the HTTPS and HTTP ports (:mod:`.ports`), start the page server, start the
  server's :class:`~tako_server.edge.Edge` in this process (``workers=0``) on those
  listeners with the certificates under ``{state_dir}/certs``, open the control socket
  ``{state_dir}/edge.sock`` (0600), write ``edge.pid``, then report one envelope on stdout
  (:class:`~tako_common.protocol.dev.DevEdgeStarted`, or the error) and detach stdout;
- serve: each ``register`` connection is a session (:mod:`tako_common.protocol.dev`):
  its certificates are stored, its app routed while the connection lives; ``state`` lines
  re-route it (:meth:`.registry.DevRegistry.snapshot`); requests for a starting app wait
  through the edge's cold-start hook until it is up, down or :data:`COLD_START_TIMEOUT`
  passed; the edge's error lines for an app are sent to its session as ``log`` events;
- shut down when the last session left and no other connection is open, when nothing
  registered within :data:`FIRST_SESSION_TIMEOUT` of the start, or on SIGTERM/SIGINT:
  registrations are refused from then on (``exiting``), the edge closes its ports first,
  then the control socket goes, so a new ``tako dev`` either reaches a live edge or starts
  a new one on free ports.

Only this module awaits; the decisions are the registry's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tako_common import __version__
from tako_common.errors import ProtocolError, TakoError
from tako_common.protocol.dev import (
    DevEdgeStarted,
    DevEvent,
    DevLeave,
    DevLeft,
    DevList,
    DevListing,
    DevRegister,
    DevRegistered,
    DevState,
    DevStop,
    DevStopped,
    parse_dev_request,
)
from tako_common.protocol.framing import MAX_FRAME_BYTES, encode_frame, error, error_from, ok
from tako_common.protocol.responses import Data
from tako_common.tasks import TaskGroup
from tako_server.edge import Backend, ColdStartError, ColdStartKind, Edge
from tako_server.tls import CertStore

from .page import PageServer
from .ports import HTTP_DEFAULTS, HTTPS_DEFAULTS, Bound, bind_first, candidates
from .registry import INDEX_KEY, DevApp, DevRefused, DevRegistry

log = logging.getLogger("tako.devedge")

COLD_START_TIMEOUT = 30.0
FIRST_SESSION_TIMEOUT = 30.0
STOP_WAIT = 20.0
SOCKET_NAME = "edge.sock"
PID_NAME = "edge.pid"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class DevEdgeSettings:
    """What the dev edge is started with (the command line of ``python -m ...devedge``)."""

    state_dir: Path
    https_port: int | None = None
    http_port: int | None = None

    @property
    def socket_path(self) -> Path:
        return self.state_dir / SOCKET_NAME


class Session:
    """One ``tako dev`` connection that registered an app."""

    def __init__(self, name: str, pid: int, writer: asyncio.StreamWriter) -> None:
        self.name = name
        self.pid = pid
        self.writer = writer
        self.closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"Session({self.name!r}, pid={self.pid}, closed={self.closed.is_set()})"

    def send(self, event: DevEvent) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_frame(event))


class DevHooks:
    """The edge's hooks: cold starts wait for the session's app; logs go to the session."""

    def __init__(self, service: DevEdgeService) -> None:
        self._service = service

    async def cold_start(self, key: str) -> Sequence[Backend]:
        return await self._service.wait_backends(key)

    async def challenge(self, token: str) -> str | None:
        return None

    def app_log(self, key: str, line: str) -> None:
        log.info("%s: %s", key, line)
        session = self._service.sessions.get(key)
        if session is not None:
            session.send(DevEvent(event="log", text=line))

    def report(self, reporter: str, in_flight: Mapping[str, Mapping[int, int]]) -> None:
        return None


class DevEdgeService:
    """The daemon: see the module docstring for its life."""

    def __init__(self, settings: DevEdgeSettings) -> None:
        self.settings = settings
        self.registry = DevRegistry()
        self.sessions: dict[str, Session] = {}
        self._changed = asyncio.Condition()
        self._done = asyncio.Event()
        self._tasks = TaskGroup()
        self._pending = 0
        self._had_session = False
        self.exiting = False
        self.page = PageServer(self.registry, lambda: self.https_port)
        self.edge: Edge | None = None
        self.https_port = 0
        self.http_port = 0
        self._certs: CertStore | None = None
        self._control: asyncio.AbstractServer | None = None

    def __repr__(self) -> str:
        return f"DevEdgeService(https={self.https_port}, {self.registry!r})"

    # --- life -----------------------------------------------------------------------------
    async def run(self) -> int:
        """Start, serve until idle or signalled, stop; the exit code of the process."""
        try:
            notes = await self._start()
        except TakoError as exc:
            _report(error(exc.message, code=exc.code, hint=exc.hint))
            return 2
        _report(ok(DevEdgeStarted(
            https_port=self.https_port, http_port=self.http_port, pid=os.getpid(),
            version=__version__, notes=notes,
        )))
        _detach_stdout()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._done.set)
        self._tasks.spawn(self._first_session_deadline(), name="devedge-first-session")
        await self._done.wait()
        await self._stop()
        return 0

    async def _start(self) -> list[str]:
        state = self.settings.state_dir
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state, 0o700)
        if await _answers(self.settings.socket_path):
            raise TakoError(
                f"a dev edge already answers on {self.settings.socket_path}", code="edge_running"
            )
        https = bind_first(
            HOST, candidates(self.settings.https_port, HTTPS_DEFAULTS),
            variable="TAKO_DEV_HTTPS_PORT",
        )
        try:
            http = bind_first(
                HOST, candidates(self.settings.http_port, HTTP_DEFAULTS),
                variable="TAKO_DEV_HTTP_PORT",
            )
        except TakoError:
            https.sock.close()
            raise
        await self._serve(https, http)
        return [*https.notes, *http.notes]

    async def _serve(self, https: Bound, http: Bound) -> None:
        self.https_port, self.http_port = https.port, http.port
        page_port = await self.page.start()
        certs_dir = self.settings.state_dir / "certs"
        self.edge = Edge(
            DevHooks(self), http_port=http.port, https_port=https.port, certs_dir=certs_dir,
            workers=0, host=HOST, listeners={"http": [http.sock], "https": [https.sock]},
        )
        self.edge.update(self.registry.snapshot(page_port))
        await self.edge.start()
        self._certs = CertStore(certs_dir)
        path = self.settings.socket_path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._control = await asyncio.start_unix_server(
            self._on_connection, path=str(path), limit=MAX_FRAME_BYTES
        )
        os.chmod(path, 0o600)
        (self.settings.state_dir / PID_NAME).write_text(f"{os.getpid()}\n")

    async def _stop(self) -> None:
        self.exiting = True
        for session in self.sessions.values():
            session.send(DevEvent(event="stop", text="the dev edge is shutting down"))
        if self.edge is not None:
            await self.edge.stop(1.0)
        if self._control is not None:
            self._control.close()
        for name in (SOCKET_NAME, PID_NAME):
            with contextlib.suppress(FileNotFoundError):
                (self.settings.state_dir / name).unlink()
        await self.page.stop()
        await self._tasks.cancel_all()

    async def _first_session_deadline(self) -> None:
        await asyncio.sleep(FIRST_SESSION_TIMEOUT)
        if not self._had_session:
            log.info("no app registered within %.0fs: exiting", FIRST_SESSION_TIMEOUT)
            self._done.set()

    def _check_idle(self) -> None:
        if self._had_session and not self.sessions and self._pending == 0:
            log.info("no app left: exiting")
            self.exiting = True
            self._done.set()

    # --- routing --------------------------------------------------------------------------
    async def _routes_changed(self) -> None:
        if self.edge is not None and not self.exiting:
            self.edge.update(self.registry.snapshot(self.page.port))
        async with self._changed:
            self._changed.notify_all()

    async def wait_backends(self, key: str) -> Sequence[Backend]:
        """Backends of ``key`` once its app is up (or the page that says it is down)."""
        page = self.registry.snapshot(self.page.port).apps[INDEX_KEY].backends
        try:
            async with asyncio.timeout(COLD_START_TIMEOUT):
                while True:
                    app = self.registry.get(key)
                    if app is None:
                        raise ColdStartError(ColdStartKind.FAILED, f"{key} stopped")
                    if app.state == "up" and app.port is not None:
                        return (Backend(1, HOST, app.port),)
                    if app.state == "down":
                        return page
                    async with self._changed:
                        await self._changed.wait()
        except TimeoutError:
            raise ColdStartError(
                ColdStartKind.TIMEOUT,
                f"{key} did not listen within {COLD_START_TIMEOUT:.0f}s",
            ) from None

    # --- control socket -------------------------------------------------------------------
    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._pending += 1
        try:
            line = await reader.readline()
            if line:
                await self._dispatch(line, reader, writer)
        except (ConnectionError, ValueError) as exc:  # ValueError: a line over the cap
            log.warning("control connection dropped: %s", exc)
        finally:
            self._pending -= 1
            writer.close()
            self._check_idle()

    async def _dispatch(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            request = parse_dev_request(line)
            if isinstance(request, DevRegister):
                await self._session(request, reader, writer)
                return
            if isinstance(request, DevList):
                reply: Data = self._listing()
            elif isinstance(request, DevStop):
                reply = await self._stop_apps(request)
            else:
                raise ProtocolError(
                    f"{request.command!r} belongs to a session: send register first",
                    code="bad_request",
                )
            writer.write(encode_frame(ok(reply)))
        except TakoError as exc:
            writer.write(encode_frame(error_from(exc)))
        await writer.drain()

    def _listing(self) -> DevListing:
        return DevListing(
            apps=self.registry.listing(self.https_port), https_port=self.https_port,
            http_port=self.http_port, edge_pid=os.getpid(), version=__version__,
        )

    async def _session(
        self, request: DevRegister, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._admit(request)
        session = Session(request.app, request.pid, writer)
        self.sessions[request.app] = session
        self._had_session = True
        try:
            await self._routes_changed()
            app = self.registry.get(request.app)
            assert app is not None
            reply = DevRegistered(
                urls=self.registry.info(app, self.https_port).urls,
                https_port=self.https_port, http_port=self.http_port, edge_pid=os.getpid(),
            )
            writer.write(encode_frame(ok(reply)))
            await writer.drain()
            await self._serve_session(session, reader, writer)
        finally:
            self.sessions.pop(request.app, None)
            self.registry.remove(request.app)
            session.closed.set()
            await self._routes_changed()

    def _admit(self, request: DevRegister) -> None:
        if self.exiting:
            raise TakoError("the dev edge is shutting down", code="exiting")
        if request.client_version != __version__:
            raise TakoError(
                f"the running dev edge is tako {__version__}, this tako is "
                f"{request.client_version}",
                code="version_mismatch",
                hint="stop the apps of the older one with `tako dev stop --all`, then retry",
            )
        self.registry.add(DevApp(
            name=request.app, routes=tuple(request.routes), app_dir=request.app_dir,
            public_dir=request.public_dir, pid=request.pid,
        ))
        try:
            for cert in request.certificates:
                assert self._certs is not None
                self._certs.put(cert.domain, cert.cert_pem.encode(), cert.key_pem.encode())
        except TakoError:
            self.registry.remove(request.app)
            raise
        if self.edge is not None:
            self.edge.certs_changed()

    async def _serve_session(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while line := await reader.readline():
            try:
                request = parse_dev_request(line)
            except ProtocolError as exc:
                log.warning("session %s: %s", session.name, exc.message)
                continue
            if isinstance(request, DevState):
                self.registry.set_state(
                    session.name, request.state, request.port, request.message
                )
                await self._routes_changed()
            elif isinstance(request, DevLeave):
                self.registry.remove(session.name)
                self.sessions.pop(session.name, None)
                remaining = DevLeft(remaining=len(self.sessions))
                writer.write(encode_frame(ok(remaining)))
                await writer.drain()
                return
            else:
                log.warning("session %s: %r is not a session message", session.name, request)

    async def _stop_apps(self, request: DevStop) -> DevStopped:
        if request.all:
            names = sorted(self.sessions)
        elif request.app in self.sessions:
            names = [request.app]
        else:
            running = ", ".join(sorted(self.sessions)) or "none"
            raise DevRefused(
                f"no app named {request.app!r} runs under tako dev; running: {running}",
                hint="see them with `tako dev ls`",
            )
        targets = [self.sessions[name] for name in names]
        for session in targets:
            session.send(DevEvent(event="stop", text="stopped by `tako dev stop`"))
        await asyncio.gather(*(self._await_close(s) for s in targets))
        return DevStopped(stopped=names)

    async def _await_close(self, session: Session) -> None:
        try:
            async with asyncio.timeout(STOP_WAIT):
                await session.closed.wait()
            return
        except TimeoutError:
            pass
        log.warning("session %s did not leave in %.0fs: SIGTERM pid %d", session.name,
                    STOP_WAIT, session.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(session.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await session.closed.wait()


async def _answers(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    if not path.exists():
        return False
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    return True


def _report(envelope: Mapping[str, object]) -> None:
    sys.stdout.buffer.write(encode_frame(dict(envelope)))
    sys.stdout.flush()


def _detach_stdout() -> None:
    """After the start-up line nothing more goes to the spawner's pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)

