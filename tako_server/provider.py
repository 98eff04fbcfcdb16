"""The daemon's EdgeProvider: what the edge proxy asks of the main process.

Rules: the snapshot is built from the persisted routes of running apps and the
supervisor's routable backends; it is rebuilt whole on every change (the edge swaps it).
Stopped apps keep no routes in the snapshot, so their hosts answer 404. Everything here
is cheap and synchronous except ``cold_start``, which waits on the supervisor.
"""

from __future__ import annotations

from tako_server.context import ServerContext
from tako_server.edge import EdgeApp, EdgeSnapshot
from tako_server.supervisor import Supervisor
from tako_server.supervisor.spec import Backend
from tako_server.tls import ChallengeStore


class DaemonEdgeProvider:
    def __init__(
        self, ctx: ServerContext, supervisor: Supervisor, challenges: ChallengeStore | None
    ) -> None:
        self._ctx = ctx
        self._supervisor = supervisor
        self._challenges = challenges

    def __repr__(self) -> str:
        return f"DaemonEdgeProvider(apps={len(self._supervisor.keys())})"

    def snapshot(self) -> EdgeSnapshot:
        supervisor = self._supervisor
        running = {r.key: r for r in self._ctx.state.list_apps() if r.state == "running"}
        routes = tuple(
            (route, key)
            for key, texts in self._ctx.state.all_routes().items()
            if key in running
            for route in texts
        )
        apps = {}
        for key in running:
            public = supervisor.public_dir(key) if key in supervisor.keys() else None
            apps[key] = EdgeApp(
                key=key,
                backends=tuple(supervisor.backends(key)) if key in supervisor.keys() else (),
                public_dir=str(public) if public else None,
                cold_start=key in supervisor.keys() and supervisor.wants_cold_start(key),
            )
        return EdgeSnapshot(routes=routes, apps=apps)

    async def cold_start(self, key: str) -> list[Backend]:
        return await self._supervisor.cold_start(key)

    def report_activity(
        self, key: str, in_flight: dict[int, int], now: float, reporter: str
    ) -> None:
        self._supervisor.report_activity(key, in_flight, now, reporter=reporter)

    def challenge(self, token: str) -> str | None:
        return self._challenges.get(token) if self._challenges is not None else None

    def app_log(self, key: str, line: str) -> None:
        if key in self._supervisor.keys():
            self._supervisor.log(key).write(line)
