"""Zero-downtime takeover: an old tako-server hands its listeners to a new one (SIGHUP).

This module holds the wire format and the process primitives of the handshake;
:mod:`tako_server.takeover` is the only code that drives them (and keeps the status).

Protocol (details and the reasons in ``docs/upgrade.md``):

1. The old process starts the successor with the same command line (the frozen
   executable itself for a PyInstaller build) and three environment variables:
   ``TAKO_TAKEOVER_FROM=<old pid>``, ``TAKO_LISTEN_FDS=http:5,6;https:7,8`` (its
   listening sockets, passed with ``pass_fds``, so the kernel accept queues are shared
   and never reset) and ``TAKO_TAKEOVER_READY_FD=<n>`` (the write end of a pipe).
2. The successor restores apps from SQLite, starts its own instances, waits until they
   are healthy, serves on the inherited sockets (each edge worker accepts only once it
   has applied the current route snapshot and read the certificates; the edge is up
   only when every worker said so, :mod:`tako_server.edge.workers`), swaps ``tako.sock``
   to its own socket, tells systemd ``MAINPID=<new>`` + ``READY=1`` and only then
   writes ``ready <pid>`` to the pipe.
3. The old process reads the pipe: ``ready`` = stop accepting, drain, stop its
   instances, exit 0. EOF (the successor died) or no answer within the deadline = the
   takeover failed; the old process kills what it started, keeps serving and says why.

Rules: the successor is a plain :class:`subprocess.Popen` child (an asyncio subprocess
transport would kill it when the old loop closes); inherited descriptors are made
non-inheritable again on adoption so apps and workers never hold them by accident; the
environment variables are removed from ``os.environ`` when read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from tako_common.errors import TakoError, ValidationError

log = logging.getLogger(__name__)

TAKEOVER_FROM_ENV = "TAKO_TAKEOVER_FROM"
LISTEN_FDS_ENV = "TAKO_LISTEN_FDS"
READY_FD_ENV = "TAKO_TAKEOVER_READY_FD"
TAKEOVER_ENV_NAMES = (TAKEOVER_FROM_ENV, LISTEN_FDS_ENV, READY_FD_ENV)
READY_TIMEOUT = 60.0
ABORT_TIMEOUT = 45.0  # a successor told to stop drains its instances first
LISTENER_KINDS = ("http", "https")


class TakeoverError(TakoError):
    code = "takeover_failed"


def reload_owner(pid: int) -> str:
    """Upgrade-mode owner a server uses when it starts a takeover on its own (SIGHUP)."""
    return f"reload-{pid}"


# --------------------------------------------------------------------------- wire format


def format_listen_fds(fds: Mapping[str, Sequence[int]]) -> str:
    """``{"http": [5, 6], "https": [7]}`` -> ``"http:5,6;https:7"`` (kinds with no fds left out)."""
    return ";".join(
        f"{kind}:{','.join(map(str, numbers))}" for kind, numbers in fds.items() if numbers
    )


def parse_listen_fds(text: str) -> dict[str, list[int]]:
    """Inverse of :func:`format_listen_fds`; refuses unknown kinds and non-numbers."""
    result: dict[str, list[int]] = {}
    for part in filter(None, text.strip().split(";")):
        kind, sep, numbers = part.partition(":")
        if not sep or kind not in LISTENER_KINDS or kind in result:
            raise ValidationError(
                f"invalid {LISTEN_FDS_ENV} entry {part!r}: use kind:fd[,fd...] with kind"
                f" one of {', '.join(LISTENER_KINDS)}, each kind once"
            )
        try:
            fds = [int(n) for n in numbers.split(",")]
        except ValueError:
            raise ValidationError(
                f"invalid {LISTEN_FDS_ENV} entry {part!r}: fds are numbers"
            ) from None
        if any(fd < 3 for fd in fds):
            raise ValidationError(f"invalid {LISTEN_FDS_ENV} entry {part!r}: fds start at 3")
        result[kind] = fds
    return result


def successor_argv(
    *, frozen: bool, executable: str, argv: Sequence[str], orig_argv: Sequence[str]
) -> list[str]:
    """The command line of the successor: this program again, with the same arguments.

    A PyInstaller build re-runs its executable (``sys.executable`` is the binary, so a
    binary replaced on disk starts the new version); an interpreter re-runs itself with
    its original options (``-m tako_server.cli`` or the console script path).
    """
    if frozen:
        return [executable, *argv[1:]]
    return [executable, *orig_argv[1:]]


def current_successor_argv() -> list[str]:
    return successor_argv(
        frozen=bool(getattr(sys, "frozen", False)),
        executable=sys.executable,
        argv=sys.argv,
        orig_argv=getattr(sys, "orig_argv", sys.argv),
    )


# --------------------------------------------------------------------------- successor side


def adopt_listener(fd: int) -> socket.socket:
    """A listening TCP socket object for an inherited descriptor (validated)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise TakeoverError(f"inherited listener fd {fd} is not a socket: {exc}") from exc
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.detach()
        raise TakeoverError(f"inherited fd {fd} is not a listening TCP socket")
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


