"""App instance processes: spawn, read their output, signal their process group.

Rules:

- every instance runs in its own session and process group (``start_new_session``), so a
  signal to the group reaches the children it started (``sh -c``, workers, ``sleep``);
- the child also gets ``PR_SET_PDEATHSIG=SIGKILL``: if the daemon dies without a
  shutdown, the instance does not outlive it;
- environment = the spec's (composed once, by :func:`tako_server.launch.instance_environ`)
  + ``HOST``, ``PORT``, ``TAKO_INSTANCE``; nothing is read from the daemon's own
  environment (a spec without ``PATH`` gets :data:`FALLBACK_PATH`); stdin is ``/dev/null``;
- stdout and stderr are ALWAYS read until EOF and written to the app log, so a chatty app
  never blocks on a full pipe;
- the exit is awaited directly (``Process.wait``): a crash is known at once; after the
  exit the whole group gets SIGKILL so no orphan of the instance keeps running.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

from tako_common.tasks import spawn
from tako_server.supervisor.logs import AppLog, LineSplitter, Stream

FALLBACK_PATH = "/usr/local/bin:/usr/bin:/bin"
_PR_SET_PDEATHSIG = 1
_READ_CHUNK = 64 * 1024

_libc_name = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_libc_name, use_errno=True) if _libc_name else None
_prctl = _libc.prctl if _libc is not None else None


def die_with_parent() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free on ``host`` (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def instance_env(environ: Mapping[str, str], port: int, instance_id: int) -> dict[str, str]:
    """The spec's environment plus what only the supervisor knows (address, instance id)."""
    env = {"PATH": FALLBACK_PATH, **environ}
    env.update({"HOST": "127.0.0.1", "PORT": str(port), "TAKO_INSTANCE": str(instance_id)})
    return env


class InstanceProcess:
    """One running instance: its process, its output readers and its exit."""

    def __init__(self, instance_id: int, proc: asyncio.subprocess.Process, port: int) -> None:
        self.instance_id = instance_id
        self.proc = proc
        self.port = port
        self.returncode: int | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def spawn(
        cls,
        instance_id: int,
        command: list[str],
        workdir: Path,
        environ: Mapping[str, str],
        log: AppLog,
    ) -> InstanceProcess:
        """Start the instance; raises ``OSError`` when the command cannot be executed."""
        if not command:
            raise OSError("empty start command")
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=str(workdir),
            env=instance_env(environ, port, instance_id),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent,
            limit=_READ_CHUNK,
        )
        handle = cls(instance_id, proc, port)
        handle._start_readers(log)
        return handle

    def _start_readers(self, log: AppLog) -> None:
        pairs: list[tuple[asyncio.StreamReader | None, Stream]] = [
            (self.proc.stdout, "out"),
            (self.proc.stderr, "err"),
        ]
        for stream, name in pairs:
            if stream is not None:
                task = spawn(
                    _pump(stream, name, self.instance_id, log),
                    name=f"tako-log-{name}-{self.instance_id}-{self.pid}",
                )
                self._readers.append(task)

    async def wait(self) -> int:
        """Wait for the process to exit, then SIGKILL what is left of its group."""
        code = await self.proc.wait()
        self.returncode = code
        self.signal_group(signal.SIGKILL)
        return code

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the instance's process group; False when the group is gone."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    async def close_output(self, timeout: float = 2.0) -> None:
        """Wait (bounded) for the output readers to reach EOF, then cancel them."""
        if not self._readers:
            return
        _, pending = await asyncio.wait(self._readers, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def __repr__(self) -> str:
        return (
            f"InstanceProcess(id={self.instance_id}, pid={self.pid}, port={self.port}, "
            f"returncode={self.returncode})"
        )


async def _pump(stream: asyncio.StreamReader, name: Stream, instance_id: int, log: AppLog) -> None:
    """Copy one output pipe into the app log until EOF (never stops reading)."""
    splitter = LineSplitter()
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            break
        lines = splitter.feed(chunk)
        if lines:
            log.write_lines(lines, stream=name, instance=instance_id)
    rest = splitter.flush()
    if rest:
        log.write_lines(rest, stream=name, instance=instance_id)


def on_exit(handle: InstanceProcess, callback: Callable[[int], None]) -> asyncio.Task[None]:
    """A named task that awaits the exit of ``handle`` and reports its return code."""

    async def watch() -> None:
        code = await handle.wait()
        callback(code)

    return spawn(watch(), name=f"tako-exit-{handle.instance_id}-{handle.pid}")
