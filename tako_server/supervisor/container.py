"""Container instances: one instance of a container release, run through Podman's
Docker-compatible API with ``aiodocker``.

Rules (the same contract as :mod:`tako_server.supervisor.process`, so the state machine
cannot tell the two apart):

- the container gets the spec's environment (vars, secrets, ``TAKO_*``; composed once by
  :func:`tako_server.launch.instance_environ`) plus ``HOST=0.0.0.0`` (inside the
  container), ``PORT`` and ``TAKO_INSTANCE``; ``PORT`` is published on the host's
  loopback only (``127.0.0.1:PORT -> PORT``), so the edge probes and proxies to the same
  port as for a process;
- limits: memory (no extra swap), pids, the server's own open-file and process limits
  (a container never asks for more than the host allows), a read-only root file system
  with a tmpfs ``/tmp`` unless the release opts out; the app's data directories are
  bind-mounted at the same path, so ``TAKO_DATA_DIR`` means the same inside;
- stdout and stderr are followed (with the engine's timestamps) until the container ends
  and written to the app log; how far the log was read is kept in
  ``<log_dir>/containers/<container id>.cursor`` (:class:`LogCursor`: the second of the
  last line read and how many lines of that second were read, written after each batch),
  so a later reader resumes exactly there (``since`` that second, skipping that many);
- :meth:`ContainerInstance.wait` returns the exit code and removes the container;
  ``signal_group`` sends the signal to the container (asynchronously: the caller is
  synchronous); every container carries the labels ``tako.app`` / ``tako.version`` /
  ``tako.instance`` / ``tako.port`` so ``tako delete`` finds them and a later daemon
  adopts them;
- containers outlive the daemon: :meth:`ContainerInstance.release` stops following and
  leaves the container running; the next daemon lists the app's containers by label
  (:func:`app_containers`) and judges each (:func:`judge_container`, pure): a running
  one of the restored version is adopted (:meth:`ContainerInstance.adopt`), one that
  exited while no daemon watched has its last output copied and is removed (the machine
  replaces it), any other (another version, the app stopped, no tako labels) is removed;
- API failures become :class:`ContainerError` (an ``OSError``: the runner reports a
  failed spawn exactly like an executable that is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import resource
import secrets
import signal
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiodocker

from tako_common.tasks import spawn
from tako_server.supervisor.logs import AppLog, LineSplitter
from tako_server.supervisor.process import free_port
from tako_server.supervisor.spec import ContainerRun, LaunchSpec

LABEL_APP = "tako.app"
LABEL_VERSION = "tako.version"
LABEL_INSTANCE = "tako.instance"
LABEL_PORT = "tako.port"
CURSORS_DIR = "containers"  # under the app's log dir
_CURSOR = struct.Struct("<qq")
_SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGKILL: "SIGKILL"}


class ContainerError(OSError):
    """The container engine refused or failed an operation (the message says which)."""


def container_environ(environ: Mapping[str, str], port: int, instance_id: int) -> list[str]:
    """``KEY=value`` list of an instance: the spec's environment, then address and id."""
    env = dict(environ)
    env.update({"HOST": "0.0.0.0", "PORT": str(port), "TAKO_INSTANCE": str(instance_id)})
    return [f"{key}={value}" for key, value in env.items()]


def host_ulimits(pids_limit: int) -> list[dict[str, Any]]:
    """Open files: the server's own hard limit, at most 65536; processes: the pids limit
    (Podman's defaults are above what an unprivileged host limit lets crun set)."""
    _, nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    if nofile == resource.RLIM_INFINITY or nofile > 65536:
        nofile = 65536
    return [
        {"Name": "nofile", "Soft": nofile, "Hard": nofile},
        {"Name": "nproc", "Soft": pids_limit, "Hard": pids_limit},
    ]


