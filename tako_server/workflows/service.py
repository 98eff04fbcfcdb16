"""The workflow service: each app's worker groups, its queue, schedules and scale to zero.

Rules:

- an app's workflows (the deploy's :class:`~tako_common.protocol.WorkflowsSpec`, its
  idle timeout and ``tako scale --group`` overrides) are kept in the local
  ``workflows.db`` so a restarted server starts the same workers; the queue is that file
  for a single-server environment and the ``postgres_url`` database for a shared one
  (a shared spec without the credential is refused before anything changes);
- workers of a new release start after its web instances are healthy (the app service
  calls :meth:`WorkflowService.deploy` after the rollout); the old release's workers get
  SIGTERM and :data:`GRACE` seconds in the background;
- each app/env has one API token (an HMAC of ``{app}/{env}`` under this server's
  ``workflows.key``), given to its instances and workers as ``TAKO_API_TOKEN``; the API
  maps a token back to exactly that app/env;
- every second: leases that ran out go back to the queue (or fail), each schedule's
  latest tick is enqueued with the idempotency key ``schedule:<tick>`` (once per
  environment, even when several servers or a restarted one enqueue it), and groups with
  ``workers = 0`` are started when runs are ready and stopped after ``idle_timeout``;
- workers outlive the daemon as instances do (``docs/upgrade.md``): on a takeover or a
  restart that keeps apps they are released (:meth:`WorkflowService.release`), and when
  a group starts, the workers a previous daemon left (their records) are judged
  (:func:`~tako_server.supervisor.adopt.judge`): one of the release's version and group
  is adopted (the leases of its runs are renewed, so no other worker gets them), another
  is stopped, one that died while no daemon ran is noted in the log and its runs go back
  to the queue at once; then the group is topped up to its count.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import os
import random
import secrets
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tako_common.cron import parse_cron
from tako_common.errors import TakoError, ValidationError
from tako_common.protocol import (
    WorkflowGroupSpec,
    WorkflowGroupStatus,
    WorkflowsSpec,
)
from tako_common.tasks import TaskGroup
from tako_server.supervisor.adopt import Verdict, WorkerRecord, judge, read_worker_records
from tako_server.supervisor.logs import AppLog
from tako_server.supervisor.outputs import InstanceOutput
from tako_server.supervisor.process import InstanceProcess
from tako_server.supervisor.spec import LaunchSpec
from tako_server.takeover import read_proc_stat
from tako_server.workflows.pgstore import PgStore
from tako_server.workflows.policy import (
    LEASE_SECONDS,
    MAX_PAYLOAD_BYTES,
    IdleState,
    scale_to_zero,
)
from tako_server.workflows.store import NewRun, QueueStore, Run, SqliteStore
from tako_server.workflows.workers import (
    WORKERS_DIR,
    Worker,
    WorkerGroup,
    adopt_worker,
    worker_files,
)

GRACE = 30.0
TICK = 1.0
#: a tick missed by at most this much (a restart, a slow loop) is still enqueued
CATCH_UP = timedelta(seconds=90)
POSTGRES_CREDENTIAL = "postgres_url"
log = logging.getLogger(__name__)


class UnknownGroup(TakoError):
    code = "unknown_group"


class PayloadTooLarge(TakoError):
    code = "payload_too_large"


class NoWorkflows(TakoError):
    code = "not_found"


@dataclass
class AppWorkflows:
    """One app/env's workflows on this server."""

    app: str
    env: str
    spec: WorkflowsSpec
    idle_timeout: int
    store: QueueStore
    launch: LaunchSpec | None = None
    desired: dict[str, int] = field(default_factory=dict)
    groups: dict[str, WorkerGroup] = field(default_factory=dict)
    last_active: dict[str, float] = field(default_factory=dict)
    fired: dict[str, datetime] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.app}/{self.env}"

    def workers_wanted(self, group: WorkflowGroupSpec) -> int:
        return self.desired.get(group.name, group.workers)


