"""Worker processes of one workflow group: started, watched, restarted, stopped.

Rules (the same as the app's instances, :mod:`tako_server.supervisor.process`):

- a worker runs the group's ``run`` command in the release's working directory with the
  instance environment (:func:`tako_server.launch.instance_environ`) plus what only the
  queue knows (``TAKO_API_URL``, ``TAKO_API_TOKEN``, ``TAKO_WORKFLOW_GROUP``,
  ``TAKO_WORKFLOW_CONCURRENCY``, ``TAKO_WORKER_ID``), in its own process group, with
  ``PR_SET_PDEATHSIG=SIGKILL`` and stdin from ``/dev/null``;
- its stdout and stderr are always read to EOF into the app log, each line prefixed with
  ``[group]`` (so ``tako logs`` shows which group wrote it);
- a worker that exits while it should run is restarted after ``0.5 s * 2**(n-1)`` (capped
  at 30 s; ``n`` counts exits that came less than 60 s after the start), and
  ``on_exit(worker_id)`` is called so its claimed runs go back to the queue at once;
- stopping sends SIGTERM to each worker's group and SIGKILL after the grace period (a
  worker finishes its current runs in that time).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from tako_common.tasks import spawn
from tako_server.supervisor.logs import AppLog, LineSplitter, Stream
from tako_server.supervisor.process import FALLBACK_PATH, as_app
from tako_server.supervisor.spec import Isolation

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
STABLE_AFTER = 60.0
_READ_CHUNK = 64 * 1024


def restart_delay(crashes: int) -> float:
    """Seconds before restart number ``crashes`` (1-based) of a worker."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(crashes - 1, 16)))


class Worker:
    """One supervised worker process slot: runs, restarts, stops."""

    def __init__(self, group: WorkerGroup, worker_id: str) -> None:
        self.group = group
        self.worker_id = worker_id
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.restarts = 0
        self.task = spawn(self._run(), name=f"tako-worker-{worker_id}")

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"Worker({self.worker_id}, pid={pid}, restarts={self.restarts})"

    async def _run(self) -> None:
        crashes = 0
        while not self.stopping:
            started = time.monotonic()
            code = await self._once()
            self.group.on_exit(self.worker_id)
            if self.stopping:
                return
            crashes = crashes + 1 if time.monotonic() - started < STABLE_AFTER else 1
            self.restarts += 1
            delay = restart_delay(crashes)
            self.group.log.write(
                f"[{self.group.name}] worker {self.worker_id} exited with {code};"
                f" restarting in {delay:.1f}s"
            )
            await asyncio.sleep(delay)

    async def _once(self) -> int | str:
        group = self.group
        environ = {"PATH": FALLBACK_PATH, **group.environ, "TAKO_WORKER_ID": self.worker_id}
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *group.command, cwd=str(group.workdir), env=environ,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
                preexec_fn=functools.partial(as_app, group.isolation), limit=_READ_CHUNK,
            )
        except OSError as exc:
            group.log.write(f"[{group.name}] cannot start worker: {exc}")
            return str(exc)
        pipes: list[tuple[asyncio.StreamReader | None, Stream]] = [
            (self.proc.stdout, "out"),
            (self.proc.stderr, "err"),
        ]
        readers = [
            spawn(_pump(stream, name, group), name=f"tako-worker-log-{self.worker_id}-{name}")
            for stream, name in pipes
            if stream is not None
        ]
        code = await self.proc.wait()
        _killpg(self.proc.pid, signal.SIGKILL)
        await asyncio.wait(readers, timeout=1.0)
        for reader in readers:
            reader.cancel()
        return code

    async def stop(self, grace: float) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            _killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.task), grace)
            except TimeoutError:
                _killpg(proc.pid, signal.SIGKILL)
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

    def kill(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.returncode is None:
            _killpg(self.proc.pid, signal.SIGKILL)


class WorkerGroup:
    """The workers of one group of one app on this server."""

    def __init__(
        self,
        name: str,
        command: list[str],
        workdir: Path,
        environ: Mapping[str, str],
        log: AppLog,
        *,
        id_prefix: str,
        on_exit: Callable[[str], None],
        isolation: Isolation | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.workdir = workdir
        self.environ = dict(environ)
        self.log = log
        self.id_prefix = id_prefix
        self.on_exit = on_exit
        #: the app's user and cgroup, as its instances have (None: the server's own user)
        self.isolation = isolation
        self.workers: list[Worker] = []
        self._next = 0

    def __repr__(self) -> str:
        return f"WorkerGroup({self.name}, workers={len(self.workers)})"

    @property
    def count(self) -> int:
        return len(self.workers)

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    async def scale(self, count: int, grace: float) -> None:
        """Start or stop workers until ``count`` run (the newest stop first)."""
        while len(self.workers) < count:
            self._next += 1
            self.workers.append(Worker(self, f"{self.id_prefix}-{self._next}"))
        extra, self.workers = self.workers[count:], self.workers[:count]
        await asyncio.gather(*(w.stop(grace) for w in extra))

    async def stop(self, grace: float) -> None:
        await self.scale(0, grace)

    def kill(self) -> None:
        for worker in self.workers:
            worker.kill()


async def _pump(stream: asyncio.StreamReader, name: Stream, group: WorkerGroup) -> None:
    splitter = LineSplitter()
    while True:
        chunk = await stream.read(_READ_CHUNK)
        lines = splitter.feed(chunk) if chunk else splitter.flush()
        if lines:
            group.log.write_lines([f"[{group.name}] {line}" for line in lines], stream=name)
        if not chunk:
            return


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
