"""The per-process edge runtime: config, current state, upstream pool, clocks and hooks.

Rules:

- One :class:`EdgeRuntime` per process (main with ``workers=0``, or each worker); every
  client connection holds a reference to it. It is the only place that knows how to
  reach the rest of the server (through its :class:`~.hooks.EdgeHooks`: the daemon's
  in-process, a worker's channel otherwise), so connections never care whether they
  run in a worker. Its activity reports name it as ``reporter``.
- Background tasks start through :func:`tako_common.tasks.spawn` (named, failures
  logged) and are kept here until they end, so :meth:`close` can cancel them.
- Time is a coarse clock (:attr:`EdgeRuntime.now`, refreshed by the sweeper every
  ``tick`` seconds): deadlines cost an attribute write per request, and one sweep closes
  every connection past its deadline (header, idle keep-alive, upstream response).
- State is replaced whole (:meth:`set_state`); idle pooled connections to backends that
  left the state are closed, busy ones finish their request first (drain).
- Connections and exchanges change the runtime only through its methods
  (:meth:`connection_opened`/:meth:`connection_closed`, :meth:`begin_request`/
  :meth:`end_request`, :meth:`touch`): balancing and in-flight accounting live here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from tako_common.tasks import spawn

from .activity import Activity
from .hooks import EdgeHooks
from .links import Connection
from .policy import MAX_BODY, choose_backend
from .snapshot import Backend, EdgeState
from .upstream import UpstreamPool

log = logging.getLogger(__name__)
DRAIN_LINGER = 1.0


@dataclass(frozen=True)
class EdgeConfig:
    """Timeouts and limits of the edge (seconds, bytes)."""

    https_port: int = 443  # public HTTPS port used in redirects
    header_timeout: float = 10.0
    keepalive_timeout: float = 60.0
    connect_timeout: float = 5.0
    response_timeout: float = 300.0
    max_body: int = MAX_BODY
    max_idle_upstream: int = 256
    buffer_limit: int = 256 * 1024
    tick: float = 0.25
    report_interval: float = 0.25


class EdgeRuntime:
    """Everything connections in this process share."""

    def __init__(
        self,
        config: EdgeConfig,
        hooks: EdgeHooks,
        state: EdgeState | None = None,
        *,
        reporter: str = "edge",
    ) -> None:
        self.config = config
        self.hooks = hooks
        self.reporter = reporter
        self.loop = asyncio.get_running_loop()
        self.state = state or EdgeState.empty()
        self.pool = UpstreamPool(config.connect_timeout, config.max_idle_upstream)
        self.activity = Activity()
        self.connections: set[Connection] = set()
        self.draining = False
        self.turn = 0
        self.now = self.loop.time()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._report_handle: asyncio.Handle | None = None
        self._sweep()

    def __repr__(self) -> str:
        return (
            f"EdgeRuntime(connections={len(self.connections)}, state={self.state!r}, "
            f"draining={self.draining})"
        )

    def set_state(self, state: EdgeState) -> None:
        self.state = state
        self.pool.prune(state.addresses())

    def connection_opened(self, conn: Connection) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def begin_request(self, key: str, backends: tuple[Backend, ...]) -> Backend:
        """Pick the backend for a request to ``key`` (least connections, ties rotated)
        and count it in flight until :meth:`end_request`."""
        self.turn += 1
        activity = self.activity
        if len(backends) == 1:
            backend = backends[0]
        else:
            backend = choose_backend(backends, activity.in_flight(key), self.turn)
        activity.begin(key, backend.instance_id)
        if activity.urgent and self._report_handle is None:  # activity_changed(), inlined
            self._report_handle = self.loop.call_soon(self.flush_activity)
        return backend

    def end_request(self, key: str, instance_id: int) -> None:
        activity = self.activity
        activity.end(key, instance_id)
        if activity.urgent and self._report_handle is None:  # activity_changed(), inlined
            self._report_handle = self.loop.call_soon(self.flush_activity)

    def touch(self, key: str) -> None:
        """``key`` served a request without an upstream (a static file)."""
        self.activity.touch(key)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a named background task and keep a reference until it ends."""
        task = spawn(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _sweep(self) -> None:
        self.now = now = self.loop.time()
        self._sweeper = self.loop.call_later(self.config.tick, self._sweep)  # first: always
        for conn in [c for c in self.connections if c.deadline and c.deadline <= now]:
            try:
                conn.on_deadline()
            except Exception:  # one broken connection must not stop every timeout
                log.exception("edge: timeout handling failed for %r; closing it", conn)
                conn.close()
        if self.activity.has_pending():
            self.flush_activity()

    def activity_changed(self) -> None:
        """Called after begin/end: send at once on 0<->n transitions, else batch."""
        if self.activity.urgent and self._report_handle is None:
            self._report_handle = self.loop.call_soon(self.flush_activity)

    def flush_activity(self) -> None:
        self._report_handle = None
        report = self.activity.take_report(self.loop.time())
        if report:
            try:
                self.hooks.report(self.reporter, report)
            except Exception:  # a reporting failure must never break serving
                log.exception("activity report failed")

    def app_log(self, key: str, line: str) -> None:
        try:
            self.hooks.app_log(key, line)
        except Exception:
            log.exception("app log write failed for %s", key)

    async def drain(self, timeout: float) -> None:
        """Close idle connections now; let active ones finish until ``timeout``. Waits at
        least ``DRAIN_LINGER`` (bounded by ``timeout``): connections accepted just before
        the listeners closed may still be in their TLS handshake, not yet counted."""
        self.draining = True
        for conn in list(self.connections):
            conn.close_if_idle()
        start = self.loop.time()
        deadline = start + timeout
        linger = start + min(DRAIN_LINGER, timeout)
        while (self.connections or self.loop.time() < linger) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.flush_activity()
        self.pool.close_all()
        for task in list(self._tasks):
            task.cancel()