class WorkflowService:
    """Worker groups, queues and schedules of every app on this server."""

    def __init__(
        self,
        data_dir: Path,
        api_port: int,
        *,
        log_for: Callable[[str], AppLog],
        credentials: Callable[[str, str], Mapping[str, str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = data_dir
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.log_for = log_for
        self.credentials = credentials
        self.clock = clock
        self.local = SqliteStore(data_dir / "workflows.db")
        self.local.db.execute(
            "CREATE TABLE IF NOT EXISTS apps (app TEXT NOT NULL, env TEXT NOT NULL,"
            " spec TEXT NOT NULL, idle_timeout INTEGER NOT NULL, desired TEXT NOT NULL,"
            " PRIMARY KEY (app, env))"
        )
        self._key = _load_key(data_dir / "workflows.key")
        self.apps: dict[str, AppWorkflows] = {}
        self._pg: dict[str, PgStore] = {}
        self._wakeups: dict[tuple[str, str], asyncio.Event] = {}
        self._boot = f"{socket.gethostname()}.{secrets.token_hex(3)}"
        #: workers told to stop: their long polls end at once (they claim nothing new)
        self.draining: set[str] = set()
        self.closed = False  # the stores are closing: no claim reaches them any more
        #: ids of the workers this daemon watches (their records are not adopted again)
        self.owned: set[str] = set()
        #: numbers of new worker ids, shared by all groups (an id never serves twice)
        self._worker_ids = itertools.count(1)
        #: apps whose workers were released to another daemon (reclaimed if it fails)
        self._released: set[str] = set()
        self.tasks = TaskGroup()

    def __repr__(self) -> str:
        return f"WorkflowService(apps={sorted(self.apps)}, api={self.api_url})"

    # ---------------------------------------------------------------- tokens

    def token(self, app: str, env: str) -> str:
        return hmac.new(self._key, f"{app}/{env}".encode(), hashlib.sha256).hexdigest()

    def app_of_token(self, token: str) -> AppWorkflows | None:
        for entry in self.apps.values():
            if hmac.compare_digest(self.token(entry.app, entry.env), token):
                return entry
        return None

    def api_environ(self, app: str, env: str) -> dict[str, str]:
        """What instances and workers of ``app/env`` get to reach the queue."""
        return {"TAKO_API_URL": self.api_url, "TAKO_API_TOKEN": self.token(app, env)}

    # ---------------------------------------------------------------- lifecycle

    async def deploy(
        self, launch: LaunchSpec, spec: WorkflowsSpec | None, idle_timeout: int
    ) -> None:
        """Start the workers of a release whose instances are healthy; old ones drain."""
        if spec is None or not spec.groups:
            await self.remove(launch.app, launch.env, keep_runs=True)
            return
        store = await self.store_for(launch.app, launch.env, spec)
        previous = self.apps.get(launch.key)
        desired = previous.desired if previous is not None else {}
        desired = {name: n for name, n in desired.items() if spec.group(name) is not None}
        entry = AppWorkflows(launch.app, launch.env, spec, idle_timeout, store, launch, desired)
        if previous is not None:
            entry.fired = previous.fired
            self._drain(previous)
        self.apps[launch.key] = entry
        self._save(entry)
        await self._start_groups(entry)

    async def check(
        self, app: str, env: str, spec: WorkflowsSpec | None, credentials: Mapping[str, str]
    ) -> None:
        """Refuse a deploy whose workflows cannot run (before anything changes): a shared
        queue needs ``postgres_url`` among the deploy's credentials, and a reachable one."""
        if spec is not None and spec.groups:
            await self.store_for(app, env, spec, credentials)

    async def restart(self, launch: LaunchSpec, idle_timeout: int | None = None) -> None:
        """Start (or restart) the app's workers with ``launch`` (restore, rollback, secrets)."""
        entry = self.apps.get(launch.key) or await self._load(launch.app, launch.env)
        if entry is None:
            return
        if entry.launch is not None and entry.groups:
            self._drain(entry)
            entry.groups = {}
        entry.launch = launch
        if idle_timeout is not None:
            entry.idle_timeout = idle_timeout
        await self._start_groups(entry)

    async def stop(self, app: str, env: str) -> None:
        """``tako stop``: the workers stop (runs stay queued)."""
        entry = self.apps.get(f"{app}/{env}")
        if entry is not None:
            groups, entry.groups = entry.groups, {}
            entry.launch = None
            for group in groups.values():
                self._stopping(entry, group.workers)
            await asyncio.gather(*(g.stop(GRACE) for g in groups.values()))

    async def remove(self, app: str, env: str, *, keep_runs: bool = False) -> None:
        """Stop and forget the app's workflows (``delete``: its local runs go too)."""
        await self.stop(app, env)
        self.apps.pop(f"{app}/{env}", None)
        self.local.db.execute("DELETE FROM apps WHERE app = ? AND env = ?", (app, env))
        if not keep_runs:
            self.local.db.execute("DELETE FROM runs WHERE app = ? AND env = ?", (app, env))

    async def scale(self, app: str, env: str, group: str, workers: int) -> None:
        entry = self.entry(app, env)
        self.group_spec(entry, group)
        entry.desired[group] = workers
        self._save(entry)
        running = entry.groups.get(group)
        if running is not None and (workers > 0 or running.count > 0):
            self._stopping(entry, running.workers[workers:])
            await running.scale(workers, GRACE)

    async def shutdown(self) -> None:
        await self.stop_workers()
        await self.close()

    async def stop_workers(self) -> None:
        """Daemon exit, part 1: stop this daemon's workers (they finish through the API),
        then answer every long poll at once with nothing (the queue API stops next)."""
        for entry in self.apps.values():
            for group in entry.groups.values():
                self._stopping(entry, group.workers)
        groups = [g for entry in self.apps.values() for g in entry.groups.values()]
        await asyncio.gather(*(g.stop(5.0) for g in groups), return_exceptions=True)
        await self.tasks.cancel_all()
        self.closed = True
        for event in self._wakeups.values():
            event.set()

    async def close(self) -> None:
        """Daemon exit, part 2 (after the queue API stopped): close the stores."""
        self.closed = True
        for store in self._pg.values():
            with contextlib.suppress(Exception):
                await store.close()
        await self.local.close()

    async def release(self) -> None:
        """Leave every worker running for the next daemon (a takeover, or a restart that
        keeps apps): their records and output offsets stay on disk for it to adopt."""
        for entry in self.apps.values():
            groups, entry.groups = entry.groups, {}
            await asyncio.gather(*(g.release() for g in groups.values()))
            if groups:
                self._released.add(entry.key)

    async def reclaim(self) -> None:
        """Adopt again what :meth:`release` handed over (the takeover failed)."""
        released, self._released = self._released, set()
        for key in sorted(released):
            entry = self.apps.get(key)
            if entry is not None and entry.launch is not None and not entry.groups:
                await self._start_groups(entry)

    def kill_all(self) -> None:
        for entry in self.apps.values():
            for group in entry.groups.values():
                group.kill()

    async def restore_all(self, running: set[str]) -> None:
        """Load every saved app (their workers start when the app is registered)."""
        rows = self.local.db.execute("SELECT app, env FROM apps").fetchall()
        for app, env in rows:
            if f"{app}/{env}" in running and f"{app}/{env}" not in self.apps:
                try:
                    await self._load(app, env)
                except TakoError as exc:
                    log.error("workflows of %s/%s: %s", app, env, exc.message)

    # ---------------------------------------------------------------- helpers

    def entry(self, app: str, env: str) -> AppWorkflows:
        entry = self.apps.get(f"{app}/{env}")
        if entry is None:
            raise NoWorkflows(
                f"{app}/{env} has no workflows on this server",
                hint="add [workflows.<group>] with run = [...] to tako.toml and deploy",
            )
        return entry

    def group_spec(self, entry: AppWorkflows, name: str) -> WorkflowGroupSpec:
        spec = entry.spec.group(name)
        if spec is None:
            known = ", ".join(g.name for g in entry.spec.groups)
            raise UnknownGroup(f"unknown workflow group {name!r} of {entry.key} (groups: {known})")
        return spec

    async def store_for(
        self,
        app: str,
        env: str,
        spec: WorkflowsSpec,
        credentials: Mapping[str, str] | None = None,
    ) -> QueueStore:
        if not spec.shared:
            return self.local
        found = credentials if credentials is not None else self.credentials(app, env)
        url = found.get(POSTGRES_CREDENTIAL)
        if not url:
            raise ValidationError(
                f"{app}/{env} runs on more than one server: its workflows need PostgreSQL",
                hint=f"tako credentials set {POSTGRES_CREDENTIAL} --env {env}",
            )
        if url not in self._pg:
            self._pg[url] = await PgStore.connect(url)
        return self._pg[url]

    def _save(self, entry: AppWorkflows) -> None:
        self.local.db.execute(
            "INSERT OR REPLACE INTO apps (app, env, spec, idle_timeout, desired)"
            " VALUES (?, ?, ?, ?, ?)",
            (entry.app, entry.env, entry.spec.model_dump_json(), entry.idle_timeout,
             json.dumps(entry.desired)),
        )

    async def _load(self, app: str, env: str) -> AppWorkflows | None:
        row = self.local.db.execute(
            "SELECT spec, idle_timeout, desired FROM apps WHERE app = ? AND env = ?", (app, env)
        ).fetchone()
        if row is None:
            return None
        spec = WorkflowsSpec.model_validate_json(row[0])
        store = await self.store_for(app, env, spec)
        entry = AppWorkflows(app, env, spec, int(row[1]), store, desired=json.loads(row[2]))
        self.apps[entry.key] = entry
        return entry

    async def _start_groups(self, entry: AppWorkflows) -> None:
        if entry.launch is None:
            return
        left = await self._left_running(entry, entry.launch)
        for spec in entry.spec.groups:
            group = self._make_group(entry, entry.launch, spec)
            entry.groups[spec.name] = group
            for record, handle in left.get(spec.name, []):
                group.adopt(record.worker_id, handle)
                await entry.store.renew_worker(record.worker_id, self.clock(), LEASE_SECONDS)
            wanted = entry.workers_wanted(spec)
            await group.scale(wanted if wanted > 0 else group.count, GRACE)

    async def _left_running(
        self, entry: AppWorkflows, launch: LaunchSpec
    ) -> dict[str, list[tuple[WorkerRecord, InstanceProcess]]]:
        """Judge the workers a previous daemon left (their records): those to adopt, by
        group; the others are stopped (another version or group) or buried (dead)."""
        log = self.log_for(entry.key)
        adopt: dict[str, list[tuple[WorkerRecord, InstanceProcess]]] = {}
        groups = {spec.name for spec in entry.spec.groups}
        for record in read_worker_records(log.log_dir / WORKERS_DIR):
            if record.worker_id in self.owned:
                continue
            stale = record.group not in groups
            verdict = judge(record, read_proc_stat(record.pid), launch.version, stale)
            handle = None if verdict is Verdict.GONE else adopt_worker(record, log)
            if handle is None:
                await self._bury(entry, record, log)
            elif verdict is Verdict.STALE:
                self.owned.add(record.worker_id)
                self.tasks.spawn(self._retire(entry, record, handle, log),
                                 name=f"tako-workflows-retire-{record.worker_id}")
            else:
                adopt.setdefault(record.group, []).append((record, handle))
        return adopt

    async def _bury(self, entry: AppWorkflows, record: WorkerRecord, log: AppLog) -> None:
        """A worker that ended while no daemon watched: its last output, a note, and its
        runs back to the queue."""
        files = worker_files(log.log_dir, record.worker_id)
        try:
            await InstanceOutput(files, None, log, resume=True,
                                 prefix=f"[{record.group}] ").finish()
        except OSError:
            files.remove()
        log.write(f"[{record.group}] worker pid {record.pid} exited while no tako-server"
                  f" watched it: replacing it")
        await entry.store.release_worker(record.worker_id, self.clock(), random.random())

    async def _retire(
        self, entry: AppWorkflows, record: WorkerRecord, handle: InstanceProcess, log: AppLog
    ) -> None:
        """Stop a worker not worth adopting (another version or group); its runs go back."""
        log.write(f"[{record.group}] worker pid {record.pid} is not adopted (another version"
                  " or group): stopping it")
        try:
            handle.signal_group(signal.SIGTERM)
            exited = self.tasks.spawn(handle.wait(), name=f"tako-workflows-wait-{record.pid}")
            _, pending = await asyncio.wait({exited}, timeout=GRACE)
            if pending:
                handle.signal_group(signal.SIGKILL)
            await exited
            await handle.close_output()
            await entry.store.release_worker(record.worker_id, self.clock(), random.random())
        finally:
            self.owned.discard(record.worker_id)

    def _make_group(
        self, entry: AppWorkflows, launch: LaunchSpec, spec: WorkflowGroupSpec
    ) -> WorkerGroup:
        environ = {
            **launch.environ,
            **self.api_environ(entry.app, entry.env),
            "TAKO_WORKFLOW_GROUP": spec.name,
            "TAKO_WORKFLOW_CONCURRENCY": str(spec.concurrency),
        }
        store = entry.store

        def exited(worker_id: str) -> None:
            self.tasks.spawn(
                store.release_worker(worker_id, self.clock(), random.random()),
                name=f"tako-workflows-release-{worker_id}",
            )

        prefix = f"{self._boot}.{entry.app}.{entry.env}.{spec.name}.{launch.version}"
        return WorkerGroup(
            spec.name, list(spec.run), launch.workdir, environ, self.log_for(entry.key),
            id_prefix=prefix, on_exit=exited, isolation=launch.isolation,
            version=launch.version, owned=self.owned, draining=self.draining,
            ids=self._worker_ids,
        )

    def _drain(self, entry: AppWorkflows) -> None:
        for group in entry.groups.values():
            self._stopping(entry, group.workers)
            self.tasks.spawn(group.stop(GRACE), name=f"tako-workflows-drain-{group.name}")

    def _stopping(self, entry: AppWorkflows, workers: list[Worker]) -> None:
        """Mark workers as stopping and end their long polls."""
        self.draining.update(w.worker_id for w in workers)
        for (key, _), event in self._wakeups.items():
            if key == entry.key:
                event.set()

    # ---------------------------------------------------------------- queue operations

    def _wakeup(self, key: str, group: str) -> asyncio.Event:
        return self._wakeups.setdefault((key, group), asyncio.Event())

    def touch(self, entry: AppWorkflows, group: str) -> None:
        entry.last_active[group] = time.monotonic()

    async def enqueue(
        self,
        entry: AppWorkflows,
        group: str,
        payload: Any,
        *,
        delay: float = 0.0,
        key: str | None = None,
    ) -> tuple[Run, bool]:
        """Enqueue a run of ``group`` (its payload as JSON at most MAX_PAYLOAD_BYTES)."""
        spec = self.group_spec(entry, group)
        text = json.dumps(payload, separators=(",", ":"))
        if len(text.encode()) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"payload of {len(text.encode())} bytes is over the cap of"
                f" {MAX_PAYLOAD_BYTES} bytes; store big data elsewhere and pass a reference"
            )
        new = NewRun(entry.app, entry.env, group, text, key, spec.retries, delay)
        run, created = await entry.store.enqueue(new, self.clock())
        if created:
            self._wakeup(entry.key, group).set()
        return run, created

    async def claim(
        self, entry: AppWorkflows, group: str, worker: str, wait: float
    ) -> Run | None:
        """The next ready run of ``group``, waiting up to ``wait`` seconds for one."""
        self.group_spec(entry, group)
        deadline = time.monotonic() + wait
        event = self._wakeup(entry.key, group)
        poll = 0.25 if entry.spec.shared else 1.0  # other servers enqueue without telling us
        while True:
            event.clear()
            if worker in self.draining or self.closed:
                return None
            run = await entry.store.claim(
                entry.app, entry.env, group, worker, self.clock(), LEASE_SECONDS
            )
            if run is not None:
                self.touch(entry, group)
                return run
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, poll))

    async def heartbeat(self, entry: AppWorkflows, run_id: int, worker: str) -> bool:
        ok = await entry.store.heartbeat(
            entry.app, entry.env, run_id, worker, self.clock(), LEASE_SECONDS
        )
        return ok

    async def complete(self, entry: AppWorkflows, run_id: int, worker: str, result: Any) -> bool:
        text = json.dumps(result, separators=(",", ":"))
        if len(text.encode()) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(f"result is over the cap of {MAX_PAYLOAD_BYTES} bytes")
        return await entry.store.complete(entry.app, entry.env, run_id, worker, text, self.clock())

    async def fail(
        self, entry: AppWorkflows, run_id: int, worker: str, error: str, retry: bool
    ) -> Run | None:
        run = await entry.store.fail(
            entry.app, entry.env, run_id, worker, error[:4096], retry, self.clock(),
            random.random(),
        )
        if run is not None and run.state == "queued":
            self._wakeup(entry.key, run.group).set()
        return run

    async def retry(self, app: str, env: str, run_id: int) -> Run:
        entry = self.entry(app, env)
        run = await entry.store.retry(app, env, run_id, self.clock())
        if run is None:
            existing = await entry.store.get(app, env, run_id)
            state = f"it is {existing.state}" if existing is not None else "there is no such run"
            raise ValidationError(
                f"run {run_id} of {entry.key} cannot be retried: {state}",
                hint="only failed runs are retried (tako workflows runs --failed)",
            )
        self._wakeup(entry.key, run.group).set()
        return run

    async def status(self, app: str, env: str) -> list[WorkflowGroupStatus]:
        entry = self.apps.get(f"{app}/{env}")
        if entry is None:
            return []
        counts = await entry.store.counts(app, env)
        found = []
        for spec in entry.spec.groups:
            group = entry.groups.get(spec.name)
            by_state = counts.get(spec.name, {})
            found.append(WorkflowGroupStatus(
                name=spec.name, workers=entry.workers_wanted(spec),
                running=group.count if group is not None else 0, concurrency=spec.concurrency,
                schedule=spec.schedule, retries=spec.retries,
                restarts=group.restarts if group is not None else 0,
                queued=by_state.get("queued", 0), running_runs=by_state.get("running", 0),
                failed=by_state.get("failed", 0), done=by_state.get("done", 0),
            ))
        return found

    # ---------------------------------------------------------------- every second

    def start(self) -> None:
        self.tasks.spawn(self._every_second(), name="tako-workflows-tick")

    async def _every_second(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - one bad tick must not stop the loop
                log.exception("workflows tick failed")
            await asyncio.sleep(TICK)

    async def tick(self) -> None:
        """Expire leases, enqueue due schedule ticks, scale groups to and from zero."""
        now = self.clock()
        stores = {id(e.store): e.store for e in self.apps.values()} | {id(self.local): self.local}
        for store in stores.values():
            await store.expire(now, random.random())
        for entry in list(self.apps.values()):
            await self._schedules(entry, datetime.fromtimestamp(now, UTC))
            if entry.launch is not None:
                await self._scale_to_zero(entry)

    async def _schedules(self, entry: AppWorkflows, now: datetime) -> None:
        for spec in entry.spec.groups:
            if spec.schedule is None:
                continue
            tick = parse_cron(spec.schedule).latest_at_or_before(now, CATCH_UP)
            if tick is None or entry.fired.get(spec.name) == tick:
                continue
            stamp = tick.isoformat().replace("+00:00", "Z")
            run, created = await self.enqueue(
                entry, spec.name, {"scheduled_at": stamp}, key=f"schedule:{stamp}"
            )
            entry.fired[spec.name] = tick
            if created:
                log.info("schedule of %s/%s: run %d for %s", entry.key, spec.name, run.id, stamp)

    async def _scale_to_zero(self, entry: AppWorkflows) -> None:
        now = self.clock()
        counts = await entry.store.counts(entry.app, entry.env)
        for spec in entry.spec.groups:
            group = entry.groups.get(spec.name)
            if group is None or entry.workers_wanted(spec) != 0:
                continue
            ready = await entry.store.ready(entry.app, entry.env, spec.name, now)
            running_runs = counts.get(spec.name, {}).get("running", 0)
            if ready or running_runs:
                self.touch(entry, spec.name)
            state = IdleState(group.count, ready, running_runs,
                              entry.last_active.get(spec.name, 0.0))
            wanted = scale_to_zero(state, time.monotonic(), entry.idle_timeout)
            if wanted is not None and wanted != group.count:
                log.info("workflows %s/%s: scale to %d", entry.key, spec.name, wanted)
                self.touch(entry, spec.name)
                self._stopping(entry, group.workers[wanted:])
                self.tasks.spawn(group.scale(wanted, GRACE), name=f"tako-workflows-z-{spec.name}")


def _load_key(path: Path) -> bytes:
    """This server's token key (made once, 0600)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key
