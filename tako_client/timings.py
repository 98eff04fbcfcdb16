"""Wall time per phase of a deploy, for ``tako deploy --timings`` (recorded here, printed
by :mod:`tako_client.output`).

Phases, in the order they run: ``build`` (once, on this machine), then per server
``connect`` (SSH and the protocol hello), ``lock`` (server info, deploy lock, artifact
check), ``upload`` (absent when the server already holds the artifact), ``release`` (a
release command, when there is one), ``prepare`` and ``rollout`` (the ``deploy`` request,
split where the server says it finished preparing; a server that does not say shows one
``deploy`` phase). Time is an argument (``now``, monotonic seconds): tests need no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PhaseClock:
    """One server's phases: each :meth:`lap` closes the phase that ran since the last one."""

    last: float
    phases: dict[str, float] = field(default_factory=dict)

    def lap(self, phase: str, now: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + max(0.0, now - self.last)
        self.last = now

    def lap_deploy(self, now: float, prepare_seconds: float | None) -> None:
        """Close the ``deploy`` request: ``prepare`` as the server measured it, ``rollout``
        the rest (the round trip included); one ``deploy`` phase when the server is silent."""
        if prepare_seconds is None:
            self.lap("deploy", now)
            return
        spent = max(0.0, now - self.last)
        prepare = min(max(0.0, prepare_seconds), spent)
        self.phases["prepare"] = self.phases.get("prepare", 0.0) + prepare
        self.phases["rollout"] = self.phases.get("rollout", 0.0) + spent - prepare
        self.last = now

    @property
    def total(self) -> float:
        return sum(self.phases.values())


@dataclass
class DeployTimings:
    """The whole deploy: build time and a :class:`PhaseClock` per server."""

    started: float
    build: float | None = None
    servers: dict[str, PhaseClock] = field(default_factory=dict)

    def built(self, now: float) -> None:
        self.build = max(0.0, now - self.started)

    def server(self, name: str, since: float) -> PhaseClock:
        """The clock of ``name`` (made on first use, its first phase starting at ``since``)."""
        return self.servers.setdefault(name, PhaseClock(since))

    def lines(self, now: float) -> list[str]:
        """``build 0.42s``, one line per server (``host1  connect 0.31s  upload ...  = 2.5s``)
        and ``total``; names padded to one column."""
        width = max([len("build"), len("total"), *(len(n) for n in self.servers)])
        out = []
        if self.build is not None:
            out.append(f"{'build':<{width}}  {self.build:.2f}s")
        for name, clock in self.servers.items():
            phases = "  ".join(f"{p} {s:.2f}s" for p, s in clock.phases.items())
            out.append(f"{name:<{width}}  {phases}  = {clock.total:.2f}s")
        out.append(f"{'total':<{width}}  {max(0.0, now - self.started):.2f}s")
        return out
