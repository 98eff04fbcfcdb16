"""The daemon's :class:`~tako_server.edge.EdgeHooks`: what the edge asks of the main process.

Rules: this is the one place where the edge meets the supervisor. What the edge routes
with is not here: :class:`~tako_server.routing.RoutingState` pushes it. Cold starts wait
on the supervisor, and its errors are translated into the edge's
:class:`~tako_server.edge.ColdStartError` (rejected: queue full; timeout; anything else:
failed), so the edge never imports the supervisor. Everything else is cheap and
synchronous: activity reports and log lines for apps the supervisor does not know (any
more) are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

from tako_server.edge import Backend, ColdStartError, ColdStartKind
from tako_server.supervisor import ColdStartRejected, ColdStartTimeout, Supervisor
from tako_server.tls import ChallengeStore


class DaemonEdgeHooks:
    """The edge's hooks over the supervisor and the ACME challenge store."""

    def __init__(self, supervisor: Supervisor, challenges: ChallengeStore | None) -> None:
        self._supervisor = supervisor
        self._challenges = challenges

    def __repr__(self) -> str:
        return f"DaemonEdgeHooks(apps={len(self._supervisor.keys())})"

    async def cold_start(self, key: str) -> list[Backend]:
        try:
            return await self._supervisor.cold_start(key)
        except ColdStartRejected as exc:
            raise ColdStartError(ColdStartKind.REJECTED, str(exc), hint=exc.hint) from exc
        except (ColdStartTimeout, TimeoutError) as exc:
            raise ColdStartError(ColdStartKind.TIMEOUT, str(exc) or "timed out") from exc
        except Exception as exc:
            raise ColdStartError(ColdStartKind.FAILED, str(exc) or repr(exc)) from exc

    async def challenge(self, token: str) -> str | None:
        return self._challenges.get(token) if self._challenges is not None else None

    def app_log(self, key: str, line: str) -> None:
        if key in self._supervisor.keys():
            self._supervisor.log(key).write(line)

    def report(self, reporter: str, in_flight: Mapping[str, Mapping[int, int]]) -> None:
        for key, counts in in_flight.items():
            self._supervisor.report_activity(key, counts, reporter=reporter)
