"""The client side of sessions (``tako exec``, a deploy's release command): output to the
terminal, input and terminal size to the server.

Rules:

- one server: its output is written as it came (raw bytes, stdout to stdout, stderr to
  stderr); several servers (``--all``, or a release command's output): whole lines, each
  prefixed ``server | `` (:class:`LineSplitter` keeps partial lines until they end);
- the last lines of the output are kept (:class:`Tail`) for error summaries;
- stdin is read in a daemon thread (terminals, pipes and files alike; it never holds up
  the CLI's exit) and sent as ``stdin`` frames, then ``eof``;
- with a terminal (``tako exec -i`` on a tty) the local terminal is in raw mode for the
  session and restored on every path; every key, Ctrl-C included, goes to the remote
  terminal, and window-size changes (SIGWINCH) are sent as ``resize`` frames.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import signal
import sys
import termios
import threading
import tty
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from tako_client import output
from tako_client.remote import RemoteSession
from tako_common.protocol import EofInput, ResizeInput, SessionExit, StdinInput
from tako_common.protocol.session import MAX_CHUNK
from tako_common.tasks import spawn

#: Lines of output kept for a failure's summary.
TAIL_LINES = 20
#: A session's events may pause this long beyond the command's own timeout.
EVENT_SLACK = 60.0


class LineSplitter:
    """Bytes in, complete lines out (decoded as UTF-8, invalid bytes replaced); pure."""

    def __init__(self) -> None:
        self._partial = b""

    def __repr__(self) -> str:
        return f"LineSplitter(pending={len(self._partial)})"

    def feed(self, data: bytes) -> list[str]:
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [_text(line) for line in lines]

    def flush(self) -> list[str]:
        rest, self._partial = self._partial, b""
        return [_text(rest)] if rest else []


def _text(line: bytes) -> str:
    return line.rstrip(b"\r").decode("utf-8", "replace")


@dataclass
class Tail:
    """The last ``size`` lines seen."""

    size: int = TAIL_LINES
    lines: deque[str] = field(default_factory=deque)

    def add(self, lines: list[str]) -> None:
        self.lines.extend(lines)
        while len(self.lines) > self.size:
            self.lines.popleft()

    def as_list(self) -> list[str]:
        return list(self.lines)


@dataclass
class OutputSink:
    """Where one session's output goes: raw (``prefix`` None) or prefixed lines."""

    prefix: str | None = None
    tail: Tail = field(default_factory=Tail)
    _splitters: dict[str, LineSplitter] = field(default_factory=dict)

    def write(self, stream: str, data: bytes) -> None:
        splitter = self._splitters.setdefault(stream, LineSplitter())
        lines = splitter.feed(data)
        self.tail.add(lines)
        if self.prefix is None:
            output.remote_bytes(data, err=stream == "stderr")
            return
        for line in lines:
            output.remote_line(self.prefix, line, err=stream == "stderr")

    def flush(self) -> None:
        for stream, splitter in self._splitters.items():
            rest = splitter.flush()
            self.tail.add(rest)
            if self.prefix is not None:
                for line in rest:
                    output.remote_line(self.prefix, line, err=stream == "stderr")


async def relay(
    session: RemoteSession,
    sink: OutputSink,
    *,
    stdin: bool = False,
    terminal: bool = False,
) -> SessionExit:
    """Copy the session's output to ``sink`` (and stdin / the terminal size to the server)
    until it exits; returns the exit event. Closes the session."""
    helpers: list[asyncio.Task[None]] = []
    if stdin:
        helpers.append(spawn(_pump_stdin(session), name="tako-exec-stdin"))
    loop = asyncio.get_running_loop()
    if terminal:
        loop.add_signal_handler(signal.SIGWINCH, _on_resize, session, helpers)
    timeout = session.started.timeout
    wait = timeout + EVENT_SLACK if timeout is not None else None
    try:
        async for event in session.events(timeout=wait):
            if isinstance(event, SessionExit):
                return event
            sink.write(event.stream, event.raw)
        raise AssertionError("a session ends with its exit event")  # pragma: no cover
    finally:
        sink.flush()
        if terminal:
            loop.remove_signal_handler(signal.SIGWINCH)
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await session.close()


def _on_resize(session: RemoteSession, helpers: list[asyncio.Task[None]]) -> None:
    cols, rows = terminal_size()
    frame = ResizeInput(cols=cols, rows=rows)
    helpers.append(spawn(session.send(frame), name="tako-exec-resize"))


def terminal_size() -> tuple[int, int]:
    """``(columns, rows)`` of the terminal on stdin/stdout (80x24 when there is none)."""
    for fd in (0, 1):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return max(size.columns, 1), max(size.lines, 1)
    fallback = shutil.get_terminal_size((80, 24))
    return fallback.columns, fallback.lines


async def _pump_stdin(session: RemoteSession) -> None:
    """Send what arrives on stdin, then ``eof``."""
    chunks: asyncio.Queue[bytes] = asyncio.Queue(16)
    _start_stdin_thread(asyncio.get_running_loop(), chunks)
    while chunk := await chunks.get():
        await session.send(StdinInput.of(chunk))
    await session.send(EofInput())


def _start_stdin_thread(loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes]) -> None:
    def read() -> None:
        while True:
            try:
                chunk = os.read(0, MAX_CHUNK)
            except OSError:
                chunk = b""
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop).result()
            except (RuntimeError, concurrent.futures.CancelledError):
                return  # the loop is gone: the session is over
            if not chunk:
                return

    threading.Thread(target=read, name="tako-stdin", daemon=True).start()


@contextlib.contextmanager
def raw_terminal() -> Iterator[None]:
    """Put the terminal on stdin in raw mode; restore its settings on every path."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSADRAIN)  # keys typed ahead are kept (and sent)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
