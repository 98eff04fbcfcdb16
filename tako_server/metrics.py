"""Prometheus metrics of the server: what is rendered, and the listener that serves it.

Rules:

- Off by default. With ``metrics_port`` set, ``GET /metrics`` on ``metrics_host``
  (loopback unless configured) answers the text exposition format 0.0.4; anything else
  is 404. Nothing here is on the request path: the edge counts in each process
  (:mod:`tako_server.edge.meter`) and this module reads, sums and renders on a scrape.
- :func:`render` is pure: it turns a :class:`Readings` (plain values gathered from the
  edge, the supervisor, the certificate store and the command counters) into text, so a
  table test covers names, labels, escaping and histogram accumulation.
- Names follow Prometheus conventions: ``tako_`` prefix, ``_total`` for counters,
  ``_seconds`` for durations, base units. Labels: ``app`` and ``env`` (from the app key
  ``name/env``), ``status_class`` (``2xx``), ``method``, ``state``, ``result``, ``host``.
- Counters live as long as the daemon (a restart resets them, as Prometheus expects).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tako_server.edge.meter import COLD_START_BUCKETS, DURATION_BUCKETS, empty_snapshot

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
INSTANCE_STATES = ("starting", "healthy", "unhealthy", "draining", "stopped", "failed")


@dataclass
class AppReading:
    """One app as the supervisor sees it."""

    key: str
    #: (state, requests in flight, restarts) per instance
    instances: Sequence[tuple[str, int, int]] = field(default_factory=list)
    probe_failures: int = 0
    cold_starts: int = 0


@dataclass
class Readings:
    """Everything one scrape renders."""

    edge: dict[str, Any] = field(default_factory=empty_snapshot)
    apps: list[AppReading] = field(default_factory=list)
    certs: list[tuple[str, float]] = field(default_factory=list)  # host, not_after (epoch s)
    events: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # name, key, result
    worker_restarts: int = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _app(key: str) -> dict[str, str]:
    app, _, env = key.partition("/")
    return {"app": app, "env": env}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, text: str) -> None:
        self.lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        self.lines.append(f"{name}{_labels(**labels) if labels else ''} {_num(value)}")

    def histogram(self, name: str, bounds: tuple[float, ...], hists: dict[str, list[Any]]) -> None:
        for key, (counts, total, count) in sorted(hists.items()):
            labels = _app(key)
            running = 0
            for bound, n in zip((*bounds, float("inf")), counts, strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else _num(bound)
                self.sample(f"{name}_bucket", {**labels, "le": le}, running)
            self.sample(f"{name}_sum", labels, total)
            self.sample(f"{name}_count", labels, count)


def render(r: Readings) -> str:
    """The exposition text for ``r`` (see the module rules)."""
    out = _Out()
    _render_edge(out, r.edge)
    _render_apps(out, r.apps)
    out.family("tako_deploys_total", "counter", "Deploy commands by result.")
    out.family("tako_rollbacks_total", "counter", "Rollback commands by result.")
    for (name, key, result), n in sorted(r.events.items()):
        out.sample(f"tako_{name}s_total", {**_app(key), "result": result}, n)
    out.family(
        "tako_certificate_expiry_timestamp_seconds", "gauge", "When each certificate expires."
    )
    for host, not_after in sorted(r.certs):
        out.sample("tako_certificate_expiry_timestamp_seconds", {"host": host}, not_after)
    out.family("tako_edge_worker_restarts_total", "counter", "Edge worker processes restarted.")
    out.sample("tako_edge_worker_restarts_total", {}, r.worker_restarts)
    return "\n".join(out.lines) + "\n"


def _render_edge(out: _Out, edge: dict[str, Any]) -> None:
    out.family("tako_http_requests_total", "counter", "Requests answered by the edge.")
    for app_key, status_class, method, n in sorted(edge["requests"]):
        labels = {**_app(app_key), "status_class": status_class, "method": method}
        out.sample("tako_http_requests_total", labels, n)
    out.family(
        "tako_http_request_duration_seconds", "histogram", "Time from request head to answer."
    )
    out.histogram("tako_http_request_duration_seconds", DURATION_BUCKETS, edge["durations"])
    out.family(
        "tako_cold_start_wait_seconds", "histogram", "How long requests waited for a cold start."
    )
    out.histogram("tako_cold_start_wait_seconds", COLD_START_BUCKETS, edge["cold_waits"])
    names = {
        "upstream_connect_errors": "Connections to an app instance that failed.",
        "limited": "Requests refused with 429 by the per-client caps.",
        "proxy_protocol_errors": "Connections closed for a bad or missing PROXY header.",
    }
    counters = {(name, key): n for name, key, n in edge["counters"]}
    for name, text in names.items():
        out.family(f"tako_{name}_total", "counter", text)
        for (counted, key), n in sorted(counters.items()):
            if counted == name:
                labels = _app(key) if name == "upstream_connect_errors" else {}
                out.sample(f"tako_{name}_total", labels, n)


def _render_apps(out: _Out, apps: Iterable[AppReading]) -> None:
    apps = sorted(apps, key=lambda a: a.key)
    out.family("tako_http_requests_in_flight", "gauge", "Requests being answered by instances.")
    for a in apps:
        out.sample("tako_http_requests_in_flight", _app(a.key), sum(i[1] for i in a.instances))
    out.family("tako_instances", "gauge", "App instances by state.")
    for a in apps:
        for state in INSTANCE_STATES:
            count = sum(1 for i in a.instances if i[0] == state)
            out.sample("tako_instances", {**_app(a.key), "state": state}, count)
    series = (
        ("tako_instance_restarts_total", "Instance restarts after a crash.", "restarts"),
        ("tako_health_check_failures_total", "Failed health checks.", "probe_failures"),
        ("tako_cold_starts_total", "Instance starts for waiting requests.", "cold_starts"),
    )
    for name, text, what in series:
        out.family(name, "counter", text)
        for a in apps:
            value = sum(i[2] for i in a.instances) if what == "restarts" else getattr(a, what)
            out.sample(name, _app(a.key), value)


class MetricsServer:
    """``GET /metrics`` on its own listener, rendering :func:`render` of ``read()``."""

    def __init__(self, read: Callable[[], Readings], host: str, port: int) -> None:
        self.read = read
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"MetricsServer({self.host}:{self.port}, running={self._runner is not None})"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # reuse_port: a takeover successor binds while its predecessor still serves
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, reuse_port=True)
        await site.start()
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def _metrics(self, request: web.Request) -> web.Response:
        text = render(self.read())
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
