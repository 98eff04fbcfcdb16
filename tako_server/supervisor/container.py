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
- stdout and stderr are followed until the container ends and written to the app log;
- :meth:`ContainerInstance.wait` returns the exit code and removes the container;
  ``signal_group`` sends the signal to the container (asynchronously: the caller is
  synchronous); every container carries the labels ``tako.app`` / ``tako.version`` so
  ``tako delete`` and start-up clean-up find them;
- API failures become :class:`ContainerError` (an ``OSError``: the runner reports a
  failed spawn exactly like an executable that is missing).
"""

from __future__ import annotations

import asyncio
import resource
import secrets
import signal
from collections.abc import Mapping
from typing import Any

import aiodocker

from tako_common.tasks import spawn
from tako_server.supervisor.logs import AppLog, LineSplitter
from tako_server.supervisor.process import free_port
from tako_server.supervisor.spec import ContainerRun, LaunchSpec

LABEL_APP = "tako.app"
LABEL_VERSION = "tako.version"
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
        "Labels": {LABEL_APP: spec.key, LABEL_VERSION: spec.version},
        "HostConfig": host_config,
        "StopSignal": "SIGTERM",
    }
    if spec.command:
        config["Cmd"] = list(spec.command)
    return config


def container_name(spec: LaunchSpec, instance_id: int) -> str:
    """A unique, readable container name: ``tako-{app}-{env}-{instance}-{random}``."""
    return f"tako-{spec.app}-{spec.env}-{instance_id}-{secrets.token_hex(3)}"


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
        self._signals: set[asyncio.Task[None]] = set()

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
        handle._reader = spawn(
            handle._follow(log), name=f"tako-log-container-{spec.key}-{instance_id}"
        )
        return handle

    async def _follow(self, log: AppLog) -> None:
        splitters = LineSplitter()
        try:
            stream = self._container.log(stdout=True, stderr=True, follow=True)
            async for chunk in stream:
                lines = splitters.feed(chunk.encode("utf-8", "replace"))
                if lines:
                    log.write_lines(lines, stream="out", instance=self.instance_id)
        except (TimeoutError, aiodocker.DockerError, OSError):
            pass
        rest = splitters.flush()
        if rest:
            log.write_lines(rest, stream="out", instance=self.instance_id)

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
