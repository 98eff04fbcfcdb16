"""The ``Supervisor``: the daemon's one entry point to app instances.

It keeps one :class:`AppRunner` (machine + processes + log) per ``{app}/{env}`` key and
exposes the calls the daemon and the edge's hooks make. Rules: whenever an app's machine
reports a change (and after each command), its backends and cold-start wish go to the
:class:`~tako_server.routing.RoutingState` (which tells the edge if that changed what it
sees), then ``on_change`` is called; reads (``backends``, ``status``,
``wants_cold_start``) are synchronous and cheap; deploy/scale/stop of one app are
serialised; every instance is stopped on ``shutdown``. Activity timestamps are taken
from the supervisor's own monotonic clock. The supervisor knows nothing of routes or
static files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from tako_server.edge.snapshot import Backend
from tako_server.routing import RoutingState
from tako_server.supervisor.events import (
    ActivityReport,
    ColdStartJoin,
    ColdStartLeave,
    Deploy,
    RequestSeen,
    Restore,
    Scale,
    Stop,
)
from tako_server.supervisor.logs import AppLog
from tako_server.supervisor.runner import AppRunner
from tako_server.supervisor.spec import (
    AppRuntime,
    LaunchSpec,
    RolloutResult,
    SupervisorSettings,
    UnknownApp,
)

logger = logging.getLogger(__name__)


class Supervisor:
    """Supervises the instances of every app on this host."""

    def __init__(
        self,
        settings: SupervisorSettings = SupervisorSettings(),
        *,
        routing: RoutingState | None = None,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.routing = routing
        self._on_change = on_change
        self._clock = clock
        self._apps: dict[str, AppRunner] = {}
        self._released: dict[str, tuple[LaunchSpec, int, int, bool]] = {}

    # ------------------------------------------------------------------ commands

    async def deploy(self, spec: LaunchSpec, desired: int, idle_timeout: int) -> RolloutResult:
        """Rolling update to ``spec`` (desired 0 keeps one warm instance); raises RolloutError."""
        runner = self._runner_for(spec)
        async with runner.lock:
            result: RolloutResult = await runner.call(
                lambda token: Deploy(token, spec, desired, idle_timeout)
            )
        self._publish(spec.key)
        return result

    async def restore(
        self, spec: LaunchSpec, desired: int, idle_timeout: int, *, stopped: bool = False
    ) -> None:
        """Register an app after a daemon restart without validating it: ``desired``
        instances start in the background (failures show in ``status``); desired 0 stays
        idle until a cold start; ``stopped=True`` registers it as stopped."""
        runner = self._runner_for(spec)
        async with runner.lock:
            adopted = await runner.adopt(spec, stopped)
            runner.feed(Restore(spec, desired, idle_timeout, stopped, adopted))
        self._publish(spec.key)

    async def release(self) -> None:
        """Hand every app's processes to the next daemon (a takeover, or a restart that
        keeps apps): they keep running, unsupervised here, and :meth:`reclaim` (or the
        next daemon's :meth:`restore`) adopts them, container instances included. The
        routing state keeps its backends."""
        for key, runner in list(self._apps.items()):
            m = runner.machine
            if m.spec is None or m.deploying is not None:
                continue
            async with runner.lock:
                if not await runner.release():
                    continue
            self._released[key] = (m.spec, m.desired, m.idle_timeout, m.stopped)
            del self._apps[key]

    async def reclaim(self) -> None:
        """Adopt again what :meth:`release` handed over (the takeover failed)."""
        released, self._released = self._released, {}
        for spec, desired, idle_timeout, stopped in released.values():
            try:
                await self.restore(spec, desired, idle_timeout, stopped=stopped)
            except OSError as exc:  # e.g. its containers cannot be listed: the others go on
                logger.error("reclaim of %s failed: %s", spec.key, exc)

    async def scale(self, key: str, desired: int) -> None:
        """Change the desired count; returns once it is reached (0 keeps a warm instance
        until the idle timeout). Raises SupervisorError when a new instance fails."""
        runner = self._get(key)
        async with runner.lock:
            await runner.call(lambda token: Scale(token, desired))
        self._publish(key)

    async def stop(self, key: str) -> None:
        """Drain and stop every instance; the app stays registered in state ``stopped``."""
        runner = self._get(key)
        async with runner.lock:
            await runner.call(Stop)
        self._publish(key)

    async def remove(self, key: str) -> None:
        """Stop and forget the app (no error when it is unknown)."""
        runner = self._apps.get(key)
        if runner is None:
            return
        async with runner.lock:
            await runner.call(Stop)
            await runner.close()
        self._apps.pop(key, None)
        self._changed(key)

    async def shutdown(self) -> None:
        """Stop every instance of every app (drain, SIGTERM, SIGKILL); used on daemon exit."""
        runners = list(self._apps.values())
        await asyncio.gather(*(r.call(Stop) for r in runners), return_exceptions=True)
        await asyncio.gather(*(r.close() for r in runners), return_exceptions=True)
        self._apps.clear()

    def kill_all(self) -> None:
        """SIGKILL every instance group at once (for an abnormal daemon exit)."""
        for runner in self._apps.values():
            runner.kill_all()

    # ------------------------------------------------------------------ reads

    def status(self, key: str) -> AppRuntime | None:
        runner = self._apps.get(key)
        if runner is None:
            return None
        m = runner.machine
        return AppRuntime(
            key=key,
            state=m.state,
            version=m.version,
            desired=m.desired,
            idle_timeout=m.idle_timeout,
            instances=m.instance_statuses(self._clock()),
            last_error=m.last_error,
            probe_failures=m.probe_failures,
            cold_starts=m.cold_starts,
        )

    def keys(self) -> list[str]:
        return sorted(self._apps)

    def backends(self, key: str) -> list[Backend]:
        runner = self._apps.get(key)
        return list(runner.machine.backends()) if runner is not None else []

    def wants_cold_start(self, key: str) -> bool:
        runner = self._apps.get(key)
        return runner is not None and runner.machine.wants_cold_start

    def log(self, key: str) -> AppLog:
        return self._get(key).log

    # ------------------------------------------------------------------ edge traffic

    async def cold_start(self, key: str) -> list[Backend]:
        """Wait for a routable instance, joining the one start in progress.

        Raises ColdStartRejected (queue full), ColdStartFailed, ColdStartTimeout.
        """
        runner = self._get(key)
        token, future = runner.new_token()
        runner.feed(ColdStartJoin(token))
        try:
            backends: tuple[Backend, ...] = await future
        except asyncio.CancelledError:
            runner.feed(ColdStartLeave(token))
            raise
        finally:
            runner.drop_token(token)
        return list(backends)

    def report_activity(
        self,
        key: str,
        in_flight: Mapping[int, int],
        reporter: str = "main",
        requests: Mapping[int, int] | None = None,
    ) -> None:
        """In-flight requests per instance from one edge process (and, optionally, its
        cumulative request counts per instance); timed by the supervisor's own clock."""
        runner = self._apps.get(key)
        if runner is not None:
            runner.feed(
                ActivityReport(reporter, dict(in_flight), dict(requests) if requests else None)
            )

    def note_request(self, key: str, instance_id: int | None = None) -> None:
        """One request was routed to the app: marks activity and counts it."""
        runner = self._apps.get(key)
        if runner is not None:
            runner.feed(RequestSeen(instance_id))

    # ------------------------------------------------------------------ helpers

    def _publish(self, key: str) -> None:
        """Hand the app's backends and cold-start wish to the routing state."""
        if self.routing is None:
            return
        runner = self._apps.get(key)
        if runner is None:
            self.routing.set_backends(key, (), False)
        else:
            machine = runner.machine
            self.routing.set_backends(key, machine.backends(), machine.wants_cold_start)

    def _changed(self, key: str) -> None:
        """An app's machine changed (or the app went): publish, then tell the daemon."""
        self._publish(key)
        if self._on_change is not None:
            self._on_change()

    def _get(self, key: str) -> AppRunner:
        runner = self._apps.get(key)
        if runner is None:
            raise UnknownApp(key)
        return runner

    def _runner_for(self, spec: LaunchSpec) -> AppRunner:
        runner = self._apps.get(spec.key)
        if runner is None:
            log = AppLog(spec.log_dir, max_bytes=self.settings.log_max_bytes)
            key = spec.key
            runner = AppRunner(
                key, self.settings, log, on_change=lambda: self._changed(key), clock=self._clock
            )
            self._apps[spec.key] = runner
        return runner

    def __repr__(self) -> str:
        return f"Supervisor(apps={self.keys()})"
