"""Worker processes of one workflow group: started, watched, restarted, stopped, handed
over to the next tako-server and adopted by it.

Rules (the same as the app's instances, :mod:`tako_server.supervisor.process`):

- a worker runs the group's ``run`` command in the release's working directory with the
  instance environment (:func:`tako_server.launch.instance_environ`) plus what only the
  queue knows (``TAKO_API_URL``, ``TAKO_API_TOKEN``, ``TAKO_WORKFLOW_GROUP``,
  ``TAKO_WORKFLOW_CONCURRENCY``, ``TAKO_WORKER_ID``), in its own process group, with
  stdin from ``/dev/null``; it does NOT die with the daemon (no ``PR_SET_PDEATHSIG``);
- its stdout and stderr go to append-only files tailed into the app log
  (:mod:`tako_server.supervisor.outputs`, under ``<log_dir>/workers/``), each line
  prefixed with ``[group]`` (so ``tako logs`` shows which group wrote it); right after the
  spawn its record (:class:`~tako_server.supervisor.adopt.WorkerRecord`: worker id, pid,
  kernel start time, group, version) is written beside them;
- a worker that exits while it should run is restarted after ``0.5 s * 2**(n-1)`` (capped
  at 30 s; ``n`` counts exits that came less than 60 s after the start), and
  ``on_exit(worker_id)`` is called so its claimed runs go back to the queue at once;
- stopping sends SIGTERM to each worker's group and SIGKILL after the grace period (a
  worker finishes its current runs in that time), then waits up to ``KILL_WAIT`` for the
  exit to be reaped and its output and files closed; a worker waiting to restart stops
  at once;
- worker ids are unique per daemon: the service's groups share one counter and a new id
  skips those this daemon watches and those of records on disk;
- releasing (a takeover, a restart that keeps apps) leaves the process running, records
  how far its output was read and keeps its record; the next daemon adopts it
  (:func:`adopt_worker`: pidfd, same start time, else it is not the same process) with
  the same worker id, so the runs it holds stay its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from tako_common.tasks import spawn
from tako_server.supervisor.adopt import WorkerRecord, write_record
from tako_server.supervisor.logs import AppLog
from tako_server.supervisor.outputs import InstanceFiles, InstanceOutput
from tako_server.supervisor.process import (
    FALLBACK_PATH,
    InstanceProcess,
    child_setup,
    pin_recorded,
)
from tako_server.supervisor.spec import Isolation
from tako_server.takeover import read_proc_stat

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
STABLE_AFTER = 60.0
KILL_WAIT = 5.0  # after SIGKILL: for the exit to be reaped and the output closed
WORKERS_DIR = "workers"  # under the app's log dir: records and output files


def restart_delay(crashes: int) -> float:
    """Seconds before restart number ``crashes`` (1-based) of a worker."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(crashes - 1, 16)))


def worker_files(log_dir: Path, worker_id: str) -> InstanceFiles:
    """The record and output files of one worker."""
    return InstanceFiles(log_dir, 0, subdir=WORKERS_DIR, stem=worker_id)


def adopt_worker(record: WorkerRecord, log: AppLog) -> InstanceProcess | None:
    """Watch a recorded worker again (None when its pid is gone or names another process)."""
    pidfd = pin_recorded(record.pid, record.start_ticks)
    if pidfd is None:
        return None
    files = worker_files(log.log_dir, record.worker_id)
    output = InstanceOutput(files, None, log, resume=True, prefix=f"[{record.group}] ")
    output.start()
    return InstanceProcess(0, record.pid, 0, output, pidfd=pidfd)


