"""App instance processes: spawn, adopt, signal their process group, watch their exit.

Rules:

- every instance runs in its own session and process group (``start_new_session``), so a
  signal to the group reaches the children it started (``sh -c``, workers, ``sleep``);
- an instance does NOT die with the daemon (no ``PR_SET_PDEATHSIG``): a SIGHUP takeover,
  a restart or a ``kill -9`` of tako-server leaves it running, and the next daemon
  adopts it from its record (:mod:`tako_server.supervisor.adopt`); a plain stop of the
  daemon stops every instance itself;
- with an :class:`~tako_server.supervisor.spec.Isolation`, the child joins the app's
  cgroup, drops to the app's uid/gid (no supplementary groups) and sets
  ``no_new_privs`` before ``exec`` (:func:`child_setup`);
- environment = the spec's (composed once, by :func:`tako_server.launch.instance_environ`)
  + ``HOST``, ``PORT``, ``TAKO_INSTANCE``; nothing is read from the daemon's own
  environment (a spec without ``PATH`` gets :data:`FALLBACK_PATH`); stdin is ``/dev/null``;
- stdout and stderr go to append-only files the daemon tails into the app log
  (:mod:`tako_server.supervisor.outputs`), never to pipes held by the daemon;
- the exit of a child is awaited directly (``Process.wait``: its exit code); an adopted
  instance is watched through a pidfd (``pidfd_open``: its exit is known at once, its
  code is not: it is not our child); after the exit the whole group gets SIGKILL so no
  orphan of the instance keeps running.
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

from tako_server import cgroups
from tako_server.supervisor.adopt import InstanceRecord, is_recorded_process, write_record
from tako_server.supervisor.logs import AppLog
from tako_server.supervisor.outputs import InstanceFiles, InstanceOutput
from tako_server.supervisor.spec import Isolation
from tako_server.takeover import read_proc_stat

FALLBACK_PATH = "/usr/local/bin:/usr/bin:/bin"
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38

_libc_name = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_libc_name, use_errno=True) if _libc_name else None
_prctl = _libc.prctl if _libc is not None else None


def die_with_parent() -> None:  # runs in the child between fork and exec (one-off processes)
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


def child_setup(isolation: Isolation | None) -> Callable[[], None] | None:
    """What the child does before ``exec``: join the app's cgroup, then drop to the app's
    user with ``no_new_privs`` (None: nothing to do, the server's own user)."""
    if isolation is None or (isolation.uid is None and isolation.cgroup is None):
        return None

    def setup() -> None:
        if isolation.cgroup is not None:
            cgroups.join(isolation.cgroup)
        if isolation.uid is not None and isolation.gid is not None:
            os.setgroups([])
            os.setgid(isolation.gid)
            os.setuid(isolation.uid)
        if _prctl is not None:
            _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)

    return setup


def as_app(isolation: Isolation | None) -> None:  # in the child between fork and exec
    """Die with the server; with isolation, the app's cgroup, user and no_new_privs (one-off
    processes: they run as the app's instances do, but end with the server)."""
    die_with_parent()
    setup = child_setup(isolation)
    if setup is not None:
        setup()


def pin_recorded(pid: int, start_ticks: int) -> int | None:
    """A pidfd of the recorded process (an instance's or a worker's), or None when the pid
    is gone or now names another process (checked after the pidfd pins it)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    if not is_recorded_process(read_proc_stat(pid), start_ticks):
        os.close(pidfd)
        return None
    return pidfd


class InstanceProcess:
    """One running instance: its process (a child, or adopted), its output and its exit."""

    def __init__(
        self,
        instance_id: int,
        pid: int,
        port: int,
        output: InstanceOutput,
        *,
        proc: asyncio.subprocess.Process | None = None,
        pidfd: int | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.pid = pid
        self.port = port
        self.output = output
        self.proc = proc
        self.pidfd = pidfd
        self.returncode: int | None = None
        self.exited = False

    @property
    def adopted(self) -> bool:
        return self.proc is None

    @classmethod
    async def spawn(
        cls,
        instance_id: int,
        command: list[str],
        workdir: Path,
        environ: Mapping[str, str],
        log: AppLog,
        *,
        version: str = "",
        isolation: Isolation | None = None,
    ) -> InstanceProcess:
        """Start the instance; raises ``OSError`` when the command cannot be executed."""
        if not command:
            raise OSError("empty start command")
        port = free_port()
        files = InstanceFiles(log.log_dir, instance_id)
        out_fd, err_fd = files.create_outputs()
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=str(workdir),
                env=instance_env(environ, port, instance_id),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                start_new_session=True,
                preexec_fn=child_setup(isolation),
            )
        except BaseException:
            files.remove()
            raise
        finally:
            os.close(out_fd)
            os.close(err_fd)
        stat = read_proc_stat(proc.pid)
        ticks = stat.start_ticks if stat is not None else 0
        record = InstanceRecord(instance_id, proc.pid, ticks, port, version)
        write_record(files.record, record)
        output = InstanceOutput(files, instance_id, log)
        output.start()
        return cls(instance_id, proc.pid, port, output, proc=proc)

    @classmethod
    def adopt(cls, record: InstanceRecord, log: AppLog) -> InstanceProcess | None:
        """Supervise a recorded instance again (None when its pid is gone or reused)."""
        pidfd = pin_recorded(record.pid, record.start_ticks)
        if pidfd is None:
            return None
        files = InstanceFiles(log.log_dir, record.instance_id)
        output = InstanceOutput(files, record.instance_id, log, resume=True)
        output.start()
        return cls(record.instance_id, record.pid, record.port, output, pidfd=pidfd)

    async def wait(self) -> int | None:
        """Wait for the exit (its code; None for an adopted process), then SIGKILL what is
        left of its group."""
        if self.proc is not None:
            code: int | None = await self.proc.wait()
        else:
            await self._wait_pidfd()
            code = None
        self.returncode, self.exited = code, True
        self.signal_group(signal.SIGKILL)
        return code

    async def _wait_pidfd(self) -> None:
        assert self.pidfd is not None
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(self.pidfd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(self.pidfd)

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the instance's process group; False when the group is gone."""
        try:
            if self.pidfd is not None and not self.exited:  # a pid reused is never signalled
                signal.pidfd_send_signal(self.pidfd, 0)
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    async def close_output(self, timeout: float = 2.0) -> None:
        """The process exited: copy the rest of its output, remove its files."""
        try:
            await asyncio.wait_for(self.output.finish(), timeout)
        finally:
            self._close_pidfd()

    async def release(self) -> None:
        """Leave the process running for another daemon: record how far its output was
        read, keep its files and record."""
        await self.output.release()
        self._close_pidfd()

    def _close_pidfd(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def __repr__(self) -> str:
        return (
            f"InstanceProcess(id={self.instance_id}, pid={self.pid}, port={self.port}, "
            f"adopted={self.adopted}, returncode={self.returncode})"
        )
