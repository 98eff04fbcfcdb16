"""One-off processes (a deploy's release command, ``tako exec``) and the sessions that run them.

Rules:

- a one-off runs as an instance does: as the server's user, in its own session and
  process group, with ``PR_SET_PDEATHSIG=SIGKILL``, in the release's working directory,
  with the environment the caller built for the app's instances (minus ``HOST``,
  ``PORT`` and ``TAKO_INSTANCE``). Its argv and environment are never logged (secrets);
  log lines name the session's label only;
- with pipes, stdout and stderr are two streams and stdin is ``/dev/null`` unless the
  client sends input; with a terminal (``tty``), a pseudo-terminal of the client's size
  becomes the process's controlling terminal (``setsid`` + ``TIOCSCTTY`` in the child), so
  Ctrl-C, job control and window-size changes (``TIOCSWINSZ``, then ``SIGWINCH``) behave
  as over ``ssh -t``;
- a session ends in one of three ways: the process exits (what is left of its group gets
  SIGKILL, the output is drained for at most :data:`DRAIN_TIMEOUT`, then one exit
  event); the timeout passes (the group gets SIGTERM, SIGKILL after :data:`STOP_GRACE`;
  the exit event says ``timed_out``); or the client goes away (SIGHUP for a terminal,
  SIGTERM otherwise, SIGKILL after :data:`STOP_GRACE`; nothing more is sent);
- exit codes follow the shell: a process ended by signal N exits ``128 + N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import signal
import struct
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tako_common.errors import ProtocolError, TakoError
from tako_common.protocol import (
    EofInput,
    ResizeInput,
    SessionExit,
    SessionStarted,
    StdinInput,
    decode_bytes,
    error_from,
    ok,
    output_event,
    parse_input,
)
from tako_common.protocol.session import MAX_CHUNK
from tako_common.tasks import spawn
from tako_server.supervisor.process import FALLBACK_PATH, as_app
from tako_server.supervisor.spec import Isolation

log = logging.getLogger(__name__)

#: After an exit, how long output still held in pipes or the terminal may take to arrive.
DRAIN_TIMEOUT = 2.0
#: Between the polite signal and SIGKILL when a session is stopped.
STOP_GRACE = 5.0
#: Output chunks buffered between the process and a slow client (then the process waits).
_QUEUE_CHUNKS = 64

StreamName = Literal["stdout", "stderr"]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Incoming = AsyncIterator[bytes | ProtocolError]


class OneOffError(TakoError):
    code = "oneoff"


def exit_status(returncode: int) -> tuple[int, str | None]:
    """``(exit code, signal name)`` of a finished process, as a shell reports it."""
    if returncode >= 0:
        return returncode, None
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"SIG{number}"
    return 128 + number, name


@dataclass(frozen=True)
class OneOffSpec:
    """What to run, where and how. ``label`` names it in logs (never the argv)."""

    argv: list[str]
    workdir: Path
    environ: dict[str, str]
    label: str
    tty: bool = False
    stdin: bool = False
    cols: int = 80
    rows: int = 24
    isolation: Isolation | None = None  # the app's user and cgroup (as root; server.md)

    def __repr__(self) -> str:  # the environment holds secrets: never shown
        return f"OneOffSpec({self.label}, tty={self.tty}, stdin={self.stdin})"


class OneOffProcess:
    """One running one-off: its process, its output queue and (with a terminal) the pty."""

    def __init__(
        self, proc: asyncio.subprocess.Process, spec: OneOffSpec, master: int | None
    ) -> None:
        self.proc = proc
        self.spec = spec
        self._master = master
        self._queue: asyncio.Queue[tuple[StreamName, bytes] | None] = asyncio.Queue(_QUEUE_CHUNKS)
        self._open_streams = 0
        self._readers: list[asyncio.Task[None]] = []
        self.returncode: int | None = None

    def __repr__(self) -> str:
        return f"OneOffProcess({self.spec.label}, pid={self.pid}, returncode={self.returncode})"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def takes_input(self) -> bool:
        return self.spec.tty or self.spec.stdin

    @classmethod
    async def start(cls, spec: OneOffSpec) -> OneOffProcess:
        """Start the process; :class:`OneOffError` when it cannot be executed."""
        environ = {"PATH": FALLBACK_PATH, **spec.environ}
        try:
            if spec.tty:
                handle = await cls._start_on_terminal(spec, environ)
            else:
                handle = await cls._start_with_pipes(spec, environ)
        except OSError as exc:
            raise OneOffError(
                f"cannot run {spec.argv[0]!r}: {exc.strerror or exc}",
                hint="check the program name and that it is installed on the server",
            ) from exc
        handle._start_readers()
        return handle

    @classmethod
    async def _start_with_pipes(cls, spec: OneOffSpec, environ: dict[str, str]) -> OneOffProcess:
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            cwd=str(spec.workdir),
            env=environ,
            stdin=asyncio.subprocess.PIPE if spec.stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=functools.partial(as_app, spec.isolation),
            limit=MAX_CHUNK,
        )
        return cls(proc, spec, None)

    @classmethod
    async def _start_on_terminal(cls, spec: OneOffSpec, environ: dict[str, str]) -> OneOffProcess:
        master, slave = os.openpty()
        try:
            set_terminal_size(master, spec.cols, spec.rows)
            proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                cwd=str(spec.workdir),
                env=environ,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                preexec_fn=functools.partial(_take_terminal, slave, spec.isolation),
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # the child holds its own copies; EOF comes when they close
        os.set_blocking(master, False)
        return cls(proc, spec, master)

    def _start_readers(self) -> None:
        if self._master is not None:
            self._spawn_reader(_read_terminal(self._master), "stdout")
            return
        self._spawn_reader(_read_pipe(self.proc.stdout), "stdout")
        self._spawn_reader(_read_pipe(self.proc.stderr), "stderr")

    def _spawn_reader(self, chunks: AsyncIterator[bytes], stream: StreamName) -> None:
        self._open_streams += 1

        async def pump() -> None:
            try:
                async for chunk in chunks:
                    await self._queue.put((stream, chunk))
            finally:  # no await here: a cancelled reader must still count as ended
                self._open_streams -= 1
                with contextlib.suppress(asyncio.QueueFull):
                    self._queue.put_nowait(None)  # wakes output(); if full, it has items

        self._readers.append(spawn(pump(), name=f"tako-oneoff-{stream}-{self.pid}"))

    async def output(self) -> AsyncIterator[tuple[StreamName, bytes]]:
        """Output chunks in the order they were read, until every stream reached EOF."""
        while self._open_streams or not self._queue.empty():
            item = await self._queue.get()
            if item is not None:
                yield item

    async def write(self, data: bytes) -> None:
        if self._master is not None:
            await _write_fd(self._master, data)
        elif self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write(data)
            with contextlib.suppress(ConnectionError):
                await self.proc.stdin.drain()

    def close_stdin(self) -> None:
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, b"\x04")  # the terminal's end-of-file character
        elif self.proc.stdin is not None:
            self.proc.stdin.close()

    def resize(self, cols: int, rows: int) -> None:
        if self._master is not None:
            with contextlib.suppress(OSError):
                set_terminal_size(self._master, cols, rows)

    async def wait(self) -> int:
        """Wait for the exit, then SIGKILL what is left of the group (so the output ends)."""
        code = await self.proc.wait()
        self.returncode = code
        self.signal_group(signal.SIGKILL)
        return code

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace: float = STOP_GRACE) -> int:
        """SIGHUP (terminal) or SIGTERM to the group, SIGKILL after ``grace``; the exit code."""
        if self.proc.returncode is None:
            self.signal_group(signal.SIGHUP if self.spec.tty else signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
        return await self.wait()

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Wait (bounded) for the readers to reach EOF, then cancel what is left."""
        if not self._readers:
            return
        _, pending = await asyncio.wait(self._readers, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        """Last resort on every path: SIGKILL a group still running, close the terminal."""
        if self.proc.returncode is None:
            self.signal_group(signal.SIGKILL)
        for task in self._readers:
            task.cancel()
        master, self._master = self._master, None
        if master is not None:
            with contextlib.suppress(OSError):
                os.close(master)


def set_terminal_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal(slave: int, isolation: Isolation | None) -> None:  # in the child
    """New session, the pty as its controlling terminal, die with the server, run as the app."""
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    as_app(isolation)


async def _read_pipe(stream: asyncio.StreamReader | None) -> AsyncIterator[bytes]:
    if stream is None:
        return
    while chunk := await stream.read(MAX_CHUNK):
        yield chunk


async def _read_terminal(master: int) -> AsyncIterator[bytes]:
    """Chunks from a pty master until the terminal hangs up (EIO once no slave is open)."""
    while True:
        await _ready(master, writing=False)
        try:
            chunk = os.read(master, MAX_CHUNK)
        except BlockingIOError:
            continue
        except OSError:
            return
        if not chunk:
            return
        yield chunk


async def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _ready(fd, writing=True)


async def _ready(fd: int, *, writing: bool) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if writing:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if writing:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


@dataclass
class OneOffSession:
    """A handler's two-way answer: ``first`` is sent, then :meth:`run` relays the process.

    ``timeout``: seconds before the command is stopped (``None``: no limit);
    ``on_exit`` sees the exit event (the release step logs it); ``finished`` runs once the
    process is gone and before the exit event is sent (the dispatcher ends the request's
    guard there, so a client that reads the exit may send its next command at once).
    """

    process: OneOffProcess
    first: SessionStarted
    timeout: float | None = None
    on_exit: Callable[[SessionExit], None] | None = None
    finished: Callable[[], None] = lambda: None
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __repr__(self) -> str:
        return f"OneOffSession({self.process!r}, timeout={self.timeout})"

    async def run(self, incoming: Incoming, send: Send) -> None:
        """Relay output and input until the process exits (then the exit event is sent) or
        the client goes away (then the process is stopped)."""

        async def locked_send(message: dict[str, Any]) -> None:
            async with self._send_lock:
                await send(message)

        label = self.process.spec.label
        finish = spawn(self._finish(locked_send), name=f"tako-oneoff-{self.process.pid}")
        inputs = spawn(self._inputs(incoming, locked_send), name=f"tako-oneoff-in-{label}")
        try:
            await asyncio.wait({finish, inputs}, return_when=asyncio.FIRST_COMPLETED)
            if not finish.done():
                log.info("%s: the client went away; stopping pid %d", label, self.process.pid)
                return
            result = finish.result()
            self.finished()
            if self.on_exit is not None:
                self.on_exit(result)
            with contextlib.suppress(ConnectionError):
                await locked_send(ok(result))
        finally:
            for task in (finish, inputs):
                task.cancel()
            await asyncio.gather(finish, inputs, return_exceptions=True)
            if self.process.proc.returncode is None:
                await self.process.stop()

    async def _finish(self, send: Send) -> SessionExit:
        process = self.process
        started = time.monotonic()
        relay = spawn(self._relay(send), name=f"tako-oneoff-out-{process.pid}")
        timed_out = False
        try:
            code = await asyncio.wait_for(process.wait(), self.timeout)
        except TimeoutError:
            timed_out = True
            log.warning("%s: timed out after %.0fs; stopping it", process.spec.label, self.timeout)
            code = await process.stop()
        await process.drain()
        with contextlib.suppress(asyncio.CancelledError):
            await relay  # every output event goes out before the exit event
        exit_code, signal_name = exit_status(code)
        return SessionExit(
            exit_code=exit_code,
            signal=signal_name,
            timed_out=timed_out,
            duration=round(time.monotonic() - started, 3),
        )

    async def _relay(self, send: Send) -> None:
        async for stream, chunk in self.process.output():
            await send(ok(output_event(stream, chunk)))

    async def _inputs(self, incoming: Incoming, send: Send) -> None:
        """Apply the client's frames; returns when the client closed the connection."""
        async for frame in incoming:
            try:
                if isinstance(frame, ProtocolError):
                    raise frame
                await self._apply(parse_input(frame))
            except ProtocolError as exc:
                await send(error_from(exc))

    async def _apply(self, frame: StdinInput | EofInput | ResizeInput) -> None:
        process = self.process
        if isinstance(frame, ResizeInput):
            process.resize(frame.cols, frame.rows)
            return
        if not process.takes_input:
            raise ProtocolError(
                "this session takes no input (exec without --interactive, or a release command)",
                code="no_input",
            )
        if isinstance(frame, StdinInput):
            await process.write(decode_bytes(frame.data))
        else:
            process.close_stdin()

    def close(self) -> None:
        self.process.close()