@dataclass
class Inheritance:
    """What a successor received from the process it takes over from."""

    from_pid: int
    listeners: dict[str, list[socket.socket]] = field(default_factory=dict)
    ready_fd: int | None = None

    def __repr__(self) -> str:
        counts = {kind: len(socks) for kind, socks in self.listeners.items()}
        return f"Inheritance(from_pid={self.from_pid}, listeners={counts})"

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> Inheritance | None:
        """Read and REMOVE the takeover variables; None for a normal start."""
        values = {name: environ.pop(name, None) for name in TAKEOVER_ENV_NAMES}
        from_pid = values[TAKEOVER_FROM_ENV]
        if not from_pid:
            return None
        if not from_pid.isdigit():
            raise ValidationError(f"invalid {TAKEOVER_FROM_ENV}={from_pid!r}: expected a pid")
        ready = values[READY_FD_ENV]
        ready_fd = int(ready) if ready and ready.isdigit() else None
        if ready_fd is not None:
            os.set_inheritable(ready_fd, False)
        fds = parse_listen_fds(values[LISTEN_FDS_ENV] or "")
        listeners = {kind: [adopt_listener(fd) for fd in numbers] for kind, numbers in fds.items()}
        return cls(int(from_pid), listeners, ready_fd)

    @property
    def owner(self) -> str:
        return reload_owner(self.from_pid)

    def listeners_for(self, kind: str, port: int) -> list[socket.socket]:
        """Inherited sockets of ``kind`` bound to ``port`` (any port for 0); the rest are
        closed (the configured port changed: the new process binds the new one)."""
        keep: list[socket.socket] = []
        drop: list[socket.socket] = []
        for sock in self.listeners.pop(kind, []):
            bound = sock.getsockname()[1]
            (keep if port in (0, bound) else drop).append(sock)
        for sock in drop:
            log.info("takeover: %s port changed, closing inherited listener %s", kind, sock)
            sock.close()
        return keep

    def signal_ready(self) -> bool:
        """Tell the old process we serve now; False when it is gone."""
        if self.ready_fd is None:
            return False
        fd, self.ready_fd = self.ready_fd, None
        try:
            os.write(fd, f"ready {os.getpid()}\n".encode())
            return True
        except OSError as exc:
            log.warning("takeover: could not tell pid %d we are ready: %s", self.from_pid, exc)
            return False
        finally:
            os.close(fd)

    def close_listeners(self) -> None:
        """Close the inherited sockets nothing adopted (a server without the edge); the
        ready pipe stays open for :meth:`signal_ready`."""
        for socks in self.listeners.values():
            for sock in socks:
                sock.close()
        self.listeners.clear()

    def close(self) -> None:
        """Give up (start-up failed): the old process sees EOF; unused sockets closed."""
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None
        self.close_listeners()


# --------------------------------------------------------------------------- old side


class Successor:
    """The old process's handle on the new one it starts (see the module protocol)."""

    def __init__(
        self,
        argv: Sequence[str],
        listeners: Mapping[str, Sequence[socket.socket]],
        *,
        environ: Mapping[str, str] | None = None,
        timeout: float = READY_TIMEOUT,
    ) -> None:
        self.argv = list(argv)
        self.listeners = {kind: list(socks) for kind, socks in listeners.items()}
        self.environ = dict(os.environ if environ is None else environ)
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"Successor(pid={pid}, argv={self.argv[:3]!r}...)"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _spawn(self, ready_fd: int) -> subprocess.Popen[bytes]:
        fds = {kind: [s.fileno() for s in socks] for kind, socks in self.listeners.items()}
        env = {k: v for k, v in self.environ.items() if k not in TAKEOVER_ENV_NAMES}
        env[TAKEOVER_FROM_ENV] = str(os.getpid())
        env[READY_FD_ENV] = str(ready_fd)
        listen = format_listen_fds(fds)
        if listen:
            env[LISTEN_FDS_ENV] = listen
        passed = (ready_fd, *(fd for numbers in fds.values() for fd in numbers))
        try:
            return subprocess.Popen(
                self.argv, pass_fds=passed, env=env, stdin=subprocess.DEVNULL, close_fds=True
            )
        except OSError as exc:
            raise TakeoverError(f"cannot start the new tako-server {self.argv[0]}: {exc}") from exc

    async def start(self) -> int:
        """Start the successor and wait until it serves; its pid. Raises TakeoverError
        (after stopping what was started) when it exits or misses the deadline."""
        read_fd, write_fd = os.pipe()
        try:
            self.process = self._spawn(write_fd)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        log.info("takeover: started successor pid %d: %s", self.process.pid, " ".join(self.argv))
        try:
            line = await self._read_line(read_fd)
        except TimeoutError:
            await self.abort()
            raise TakeoverError(
                f"the new tako-server (pid {self.process.pid}) was not ready within"
                f" {self.timeout:.0f}s; it was stopped"
            ) from None
        if not line.startswith(b"ready"):
            code = await self._exit_code(5.0)
            if code is None:
                await self.abort()
            raise TakeoverError(
                f"the new tako-server (pid {self.process.pid}) exited"
                f" {'with code ' + str(code) if code is not None else 'its handshake'}"
                " before it was ready",
                hint="see its log lines above (journalctl -u tako-server)",
            )
        return self.process.pid

    async def _read_line(self, fd: int) -> bytes:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            async with asyncio.timeout(self.timeout):
                return await reader.readline()
        finally:
            transport.close()

    async def _exit_code(self, timeout: float) -> int | None:
        """The successor's exit code, polled for at most ``timeout`` seconds."""
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (code := self.process.poll()) is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return code

    async def abort(self) -> None:
        """Stop the successor: SIGTERM (it stops its own instances), SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        if await self._exit_code(ABORT_TIMEOUT) is None:
            log.error("takeover: successor pid %d ignored SIGTERM; killing it", self.process.pid)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self._exit_code(10.0)
