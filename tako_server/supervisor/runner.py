"""The runner of one app: the only supervisor code that awaits.

It feeds events (time ticks, spawn results, probe results, process exits, commands) to
the app's :class:`AppMachine` and executes the actions that come back: spawn a process,
probe it, signal its group, write a ``[tako]`` log line, notify the edge, settle a
waiting caller. Rules: every background task is named and kept (``_task``); one
``asyncio.Lock`` serialises deploy/scale/stop of an app; a process exit is reported after
its output pipes are drained (bounded), so the log holds the app's last words before the
``[tako]`` exit line and before a rollout error collects the log tail.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from tako_common.tasks import spawn
from tako_server.cgroups import read_oom_kills
from tako_server.supervisor.adopt import InstanceRecord, Verdict, judge, read_records
from tako_server.supervisor.container import (
    ContainerError,
    ContainerInstance,
    ContainerVerdict,
    FoundContainer,
    app_containers,
    judge_container,
    remove_container,
)
from tako_server.supervisor.events import (
    Action,
    Adopted,
    Event,
    Exited,
    Fail,
    FailKind,
    Log,
    Notify,
    ProbeDone,
    ProbeHealth,
    Resolve,
    Sig,
    Signal,
    Spawn,
    Spawned,
    SpawnFailed,
    Tick,
)
from tako_server.supervisor.health import probe
from tako_server.supervisor.logs import AppLog
from tako_server.supervisor.machine import LOOPBACK, AppMachine
from tako_server.supervisor.outputs import InstanceFiles, InstanceOutput
from tako_server.supervisor.process import InstanceProcess
from tako_server.supervisor.spec import (
    ColdStartFailed,
    ColdStartRejected,
    ColdStartTimeout,
    LaunchSpec,
    RolloutError,
    SupervisorError,
    SupervisorSettings,
)
from tako_server.takeover import read_proc_stat

logger = logging.getLogger("tako.supervisor")

_SIGNALS = {Sig.TERM: signal.SIGTERM, Sig.KILL: signal.SIGKILL}
_RETIRE_GRACE = 5.0
BURY_WAIT = 5.0  # for a found container that is not running to end (then force-removed)


class AppRunner:
    """Runs one :class:`AppMachine` against real processes and a real clock."""

    def __init__(
        self,
        key: str,
        settings: SupervisorSettings,
        log: AppLog,
        *,
        on_change: Callable[[], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.key = key
        self.settings = settings
        self.machine = AppMachine(key, settings)
        self.log = log
        self.lock = asyncio.Lock()
        self._on_change = on_change
        self._clock = clock
        self._procs: dict[int, InstanceProcess | ContainerInstance] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._oom_seen: dict[int, int] = {}  # per instance: the app's OOM kills at its start
        self._tokens = itertools.count(1)
        self._closed = False
        self._wakeup: asyncio.TimerHandle | None = None  # an early Tick (see _arm_wakeup)
        self._wakeup_at = 0.0
        self._ticker = self._task(self._tick_forever(), f"tako-tick-{key}")

    # ------------------------------------------------------------------ feeding

    def feed(self, event: Event) -> None:
        """Apply one event now and execute its actions."""
        if self._closed:
            return
        for action in self.machine.handle(event, self._clock()):
            self._execute(action)
        self._arm_wakeup()

    def _arm_wakeup(self) -> None:
        """Feed a Tick when the machine's next deadline comes before the ticker's."""
        due = self.machine.next_due()
        if due is None or (self._wakeup is not None and self._wakeup_at <= due):
            return
        delay = due - self._clock()
        if delay >= self.settings.tick_interval:
            return  # the ticker gets there first
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup_at = due
        self._wakeup = asyncio.get_running_loop().call_later(max(0.0, delay), self._wake)

    def _wake(self) -> None:
        self._wakeup = None
        self.feed(Tick())

    async def call(self, make_event: Callable[[int], Event]) -> Any:
        """Feed an event that names a token and wait until the machine settles it."""
        if self._closed:
            raise SupervisorError(f"app {self.key} was removed")
        token = next(self._tokens)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        self.feed(make_event(token))
        try:
            return await future
        finally:
            self._futures.pop(token, None)

    def new_token(self) -> tuple[int, asyncio.Future[Any]]:
        token = next(self._tokens)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        return token, future

    def drop_token(self, token: int) -> None:
        self._futures.pop(token, None)

    async def _tick_forever(self) -> None:
        interval = self.settings.tick_interval
        while not self._closed:
            await asyncio.sleep(interval)
            self.feed(Tick())

    # ------------------------------------------------------------------ actions

    def _execute(self, action: Action) -> None:
        match action:
            case Spawn():
                self._task(self._spawn(action), f"tako-spawn-{self.key}-{action.instance_id}")
            case ProbeHealth():
                self._task(self._probe(action), f"tako-probe-{self.key}-{action.instance_id}")
            case Signal():
                self._signal(action)
            case Log():
                self.log.write(action.message, stream="tako", instance=action.instance_id)
            case Notify():
                self._notify()
            case Resolve():
                self._settle(action.token, result=action.value)
            case Fail():
                self._settle(action.token, error=self._error(action))

    async def _spawn(self, action: Spawn) -> None:
        spec = action.spec
        handle: InstanceProcess | ContainerInstance
        try:
            if spec.container is not None:  # the launcher seam: a container or a process
                handle = await ContainerInstance.spawn(action.instance_id, spec, self.log)
            else:
                handle = await InstanceProcess.spawn(
                    action.instance_id,
                    spec.command,
                    spec.workdir,
                    spec.environ,
                    self.log,
                    version=spec.version,
                    isolation=spec.isolation,
                )
        except (OSError, ValueError) as exc:
            what = spec.container.image if spec.container is not None else spec.command[:1]
            self.feed(SpawnFailed(action.instance_id, f"{what}: {exc}"))
            return
        self._procs[action.instance_id] = handle
        self._oom_seen[action.instance_id] = self._oom_count(spec)
        if self._closed:
            handle.signal_group(signal.SIGKILL)
        self._task(self._watch(handle), f"tako-exit-{self.key}-{action.instance_id}")
        self.feed(Spawned(action.instance_id, handle.pid, handle.port))

    async def _watch(self, handle: InstanceProcess | ContainerInstance) -> None:
        code = await handle.wait()
        try:
            await handle.close_output(timeout=1.0)
        except (OSError, TimeoutError) as exc:
            logger.warning("output of instance %d of %s: %s", handle.instance_id, self.key, exc)
        self._procs.pop(handle.instance_id, None)
        seen = self._oom_seen.pop(handle.instance_id, None)
        oom = code in (None, -signal.SIGKILL) and seen is not None and self._oom_count() > seen
        self.feed(Exited(handle.instance_id, code, oom=oom))

    def _oom_count(self, spec: LaunchSpec | None = None) -> int:
        """OOM kills in the app's cgroup so far (0 without one)."""
        spec = spec or self.machine.spec
        cgroup = spec.isolation.cgroup if spec is not None and spec.isolation else None
        return read_oom_kills(cgroup) if cgroup is not None else 0

    # ------------------------------------------------------------------ adoption

    async def adopt(self, spec: LaunchSpec, stopped: bool) -> tuple[Adopted, ...]:
        """Take over the instances a previous daemon left running (their records):
        adopt those of ``spec``'s version, stop the others, log the ones that died."""
        if self._procs or self.machine.instances:
            return ()  # this daemon supervises the app already
        if spec.container is not None:
            return await self._adopt_containers(spec, stopped)
        adopted = []
        records = read_records(InstanceFiles(self.log.log_dir, 0).dir)
        for record in records:
            verdict = judge(record, read_proc_stat(record.pid), spec.version, stopped)
            gone = verdict is Verdict.GONE
            handle = None if gone else InstanceProcess.adopt(record, self.log)
            if handle is None:
                await self._bury(record)
            elif verdict is Verdict.STALE:
                self._task(self._retire(handle), f"tako-retire-{self.key}-{record.instance_id}")
            else:
                self._procs[record.instance_id] = handle
                self._oom_seen[record.instance_id] = self._oom_count(spec)
                self._task(self._watch(handle), f"tako-exit-{self.key}-{record.instance_id}")
                adopted.append(Adopted(record.instance_id, record.pid, record.port))
        if records:
            self.machine.next_id = max(self.machine.next_id, records[-1].instance_id + 1)
        return tuple(adopted)

    async def _adopt_containers(self, spec: LaunchSpec, stopped: bool) -> tuple[Adopted, ...]:
        """Containers a previous daemon left (found by label): adopt the running ones of
        ``spec``'s version; copy the last output of those that exited, remove the rest."""
        assert spec.container is not None
        socket = spec.container.socket
        found = await app_containers(socket, self.key)  # raises: no restore, no duplicates
        adopted = []
        for box in sorted(found, key=lambda f: f.id):
            verdict = judge_container(box.state, box.labels, spec.version, stopped)
            if verdict is ContainerVerdict.STALE or box.instance_id in self._procs:
                self.log.write(f"container {box.id[:12]} is not adopted (another version, "
                               "or the app is stopped): removing it", stream="tako")
                await remove_container(socket, box.id, self.log.log_dir)
                continue
            try:
                handle = await ContainerInstance.adopt(box, socket, self.log, self.key)
            except ContainerError as exc:  # never left running unsupervised
                self.log.write(f"container {box.id[:12]} cannot be adopted ({exc}):"
                               " removing it", stream="tako")
                await remove_container(socket, box.id, self.log.log_dir)
                continue
            if verdict is ContainerVerdict.GONE:
                await self._bury_container(handle, box, socket)
                continue
            self._procs[box.instance_id] = handle
            self._task(self._watch(handle), f"tako-exit-{self.key}-{box.instance_id}")
            adopted.append(Adopted(box.instance_id, handle.pid, box.port))
        ids = [box.instance_id for box in found]
        self.machine.next_id = max([self.machine.next_id, *(i + 1 for i in ids)])
        return tuple(adopted)

    async def _bury_container(
        self, handle: ContainerInstance, box: FoundContainer, socket: Path
    ) -> None:
        """A container that ended while no daemon watched (or is paused, restarting...):
        its last output, then it goes (force-removed when it does not end at once)."""
        code: int | str
        try:
            code = await asyncio.wait_for(handle.wait(), BURY_WAIT)
        except TimeoutError:
            code = f"no exit (it was {box.state})"
            await remove_container(socket, box.id, self.log.log_dir)
        await handle.close_output(timeout=2.0)
        self.log.write(
            f"container {box.id[:12]} exited with {code} while no tako-server watched it:"
            " replacing it",
            stream="tako",
            instance=box.instance_id,
        )

    async def _bury(self, record: InstanceRecord) -> None:
        """An instance that ended while no daemon watched: its last output, then a note."""
        files = InstanceFiles(self.log.log_dir, record.instance_id)
        try:
            await InstanceOutput(files, record.instance_id, self.log, resume=True).finish()
        except OSError:
            files.remove()
        self.log.write(
            f"pid {record.pid} exited while no tako-server watched it: replacing it",
            stream="tako",
            instance=record.instance_id,
        )

    async def _retire(self, handle: InstanceProcess) -> None:
        """Stop an instance not worth adopting (another version, or the app is stopped)."""
        self.log.write(
            f"pid {handle.pid} is not adopted (another version, or the app is stopped): "
            "stopping it",
            stream="tako",
            instance=handle.instance_id,
        )
        handle.signal_group(signal.SIGTERM)
        exited = spawn(handle.wait(), name=f"tako-retire-wait-{handle.pid}")
        _, pending = await asyncio.wait({exited}, timeout=_RETIRE_GRACE)
        if pending:
            handle.signal_group(signal.SIGKILL)
        await exited
        await handle.close_output()

    async def release(self) -> bool:
        """Leave every process and container running for another daemon (a takeover or a
        restart that keeps apps): supervision stops here, output offsets, records and log
        cursors stay on disk."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for handle in list(self._procs.values()):
            await handle.release()
        self._procs.clear()
        for token in list(self._futures):
            self._settle(token, error=SupervisorError(f"app {self.key} was handed over"))
        self.log.close()
        return True

    async def _probe(self, action: ProbeHealth) -> None:
        result = await probe(LOOPBACK, action.port, self.settings.probe_timeout)
        handle = self._procs.get(action.instance_id)
        if isinstance(handle, InstanceProcess):
            handle.output.pump()  # what the app printed comes before the [tako] verdict
        self.feed(ProbeDone(action.instance_id, result.ok, result.detail))

    def _signal(self, action: Signal) -> None:
        handle = self._procs.get(action.instance_id)
        if handle is not None:
            handle.signal_group(_SIGNALS[action.sig])

    def _notify(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change()
        except Exception:  # the edge's callback must not break supervision
            logger.exception("on_change callback of the supervisor failed")

    def _settle(self, token: int, *, result: Any = None, error: Exception | None = None) -> None:
        future = self._futures.pop(token, None)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _error(self, action: Fail) -> Exception:
        kind = action.kind
        if kind is FailKind.ROLLOUT:
            return RolloutError(
                action.message, log_tail=self.log.history(self.settings.log_tail_lines)
            )
        if kind is FailKind.COLD_REJECTED:
            return ColdStartRejected(action.message, hint="retry in a second")
        if kind is FailKind.COLD_TIMEOUT:
            return ColdStartTimeout(action.message)
        if kind is FailKind.COLD_FAILED:
            return ColdStartFailed(action.message, hint=f"see the app log: tako logs ({self.key})")
        return SupervisorError(action.message, code="scale_failed")

    def _task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = spawn(coro, name=name)  # named, referenced, a failure logged
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ teardown

    @property
    def pids(self) -> list[int]:
        return [h.pid for h in self._procs.values()]

    def kill_all(self) -> None:
        """SIGKILL every instance group now (last resort, synchronous)."""
        for handle in list(self._procs.values()):
            handle.signal_group(signal.SIGKILL)

    async def close(self) -> None:
        """Forget the app: kill what is left, cancel tasks, fail waiting callers."""
        self.kill_all()
        watchers = [t for t in self._tasks if t.get_name().startswith("tako-exit-")]
        if watchers:
            await asyncio.wait(watchers, timeout=2.0)
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.cancel()
        for token in list(self._futures):
            self._settle(token, error=SupervisorError(f"app {self.key} was removed"))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.log.close()

    def __repr__(self) -> str:
        return f"AppRunner({self.key!r}, procs={len(self._procs)}, tasks={len(self._tasks)})"
