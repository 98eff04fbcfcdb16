"""What the daemon adds around the edge for operators: the edge's settings, the metrics
listener and the access log's rotation.

Rules:

- :func:`edge_config` is the one translation of server settings into the edge's
  :class:`~tako_server.edge.EdgeConfig` (timeouts, per-client caps, access log).
- :class:`Observability` gathers :class:`~tako_server.metrics.Readings` from the
  supervisor, the edge, the certificate store and the command counters on each scrape,
  serves them when ``metrics_port`` is set, and rotates the access log (checked every
  :data:`ROTATE_EVERY` seconds; the edge processes reopen the file by themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import TYPE_CHECKING

from tako_common.tasks import spawn
from tako_server.edge import EdgeConfig
from tako_server.edge.accesslog import rotate
from tako_server.edge.clientaddr import load_cloudflare_ranges
from tako_server.edge.meter import empty_snapshot
from tako_server.metrics import AppReading, MetricsServer, Readings
from tako_server.settings import ServerSettings

if TYPE_CHECKING:
    from tako_server.edge import Edge
    from tako_server.supervisor import Supervisor
    from tako_server.tls import CertStore

log = logging.getLogger(__name__)
ROTATE_EVERY = 5.0


def edge_config(settings: ServerSettings) -> EdgeConfig:
    path = settings.access_log_path
    return EdgeConfig(
        send_timeout=settings.send_timeout,
        upgrade_drain=settings.upgrade_drain,
        client_requests=settings.client_requests,
        client_connections=settings.client_connections,
        access_log=str(path) if path is not None else "",
        access_log_sample=settings.access_log_sample,
        access_log_query=settings.access_log_query,
        trusted_proxies=tuple(settings.source_ip_trusted_proxies),
        proxy_protocol=settings.source_ip_proxy_protocol,
        cloudflare_ranges=load_cloudflare_ranges(settings.source_ip_cloudflare_ranges),
    )


class Observability:
    """Metrics listener and access log rotation for one daemon."""

    def __init__(
        self,
        settings: ServerSettings,
        supervisor: Supervisor,
        events: Counter[tuple[str, str, str]],
    ) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.edge: Edge | None = None
        self.certs: CertStore | None = None
        #: (``deploy``/``rollback``, app key, ``ok``/``error``) -> count (the context's)
        self.events = events
        self._server: MetricsServer | None = None
        self._rotator: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Observability(metrics={self._server!r}, events={sum(self.events.values())})"

    def readings(self) -> Readings:
        supervisor = self.supervisor
        apps = []
        for key in supervisor.keys():
            status = supervisor.status(key)
            if status is None:
                continue
            instances = [(i.state, i.in_flight, i.restarts) for i in status.instances]
            apps.append(AppReading(key, instances, status.probe_failures, status.cold_starts))
        certs = []
        if self.certs is not None:
            for domain in self.certs.domains():
                info = self.certs.info(domain)
                if info is not None:
                    certs.append((domain, info.not_after.timestamp()))
        edge = self.edge
        return Readings(
            edge=edge.meter_snapshot() if edge is not None else empty_snapshot(),
            apps=apps,
            certs=certs,
            events=self.events,
            worker_restarts=edge.worker_restarts if edge is not None else 0,
        )

    async def start(self) -> None:
        s = self.settings
        if s.metrics_port is not None:
            self._server = MetricsServer(self.readings, s.metrics_host, s.metrics_port)
            await self._server.start()
        if s.access_log_path is not None:
            self._rotator = spawn(self._rotate_loop(), name="access-log-rotation")

    async def _rotate_loop(self) -> None:
        s = self.settings
        path = s.access_log_path
        assert path is not None
        while True:
            await asyncio.sleep(ROTATE_EVERY)
            try:
                rotate(path, s.access_log_max_mb * 1024 * 1024, s.access_log_keep)
            except OSError as exc:
                log.warning("access log rotation failed: %s", exc)

    async def stop(self) -> None:
        if self._rotator is not None:
            self._rotator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rotator
            self._rotator = None
        if self._server is not None:
            await self._server.stop()
            self._server = None
