"""The shell of a ``tako dev`` session: runs the app and carries out the machine's actions.

Rules:

- the app runs as ``argv`` in the app directory, in its own process group and session
  (Ctrl-C in the terminal reaches ``tako dev`` only, which stops the app in order), with
  stdin from ``/dev/null`` and stdout/stderr straight to this terminal (its output live,
  colours intact);
- stopping the app: SIGTERM to its process group, SIGKILL after :data:`STOP_GRACE`
  seconds; once its leader exited, whatever is left of the group is killed, so no child
  of the app outlives it;
- readiness: a TCP connect to ``127.0.0.1:PORT`` every :data:`PROBE_STARTING` seconds
  while starting, every :data:`PROBE_RUNNING` seconds while running; a probe result from
  before the latest spawn is dropped;
- events come from: the process, the probes, the file watcher, stdin (``r`` + Enter, only
  when stdin is a terminal this process owns or a pipe), SIGINT/SIGTERM/SIGHUP, and the
  edge (``stop``, ``log``, the connection ending); they are handled one at a time;
- only :mod:`tako_client.output` prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tako_client import output
from tako_common import __version__
from tako_common.protocol.dev import DEFAULT_CERT, DevCertificate, DevRegister
from tako_common.routes import route_hosts
from tako_common.tasks import TaskGroup

from .ca import LocalCA
from .command import DevCommand
from .edgelink import EdgeSession, wait_exit
from .machine import (
    Action,
    Begin,
    DevMachine,
    Event,
    Exited,
    FilesChanged,
    Finish,
    Phase,
    Probed,
    Report,
    RestartKey,
    Say,
    Spawn,
    SpawnFailed,
    StopRequested,
    Terminate,
    Tick,
)
from .settings import DevSettings
from .watch import MAX_FILES, Watcher

STOP_GRACE = 5.0
PROBE_STARTING = 0.1
PROBE_RUNNING = 0.5


@dataclass(frozen=True)
class DevPlan:
    """Everything a session needs to run one app."""

    app: str
    app_dir: Path
    routes: tuple[str, ...]
    command: DevCommand
    environ: dict[str, str] = field(repr=False)
    port: int
    public_dir: Path | None
    ready_timeout: float


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the app's ``PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def is_listening(port: int) -> bool:
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class SessionRunner:
    """Runs the app of ``plan`` under the machine's rules until it finishes."""

    def __init__(self, plan: DevPlan, link: EdgeSession) -> None:
        self.plan = plan
        self.link = link
        self.machine = DevMachine(
            app=plan.app, port=plan.port, reloads_itself=plan.command.reloads_itself,
            ready_timeout=plan.ready_timeout,
        )
        self.events: asyncio.Queue[tuple[Event, int | None]] = asyncio.Queue()
        self.proc: asyncio.subprocess.Process | None = None
        self.generation = 0
        self.tasks = TaskGroup()
        self._stdin_buf = b""
        self._stdin_fd: int | None = None

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"SessionRunner({self.machine!r}, pid={pid})"

    def post(self, event: Event, generation: int | None = None) -> None:
        self.events.put_nowait((event, generation))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._watch_stdin(loop)
        self.tasks.spawn(self._watch_files(), "dev-watch")
        self.tasks.spawn(self._probe(), "dev-probe")
        self.tasks.spawn(self._edge_events(), "dev-edge-events")
        self.post(Begin())
        try:
            return await self._loop(loop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if self._stdin_fd is not None:
                loop.remove_reader(self._stdin_fd)
            await self.tasks.cancel_all()
            await self._reap()

    async def _loop(self, loop: asyncio.AbstractEventLoop) -> int:
        while True:
            event, generation = await self.events.get()
            if generation is not None and generation != self.generation:
                continue  # a probe of a process that is gone
            for action in self.machine.handle(event, loop.time()):
                code = await self._do(action)
                if code is not None:
                    return code

    async def _do(self, action: Action) -> int | None:
        match action:
            case Spawn():
                await self._spawn()
            case Terminate(force=force):
                self._terminate(force)
            case Report(state=state, message=message):
                self.link.send_state(state, self.plan.port, message)
            case Say(level=level, text=text):
                _SAY[level](text)
            case Finish(code=code):
                return code
        return None

    # --- the process ----------------------------------------------------------------------
    async def _spawn(self) -> None:
        self.generation += 1
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.plan.command.argv, cwd=self.plan.app_dir, env=self.plan.environ,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as exc:
            self.proc = None
            self.post(SpawnFailed(_spawn_error(self.plan.command, exc)))
            return
        self.tasks.spawn(self._wait(self.proc), f"dev-wait-{self.proc.pid}")

    async def _wait(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        _kill_group(proc.pid, signal.SIGKILL)  # whatever the app left behind
        self.post(Exited(code))

    def _terminate(self, force: bool) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        _kill_group(proc.pid, signal.SIGKILL if force else signal.SIGTERM)
        if not force:
            self.tasks.spawn(self._kill_later(proc), f"dev-kill-{proc.pid}")

    async def _kill_later(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE):
                await proc.wait()
                return
        output.warn(f"{self.plan.app} did not stop within {STOP_GRACE:g}s: killing it")
        _kill_group(proc.pid, signal.SIGKILL)

    async def _reap(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            _kill_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_GRACE):
                    await proc.wait()
        _kill_group(proc.pid, signal.SIGKILL)

    # --- event sources --------------------------------------------------------------------
    async def _probe(self) -> None:
        while True:
            phase = self.machine.phase
            await asyncio.sleep(PROBE_RUNNING if phase is Phase.RUNNING else PROBE_STARTING)
            self.post(Tick())
            if phase not in (Phase.STARTING, Phase.RUNNING):
                continue
            generation = self.generation
            listening = await is_listening(self.plan.port)
            if listening == (phase is Phase.STARTING):  # only a change matters
                self.post(Probed(listening), generation)

    async def _watch_files(self) -> None:
        watcher = Watcher(self.plan.app_dir)
        if await watcher.prime():
            output.warn(f"watching only the first {MAX_FILES} files of {self.plan.app_dir}")
        while True:
            batch = await watcher.next_batch()
            self.post(FilesChanged(tuple(batch)))

    async def _edge_events(self) -> None:
        while True:
            event = await self.link.next_event()
            if event is None:
                self.post(StopRequested("the dev edge went away", failed=True))
                return
            if event.event == "stop":
                self.post(StopRequested(event.text or "asked to stop"))
            else:
                output.line(f"  {event.text}")

    def _on_signal(self, sig: int) -> None:
        name = "interrupted (Ctrl-C)" if sig == signal.SIGINT else signal.Signals(sig).name
        self.post(StopRequested(name))

    def _watch_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = _usable_stdin()
        if fd is None:
            return
        self._stdin_fd = fd
        loop.add_reader(fd, self._on_stdin)

    def _on_stdin(self) -> None:
        assert self._stdin_fd is not None
        try:
            data = os.read(self._stdin_fd, 4096)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._stdin_fd)
            self._stdin_fd = None
            return
        self._stdin_buf += data
        *lines, self._stdin_buf = self._stdin_buf.split(b"\n")
        if any(line.strip().lower() == b"r" for line in lines):
            self.post(RestartKey())


def _usable_stdin() -> int | None:
    """stdin's descriptor when ``r`` + Enter can be read from it without side effects: a
    pipe, or a terminal whose foreground process group is ours (a background job that
    read its terminal would be stopped)."""
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):
        return None
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return fd
    if os.isatty(fd):
        try:
            return fd if os.tcgetpgrp(fd) == os.getpgrp() else None
        except OSError:
            return None
    return None


