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
import ctypes
import gc
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tako_common.tasks import spawn

from .accesslog import AccessLog
from .activity import Activity
from .clientaddr import Ranges
from .hooks import EdgeHooks
from .links import Connection, FinishedExchange
from .meter import Meter
from .policy import MAX_BODY, choose_backend
from .snapshot import Backend, EdgeState
from .upstream import UpstreamPool

log = logging.getLogger(__name__)
DRAIN_LINGER = 1.0
GC_AFTER_CLOSES = 64
FULL_GC_EVERY = 10.0
_MALLOC_TRIM: Any = None  # libc's malloc_trim, looked up once (False: none)


@dataclass(frozen=True)
class EdgeConfig:
    """Timeouts and limits of the edge (seconds, bytes)."""

    https_port: int = 443  # public HTTPS port used in redirects
    header_timeout: float = 10.0
    keepalive_timeout: float = 60.0
    connect_timeout: float = 5.0
    response_timeout: float = 300.0
    max_body: int = MAX_BODY
    max_idle_upstream: int = 4096  # per backend; idle ones close after 30 s (upstream.py)
    buffer_limit: int = 256 * 1024
    tick: float = 0.25
    report_interval: float = 0.25
    send_timeout: float = 60.0  # a client that stops reading a response is cut off
    upgrade_drain: float = 20.0  # WebSockets to a leaving backend / at shutdown
    ssl_shutdown: float = 2.0  # wait for the TLS peer's close_notify, then drop it
    access_log: str = ""  # file to append JSON lines to ("" = off)
    access_log_sample: float = 1.0  # fraction of requests logged (5xx and cold starts: all)
    access_log_query: bool = False  # log the query string too
    client_requests: int = 256  # concurrent requests per client address (0 = no cap) -> 429
    client_connections: int = 512  # open connections per client address (0 = no cap) -> 429
    meter_interval: float = 1.0  # how often a worker sends its counters to the main process
    # source_ip (docs/source-ip.md): proxies believed, PROXY headers from them, Cloudflare
    trusted_proxies: tuple[str, ...] = ()
    proxy_protocol: bool = False
    cloudflare_ranges: tuple[str, ...] = ()


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
        self._id_prefix = os.urandom(6).hex().encode("ascii") + b"-"
        self._request_count = 0
        self.meter = Meter()
        self.trusted = Ranges(config.trusted_proxies)  # source_ip: who may say who the client is
        self.cloudflare = Ranges(config.cloudflare_ranges)
        self.on_meter: Callable[[dict[str, Any]], None] | None = None  # a worker's sender
        self._meter_sent = (-1, 0.0)
        self.access = (
            AccessLog(
                Path(config.access_log),
                sample=config.access_log_sample,
                query=config.access_log_query,
            )
            if config.access_log
            else None
        )
        self.client_conns: dict[bytes, int] = {}
        self._closed_since_gc = 0
        self._gc_at = self._full_gc_at = 0.0
        self.wall_offset = time.time() - self.loop.time()
        self.client_busy: dict[bytes, int] = {}
        self._sweep()

    def __repr__(self) -> str:
        return (
            f"EdgeRuntime(connections={len(self.connections)}, state={self.state!r}, "
            f"draining={self.draining})"
        )

    def set_state(self, state: EdgeState) -> None:
        self.state = state
        live = state.addresses()
        self.pool.prune(live)
        self._budget_upgraded(lambda addr: addr not in live)

    def _budget_upgraded(self, leaving: Callable[[tuple[str, int]], bool]) -> None:
        """Upgraded (WebSocket) connections to a backend that is ``leaving`` get
        ``upgrade_drain`` seconds more, then a close frame (see ``end_upgraded``)."""
        until = self.loop.time() + self.config.upgrade_drain
        for conn in self.connections:
            addr = conn.upgraded_to()
            if addr is not None and leaving(addr) and not conn.deadline:
                conn.set_deadline(until)

    def connection_opened(self, conn: Connection, ip: bytes) -> bool:
        """Count a new client connection; False when its address is over the cap."""
        self.connections.add(conn)
        conns = self.client_conns
        count = conns[ip] = conns.get(ip, 0) + 1
        cap = self.config.client_connections
        return not cap or count <= cap or self.carries_many(ip)

    def carries_many(self, ip: bytes) -> bool:
        """A trusted proxy or a Cloudflare address: many clients behind one address, never
        capped (looked up only once an address is over a cap)."""
        return ip in self.trusted or ip in self.cloudflare

    def connection_closed(self, conn: Connection, ip: bytes) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self._closed_since_gc += 1
            conns = self.client_conns
            left = conns.get(ip, 1) - 1
            if left > 0:
                conns[ip] = left
            else:
                conns.pop(ip, None)

    def client_request(self, ip: bytes) -> bool:
        """Count a request of ``ip`` in progress; False (not counted) over the cap."""
        busy = self.client_busy
        count = busy.get(ip, 0)
        cap = self.config.client_requests
        if cap and count >= cap and not self.carries_many(ip):
            return False
        busy[ip] = count + 1
        return True

    def client_request_done(self, ip: bytes) -> None:
        busy = self.client_busy
        left = busy.get(ip, 1) - 1
        if left > 0:
            busy[ip] = left
        else:
            busy.pop(ip, None)

    def finished(self, ex: FinishedExchange, instance: int) -> None:
        """Count a finished request (metrics) and queue its access log line."""
        now = self.loop.time()
        status = ex.status or 499
        took = now - ex.started
        self.meter.record(ex.key, status, ex.method, took)
        if ex.cold_wait >= 0:
            self.meter.cold_start(ex.key or "", ex.cold_wait)
        access = self.access
        if access is not None:
            head = ex.head
            up = ex.upstream_at - ex.started if ex.upstream_at else -1.0
            access.add(
                (
                    ex.started + self.wall_offset,
                    head.host if head is not None else "",
                    ex.method,
                    ex.path,
                    ex.query,
                    status,
                    ex.sent,
                    took,
                    up,
                    ex.cold_wait,
                    ex.key or "",
                    instance,
                    ex.request_id,
                    ex.client_ip,
                )
            )

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

    def request_id(self) -> bytes:
        """A new request id: this process's random prefix and a counter (unique per
        server without a syscall per request)."""
        self._request_count += 1
        return b"%b%x" % (self._id_prefix, self._request_count)

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
        self.wall_offset = time.time() - now  # wall clock = loop clock + offset
        self._sweeper = self.loop.call_later(self.config.tick, self._sweep)  # first: always
        for conn in [c for c in self.connections if c.deadline and c.deadline <= now]:
            try:
                conn.on_deadline()
            except Exception:  # one broken connection must not stop every timeout
                log.exception("edge: timeout handling failed for %r; closing it", conn)
                conn.close()
        if self.activity.has_pending():
            self.flush_activity()
        if self.access is not None and self.access.rows:
            self.access.hand_off()
        self._send_meter(now)
        self.pool.expire(time.monotonic())
        self._collect_closed(now)

    def _collect_closed(self, now: float) -> None:
        """Free closed TLS connections promptly: their SSL objects sit in reference cycles
        (the event loop's SSL protocol) that only the cycle collector frees, and with the
        workers' high gen-0 threshold hundreds of them (~25 KB of buffers each) could wait
        for it, or for good once traffic stops. A young-generation collection at most once
        a second, after :data:`GC_AFTER_CLOSES` closes or when no connection is left."""
        closed = self._closed_since_gc
        if not closed or now - self._gc_at < 1.0:
            return
        if closed >= GC_AFTER_CLOSES or not self.connections:
            self._closed_since_gc = 0
            self._gc_at = now
            # a connection that lived a second or more was promoted to the oldest
            # generation: only a full collection frees it (cheap after gc.freeze(); at
            # most every FULL_GC_EVERY seconds under load, at once when idle)
            idle = not self.connections
            full = idle or now - self._full_gc_at >= FULL_GC_EVERY
            if full:
                self._full_gc_at = now
            gc.collect(2 if full else 1)
            if idle:
                _trim_heap()  # give the freed buffers back to the system


    def _send_meter(self, now: float) -> None:
        """A worker's counters to its main process, at most every ``meter_interval``
        and only when something was counted since the last time."""
        sender = self.on_meter
        count, when = self._meter_sent
        if sender is None or now - when < self.config.meter_interval:
            return
        total = sum(self.meter.requests.values()) + sum(self.meter.counters.values())
        if total == count:
            return
        self._meter_sent = (total, now)
        try:
            sender(self.meter.snapshot())
        except Exception:  # reporting must never break serving
            log.exception("edge: sending metrics failed")

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
        """Close idle connections now and let requests in flight finish until ``timeout``;
        upgraded connections get ``upgrade_drain`` (at most ``timeout``), then a close
        frame. Waits ``DRAIN_LINGER`` (bounded by ``timeout``) for connections accepted
        just before the listeners closed (still in their TLS handshake, or about to send
        their first request); after it, connections without a request in flight close.
        Closed connections (a TLS peer that never answers our close_notify, a client
        that keeps a closed connection open) never hold the drain: they are aborted."""
        self.draining = True
        loop = self.loop
        start = loop.time()
        deadline = start + timeout
        linger = start + min(DRAIN_LINGER, timeout)
        upgrade_end = start + min(self.config.upgrade_drain, timeout)
        for conn in list(self.connections):
            conn.close_if_idle()
            if conn.upgraded_to() is not None:
                conn.set_deadline(min(conn.deadline or upgrade_end, upgrade_end))
        while loop.time() < deadline:
            if loop.time() >= linger:
                for conn in list(self.connections):
                    conn.close_if_idle(fresh=True)
                if not any(c.in_flight() or c.upgraded_to() for c in self.connections):
                    break
            await asyncio.sleep(0.05)
        upgraded = [c for c in self.connections if c.upgraded_to() is not None]
        for conn in upgraded:  # their budget ends with the drain: close frames first
            conn.end_upgraded()
        if upgraded:
            await asyncio.sleep(0.1)
        for conn in list(self.connections):
            conn.abort()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.flush_activity()
        if self.access is not None:
            self.access.close()
        self._meter_sent = (-1, 0.0)
        self._send_meter(self.loop.time() + self.config.meter_interval)
        self.pool.close_all()
        for task in list(self._tasks):
            task.cancel()


def _trim_heap() -> None:
    """glibc ``malloc_trim(0)``: freed heap pages go back to the system (no-op elsewhere)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)