def create_config(
    spec: LaunchSpec, run: ContainerRun, port: int, instance_id: int
) -> dict[str, Any]:
    """The Docker API ``containers/create`` body of one instance (pure)."""
    host_config: dict[str, Any] = {
        "PortBindings": {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
        "Memory": run.memory_mb * 1024 * 1024,
        "MemorySwap": run.memory_mb * 1024 * 1024,
        "PidsLimit": run.pids_limit,
        "ReadonlyRootfs": run.read_only,
        "Ulimits": host_ulimits(run.pids_limit),
        "Binds": [f"{path}:{path}:rw" for path in run.mounts],
    }
    if run.read_only:
        host_config["Tmpfs"] = {"/tmp": "rw,nosuid,nodev,size=64m"}
    config: dict[str, Any] = {
        "Image": run.image,
        "Env": container_environ(spec.environ, port, instance_id),
        "ExposedPorts": {f"{port}/tcp": {}},
        "Labels": {
            LABEL_APP: spec.key,
            LABEL_VERSION: spec.version,
            LABEL_INSTANCE: str(instance_id),
            LABEL_PORT: str(port),
        },
        "HostConfig": host_config,
        "StopSignal": "SIGTERM",
    }
    if spec.command:
        config["Cmd"] = list(spec.command)
    return config


def container_name(spec: LaunchSpec, instance_id: int) -> str:
    """A unique, readable container name: ``tako-{app}-{env}-{instance}-{random}``."""
    return f"tako-{spec.app}-{spec.env}-{instance_id}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class LogCursor:
    """How far a container's log was read: the second (UNIX time) of the last line read
    and how many lines of that second were read (the engine's timestamps are whole
    seconds, so a second is named and then counted into)."""

    second: int = 0
    count: int = 0

    def after(self, second: int) -> LogCursor:
        """The cursor once a line of ``second`` was read (pure)."""
        return LogCursor(second, self.count + 1) if second == self.second else LogCursor(second, 1)


def split_stamp(line: str) -> tuple[int | None, str]:
    """``2026-01-02T03:04:05Z text`` -> (UNIX seconds, text); (None, line) without a
    timestamp with a zone (pure; fractions of a second are dropped)."""
    stamp, sep, text = line.partition(" ")
    if not sep:
        return None, line
    head = stamp.split(".", 1)[0]
    zone = "+00:00" if stamp.endswith("Z") else stamp[len(head):].lstrip(".0123456789")
    try:
        moment = datetime.fromisoformat(head.rstrip("Z") + zone)
    except ValueError:
        return None, line
    if moment.tzinfo is None:
        return None, line
    return int(moment.timestamp()), text


class Resume:
    """Which lines of a log read again from the cursor's second were read already (pure):
    those before that second and the first ``count`` lines of it; from the first other
    line on, everything is new."""

    def __init__(self, cursor: LogCursor) -> None:
        self.second = cursor.second
        self.left = cursor.count
        self.done = cursor.second == 0 and cursor.count == 0

    def __repr__(self) -> str:
        return f"Resume(second={self.second}, left={self.left}, done={self.done})"

    def is_new(self, second: int | None) -> bool:
        if self.done:
            return True
        if second is not None and second < self.second:
            return False
        if second == self.second and self.left > 0:
            self.left -= 1
            return False
        self.done = True
        return True


class ContainerVerdict(enum.Enum):
    ADOPT = "adopt"
    GONE = "gone"  # exited while no daemon watched: its last output, then replaced
    STALE = "stale"  # another version, the app stopped, or not one of ours: removed


def judge_container(
    state: str, labels: Mapping[str, str], version: str, stopped: bool
) -> ContainerVerdict:
    """What a starting daemon does with a container of the app it finds (pure)."""
    try:
        ours = int(labels.get(LABEL_INSTANCE, "0")) > 0 and int(labels.get(LABEL_PORT, "0")) > 0
    except ValueError:
        ours = False
    if not ours or labels.get(LABEL_VERSION) != version:
        return ContainerVerdict.STALE
    if state != "running":
        return ContainerVerdict.GONE
    return ContainerVerdict.STALE if stopped else ContainerVerdict.ADOPT


@dataclass(frozen=True)
class FoundContainer:
    """A container of the app as the engine lists it."""

    id: str
    state: str
    labels: Mapping[str, str]

    @property
    def instance_id(self) -> int:
        return int(self.labels.get(LABEL_INSTANCE, "0"))

    @property
    def port(self) -> int:
        return int(self.labels.get(LABEL_PORT, "0"))


async def app_containers(socket: Path, key: str) -> list[FoundContainer]:
    """Every container labelled with the app, running or not (raises ContainerError,
    also when the engine's socket is not there yet)."""
    if not socket.exists():
        raise ContainerError(f"containers of {key}: no container engine socket at {socket}")
    try:
        async with aiodocker.Docker(url=f"unix://{socket}") as docker:
            found = await docker.containers.list(
                all=True, filters=json.dumps({"label": [f"{LABEL_APP}={key}"]})
            )
    except (aiodocker.DockerError, OSError) as exc:
        raise ContainerError(f"containers of {key}: {_reason(exc)}") from exc
    result = []
    for container in found:
        info = container._container  # noqa: SLF001 - what the list call returned
        labels = info.get("Labels") or {}
        result.append(FoundContainer(container.id, str(info.get("State", "")), labels))
    return result


async def remove_container(socket: Path, container_id: str, log_dir: Path) -> None:
    """Force-remove one container (gone already: nothing to do) and its log cursor."""
    with contextlib.suppress(aiodocker.DockerError, OSError):
        async with aiodocker.Docker(url=f"unix://{socket}") as docker:
            await docker.containers.container(container_id).delete(force=True)
    with contextlib.suppress(FileNotFoundError):
        (log_dir / CURSORS_DIR / f"{container_id}.cursor").unlink()


async def remove_app_containers(socket: Path, key: str, log_dir: Path) -> int:
    """Force-remove every container labelled with the app and their log cursors (``tako
    delete``); how many there were. Raises ContainerError when they cannot be listed."""
    found = await app_containers(socket, key)
    for box in found:
        await remove_container(socket, box.id, log_dir)
    return len(found)


class _CursorFile:
    """The cursor of one container's log on disk (one ``pwrite`` per batch)."""

    def __init__(self, log_dir: Path, container_id: str) -> None:
        self.path = log_dir / CURSORS_DIR / f"{container_id}.cursor"
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def read(self) -> LogCursor:
        data = os.pread(self.fd, _CURSOR.size, 0)
        return LogCursor(*_CURSOR.unpack(data)) if len(data) == _CURSOR.size else LogCursor()

    def write(self, cursor: LogCursor) -> None:
        if self.fd >= 0:
            os.pwrite(self.fd, _CURSOR.pack(cursor.second, cursor.count), 0)

    def close(self, remove: bool) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


class ContainerInstance:
    """One running container instance: its container, its log follower and its exit."""

    def __init__(
        self, instance_id: int, docker: aiodocker.Docker, container: Any, port: int, pid: int
    ) -> None:
        self.instance_id = instance_id
        self.port = port
        self.pid = pid
        self.returncode: int | None = None
        self._docker = docker
        self._container = container
        self._reader: asyncio.Task[None] | None = None
        self._cursor: _CursorFile | None = None
        self._signals: set[asyncio.Task[None]] = set()

    @property
    def container_id(self) -> str:
        return str(self._container.id)

    @classmethod
    async def spawn(cls, instance_id: int, spec: LaunchSpec, log: AppLog) -> ContainerInstance:
        """Create and start the container; raises :class:`ContainerError`."""
        run = spec.container
        if run is None:
            raise ContainerError(f"{spec.key} is not a container release")
        port = free_port()
        docker = aiodocker.Docker(url=f"unix://{run.socket}")
        try:
            config = create_config(spec, run, port, instance_id)
            container = await docker.containers.create(
                config, name=container_name(spec, instance_id)
            )
            try:
                await container.start()
                info = await container.show()
            except aiodocker.DockerError:
                await _remove(container)
                raise
        except (aiodocker.DockerError, OSError) as exc:
            await docker.close()
            raise ContainerError(f"container of {run.image}: {_reason(exc)}") from exc
        handle = cls(instance_id, docker, container, port, int(info["State"].get("Pid") or 0))
        handle._start_reader(log, spec.key, resume=False)
        return handle

    @classmethod
    async def adopt(cls, found: FoundContainer, socket: Path, log: AppLog, key: str
                    ) -> ContainerInstance:
        """Watch a container a previous daemon left (its log resumes at the cursor);
        raises :class:`ContainerError` when the engine does not know it."""
        docker = aiodocker.Docker(url=f"unix://{socket}")
        try:
            container = await docker.containers.get(found.id)
            info = await container.show()
        except (aiodocker.DockerError, OSError) as exc:
            await docker.close()
            raise ContainerError(f"container {found.id[:12]}: {_reason(exc)}") from exc
        pid = int(info["State"].get("Pid") or 0)
        handle = cls(found.instance_id, docker, container, found.port, pid)
        handle._start_reader(log, key, resume=True)
        return handle

    def _start_reader(self, log: AppLog, key: str, *, resume: bool) -> None:
        self._cursor = _CursorFile(log.log_dir, self.container_id)
        start = self._cursor.read() if resume else LogCursor()
        self._reader = spawn(
            self._follow(log, start), name=f"tako-log-container-{key}-{self.instance_id}"
        )

    async def _follow(self, log: AppLog, cursor: LogCursor) -> None:
        splitter = LineSplitter()
        params: dict[str, Any] = {"timestamps": True}
        if cursor.second:
            params["since"] = cursor.second
        resume = Resume(cursor)
        try:
            stream = self._container.log(stdout=True, stderr=True, follow=True, **params)
            async for chunk in stream:
                lines = splitter.feed(chunk.encode("utf-8", "replace"))
                if lines:
                    cursor = self._emit(log, lines, cursor, resume)
        except (TimeoutError, aiodocker.DockerError, OSError):
            pass
        rest = splitter.flush()
        if rest:
            self._emit(log, rest, cursor, resume)

    def _emit(self, log: AppLog, lines: list[str], cursor: LogCursor, resume: Resume
              ) -> LogCursor:
        """Write new lines to the app log, then record the cursor (no await in between)."""
        new = []
        for second, text in map(split_stamp, lines):
            if resume.is_new(second):
                new.append(text)
                cursor = cursor.after(second) if second is not None else cursor
        if new:
            log.write_lines(new, stream="out", instance=self.instance_id)
            if self._cursor is not None:
                self._cursor.write(cursor)
        return cursor

    async def wait(self) -> int:
        """Wait for the container to exit, remove it, return its exit code."""
        try:
            result = await self._container.wait()
            code = int(result.get("StatusCode", -1))
        except (aiodocker.DockerError, OSError):
            code = -1  # the engine lost the container: report it as a crash
        self.returncode = code
        if self._reader is not None:  # its last words first, then the container goes
            await asyncio.wait([self._reader], timeout=1.0)
        await _remove(self._container)
        return code

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the container (in the background); False once it has exited."""
        if self.returncode is not None:
            return False
        task = spawn(self._kill(_SIGNAL_NAMES.get(sig, sig.name)), name=f"tako-kill-{self.pid}")
        self._signals.add(task)
        task.add_done_callback(self._signals.discard)
        return True

    async def _kill(self, name: str) -> None:
        try:
            await self._container.kill(signal=name)
        except (aiodocker.DockerError, OSError):
            pass  # already gone: the wait reports the exit

    async def close_output(self, timeout: float = 2.0) -> None:
        """Wait (bounded) for the log follower to end, then close the API connection."""
        if self._reader is not None:
            done, _ = await asyncio.wait([self._reader], timeout=timeout)
            if not done:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)
        if self._signals:
            await asyncio.wait(self._signals, timeout=timeout)
        if self._cursor is not None:
            self._cursor.close(remove=True)
        await self._docker.close()

    async def release(self) -> None:
        """Leave the container running for another daemon: stop following its log (the
        cursor on disk says how far it was read) and close the API connection."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._cursor is not None:
            self._cursor.close(remove=False)
        await self._docker.close()

    def __repr__(self) -> str:
        return (
            f"ContainerInstance(id={self.instance_id}, pid={self.pid}, port={self.port}, "
            f"returncode={self.returncode})"
        )


async def _remove(container: Any) -> None:
    try:
        await container.delete(force=True)
    except (aiodocker.DockerError, OSError):
        pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiodocker.DockerError):
        return f"{exc.message} (HTTP {exc.status})"
    return str(exc) or type(exc).__name__