class Worker:
    """One supervised worker process slot: runs, restarts, stops, is handed over."""

    def __init__(
        self, group: WorkerGroup, worker_id: str, adopted: InstanceProcess | None = None
    ) -> None:
        self.group = group
        self.worker_id = worker_id
        self.handle: InstanceProcess | None = adopted
        self.stopping = False
        self._sleeping = False  # waiting to restart: no process runs
        self.restarts = 0
        group.owned.add(worker_id)
        self.task = spawn(self._run(adopted), name=f"tako-worker-{worker_id}")

    def __repr__(self) -> str:
        pid = self.handle.pid if self.handle is not None else None
        return f"Worker({self.worker_id}, pid={pid}, restarts={self.restarts})"

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle is not None else None

    async def _run(self, adopted: InstanceProcess | None) -> None:
        try:
            await self._loop(adopted)
        finally:
            self.group.owned.discard(self.worker_id)
            self.group.draining.discard(self.worker_id)  # the id may serve again

    async def _loop(self, adopted: InstanceProcess | None) -> None:
        crashes = 0
        while not self.stopping:
            started = time.monotonic()
            if adopted is not None:
                code, adopted = await self._watch(adopted), None
            else:
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
            self._sleeping = True
            try:
                await asyncio.sleep(delay)
            finally:
                self._sleeping = False

    async def _once(self) -> int | str:
        handle = await self._spawn()
        if isinstance(handle, str):
            return handle
        if self.stopping:  # stop() came while spawning: it found no process to signal
            handle.signal_group(signal.SIGTERM)
        return await self._watch(handle)

    async def _spawn(self) -> InstanceProcess | str:
        """Start the process, write its record, follow its output (an error: why not)."""
        group = self.group
        environ = {"PATH": FALLBACK_PATH, **group.environ, "TAKO_WORKER_ID": self.worker_id}
        files = worker_files(group.log.log_dir, self.worker_id)
        out_fd, err_fd = files.create_outputs()
        try:
            proc = await asyncio.create_subprocess_exec(
                *group.command, cwd=str(group.workdir), env=environ,
                stdin=asyncio.subprocess.DEVNULL, stdout=out_fd, stderr=err_fd,
                start_new_session=True, preexec_fn=child_setup(group.isolation),
            )
        except OSError as exc:
            files.remove()
            group.log.write(f"[{group.name}] cannot start worker: {exc}")
            return str(exc)
        finally:
            os.close(out_fd)
            os.close(err_fd)
        stat = read_proc_stat(proc.pid)
        ticks = stat.start_ticks if stat is not None else 0
        record = WorkerRecord(self.worker_id, proc.pid, ticks, group.name, group.version)
        write_record(files.record, record)
        output = InstanceOutput(files, None, group.log, prefix=f"[{group.name}] ")
        output.start()
        self.handle = InstanceProcess(0, proc.pid, 0, output, proc=proc)
        return self.handle

    async def _watch(self, handle: InstanceProcess) -> int | str:
        """Wait for the exit, then copy the rest of its output and remove its files."""
        self.handle = handle
        code = await handle.wait()
        with contextlib.suppress(OSError, TimeoutError):
            await handle.close_output(timeout=1.0)
        return code if code is not None else "an unknown status (adopted)"

    def _signal(self, sig: signal.Signals) -> None:
        handle = self.handle
        if handle is not None and not handle.exited:
            handle.signal_group(sig)

    async def stop(self, grace: float) -> None:
        """SIGTERM, SIGKILL after ``grace``; then wait (bounded) for the exit to be reaped
        and its output and files closed. A worker with no process (waiting to restart)
        ends at once."""
        self.stopping = True
        if not self._sleeping:
            self._signal(signal.SIGTERM)
            if not await self._ended(grace):
                self._signal(signal.SIGKILL)
                await self._ended(KILL_WAIT)
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

    async def _ended(self, timeout: float) -> bool:
        """Whether the worker's task ended within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except TimeoutError:
            return False
        except Exception:  # noqa: BLE001 - the task's own failure is logged by spawn
            pass
        return True

    async def release(self) -> None:
        """Stop watching, leave the process running for the next daemon."""
        self.stopping = True
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        handle = self.handle
        if handle is not None and not handle.exited:
            await handle.release()

    def kill(self) -> None:
        self.stopping = True
        self._signal(signal.SIGKILL)


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
        version: str = "",
        owned: set[str] | None = None,
        draining: set[str] | None = None,
        ids: Iterator[int] | None = None,
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
        self.version = version  # of the release, in each worker's record
        #: worker ids watched by this daemon (shared by the service's groups: a record of
        #: one of them is never adopted a second time)
        self.owned = owned if owned is not None else set()
        #: worker ids told to stop (shared with the service; an id leaves when its worker ends)
        self.draining = draining if draining is not None else set()
        #: numbers for new worker ids (shared by the service's groups: unique per daemon)
        self.ids = ids if ids is not None else itertools.count(1)
        self.workers: list[Worker] = []

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
            self.workers.append(Worker(self, self._new_id()))
        extra, self.workers = self.workers[count:], self.workers[:count]
        await asyncio.gather(*(w.stop(grace) for w in extra))

    def _new_id(self) -> str:
        """An id no worker of this daemon has and no record on disk names."""
        while True:
            worker_id = f"{self.id_prefix}-{next(self.ids)}"
            files = worker_files(self.log.log_dir, worker_id)
            if worker_id not in self.owned and not files.record.exists() \
                    and not files.out.exists():
                return worker_id

    def adopt(self, worker_id: str, handle: InstanceProcess) -> None:
        """Supervise a worker a previous daemon left running (it keeps its id)."""
        self.workers.append(Worker(self, worker_id, adopted=handle))
        self.log.write(f"[{self.name}] adopted worker {worker_id}: pid {handle.pid}")

    async def stop(self, grace: float) -> None:
        await self.scale(0, grace)

    async def release(self) -> None:
        """Leave every worker running for the next daemon (nothing is stopped)."""
        workers, self.workers = self.workers, []
        await asyncio.gather(*(w.release() for w in workers))

    def kill(self) -> None:
        for worker in self.workers:
            worker.kill()