def _spawn_error(command: DevCommand, exc: OSError) -> str:
    program = command.argv[0]
    if isinstance(exc, FileNotFoundError):
        return (
            f"command not found: {program} (the dev command from {command.source}); "
            "install it, or set dev in tako.toml"
        )
    return f"{program}: {exc.strerror or exc}"


_SAY: dict[str, Callable[[str], None]] = {
    "info": output.line,
    "ok": output.success,
    "warn": output.warn,
    "error": lambda text: output.error(text),
}


# --------------------------------------------------------------------------- one session


def certificate_hosts(routes: tuple[str, ...]) -> list[str]:
    """The certificate names a session needs: each route host, then ``default``."""
    return [*route_hosts(routes), DEFAULT_CERT]


async def serve(plan: DevPlan, settings: DevSettings) -> int:
    """Register with the dev edge (starting it if needed), run the app, leave; the exit code."""
    ca, made = LocalCA.ensure(settings.ca_dir)
    if made:
        output.success(f"made a local certificate authority: {ca.cert_path}")
        output.line("  run `tako dev trust` once so browsers trust the dev URLs")
    certificates = []
    for host in certificate_hosts(plan.routes):
        chain, key = ca.issue(host)
        certificates.append(
            DevCertificate(domain=host, cert_pem=chain.decode(), key_pem=key.decode())
        )
    request = DevRegister(
        client_version=__version__, app=plan.app, routes=list(plan.routes),
        app_dir=str(plan.app_dir), pid=os.getpid(), certificates=certificates,
        public_dir=str(plan.public_dir) if plan.public_dir else None,
    )
    link = await EdgeSession.open(settings, request)
    _banner(plan, link)
    try:
        code = await SessionRunner(plan, link).run()
    finally:
        remaining = await link.leave()
    if link.started is not None and remaining == 0:
        await asyncio.to_thread(wait_exit, link.started, 10.0)
    return code


def _banner(plan: DevPlan, link: EdgeSession) -> None:
    for note in link.notes:
        output.warn(note)
    urls = link.registered.urls
    output.success(f"{plan.app} → {urls[0]}")
    for url in urls[1:]:
        output.line(f"  also {url}")
    reload = (
        "reloads by itself" if plan.command.reloads_itself else "restarts when files change"
    )
    output.line(
        f"  {plan.command.display}  ({plan.command.source}; {reload}; r + Enter restarts; "
        "Ctrl-C stops)"
    )
