"""What a ``tako dev`` session does on each event: a pure state machine.

``DevMachine.handle(event, now) -> [actions]``; the session (:mod:`.session`) feeds it
events (the process started, exited, listens or not, files changed, ``r`` + Enter, a stop
request) and executes the actions (spawn, terminate, tell the edge, say something, finish).
Time is an argument, so playbook tests need no clock.

Rules:

- start: spawn and tell the edge ``starting`` (requests wait for the app); once the app
  listens on ``PORT`` it is ``up``; if it has not listened after ``ready_timeout`` seconds
  the developer is told once, while its output keeps showing;
- a running app that stops listening (its own reloader restarting it) is ``starting``
  again until it listens, without a word;
- files changed: restart the app (terminate, then spawn when it exited), unless the
  command reloads by itself; ``r`` + Enter restarts it in any case;
- the app exits on its own: say the exit code, tell the edge ``down`` and wait for a file
  change or ``r`` + Enter, never restart in a loop; a command that cannot be spawned is
  the same (its reason instead of an exit code);
- stop (Ctrl-C, ``tako dev stop``, the edge leaving): terminate the app, finish once it
  exited; a second stop while stopping kills it.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass

from tako_common.protocol.dev import DevStateName

# ------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class Begin:
    """The session starts (the edge knows the app)."""


@dataclass(frozen=True)
class SpawnFailed:
    reason: str


@dataclass(frozen=True)
class Exited:
    code: int


@dataclass(frozen=True)
class Probed:
    listening: bool


@dataclass(frozen=True)
class Tick:
    """Time passed (checks the readiness timeout)."""


@dataclass(frozen=True)
class FilesChanged:
    paths: tuple[str, ...]


@dataclass(frozen=True)
class RestartKey:
    """``r`` + Enter."""


@dataclass(frozen=True)
class StopRequested:
    reason: str
    failed: bool = False


Event = Begin | SpawnFailed | Exited | Probed | Tick | FilesChanged | RestartKey | StopRequested

# ------------------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Spawn:
    pass


@dataclass(frozen=True)
class Terminate:
    force: bool = False


@dataclass(frozen=True)
class Report:
    state: DevStateName
    message: str = ""


@dataclass(frozen=True)
class Say:
    level: str  # "info" | "ok" | "warn" | "error"
    text: str


@dataclass(frozen=True)
class Finish:
    code: int


Action = Spawn | Terminate | Report | Say | Finish


class Phase(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"  # spawned, not listening yet
    RUNNING = "running"  # listening on PORT
    RESTARTING = "restarting"  # terminated by us, spawns again when it exited
    CRASHED = "crashed"  # exited on its own: waits for a change or r + Enter
    STOPPING = "stopping"
    DONE = "done"


def describe_exit(code: int) -> str:
    """``exited with code 3`` / ``was killed by SIGKILL``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _plural(paths: tuple[str, ...]) -> str:
    shown = ", ".join(paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


@dataclass
class DevMachine:
    """One app's session (see the module rules)."""

    app: str
    port: int
    reloads_itself: bool
    ready_timeout: float
    phase: Phase = Phase.IDLE
    started_at: float = 0.0
    warned: bool = False
    restarts: int = 0
    exit_code: int = 0
    announce: str = ""

    def __repr__(self) -> str:
        return f"DevMachine({self.app!r}, phase={self.phase.value}, port={self.port})"

    @property
    def process_alive(self) -> bool:
        return self.phase in (Phase.STARTING, Phase.RUNNING, Phase.RESTARTING, Phase.STOPPING)

    def handle(self, event: Event, now: float) -> list[Action]:
        if self.phase is Phase.DONE:
            return []
        if isinstance(event, StopRequested):
            return self._stop(event)
        if self.phase is Phase.STOPPING:
            if not isinstance(event, Exited):
                return []
            self.phase = Phase.DONE
            return [Say("info", f"{self.app} stopped"), Finish(self.exit_code)]
        match event:
            case Begin():
                return self._spawn(now)
            case SpawnFailed(reason=reason):
                return self._crashed(f"could not start: {reason}")
            case Exited(code=code):
                return self._exited(code, now)
            case Probed(listening=listening):
                return self._probed(listening, now)
            case Tick():
                return self._tick(now)
            case FilesChanged(paths=paths):
                return self._changed(f"files changed ({_plural(paths)})", now, forced=False)
            case RestartKey():
                return self._changed("restart asked (r)", now, forced=True)
        return []

    # --- transitions ----------------------------------------------------------------------
    def _spawn(self, now: float) -> list[Action]:
        self.phase, self.started_at, self.warned = Phase.STARTING, now, False
        self.announce = (
            "restarted" if self.restarts else f"listening on 127.0.0.1:{self.port}"
        )
        return [Spawn(), Report("starting")]

    def _crashed(self, why: str) -> list[Action]:
        self.phase = Phase.CRASHED
        return [
            Report("down", why),
            Say("error", f"{self.app} {why}; waiting for a file change (or r + Enter) "
                "to restart"),
        ]

    def _exited(self, code: int, now: float) -> list[Action]:
        if self.phase is Phase.RESTARTING:
            return self._spawn(now)
        if self.phase in (Phase.STARTING, Phase.RUNNING):
            return self._crashed(describe_exit(code))
        return []

    def _probed(self, listening: bool, now: float) -> list[Action]:
        if self.phase is Phase.STARTING and listening:
            self.phase = Phase.RUNNING
            actions: list[Action] = [Report("up")]
            if self.announce:
                actions.append(Say("ok", self.announce))
                self.announce = ""
            return actions
        if self.phase is Phase.RUNNING and not listening:  # its own reloader at work
            self.phase, self.started_at, self.warned = Phase.STARTING, now, False
            return [Report("starting")]
        return []

    def _tick(self, now: float) -> list[Action]:
        if self.phase is not Phase.STARTING or self.warned:
            return []
        if now - self.started_at < self.ready_timeout:
            return []
        self.warned = True
        self.announce = f"{self.app} now listens on 127.0.0.1:{self.port}"
        return [Say(
            "warn",
            f"{self.app} has not listened on PORT={self.port} after "
            f"{self.ready_timeout:g}s: it must serve HTTP on $HOST:$PORT "
            f"(127.0.0.1:{self.port}); still waiting",
        )]

    def _changed(self, why: str, now: float, *, forced: bool) -> list[Action]:
        if self.phase is Phase.CRASHED:
            self.restarts += 1
            return [Say("info", f"{why}: starting {self.app}"), *self._spawn(now)]
        if self.phase not in (Phase.STARTING, Phase.RUNNING):
            return []
        if self.reloads_itself and not forced:
            return []
        self.phase = Phase.RESTARTING
        self.restarts += 1
        return [Say("info", f"{why}: restarting {self.app}"), Terminate(), Report("starting")]

    def _stop(self, event: StopRequested) -> list[Action]:
        self.exit_code = 1 if event.failed else self.exit_code
        if self.phase is Phase.STOPPING:
            return [Terminate(force=True)]
        if self.process_alive:
            self.phase = Phase.STOPPING
            return [Say("info", f"{event.reason}: stopping {self.app}"), Terminate()]
        self.phase = Phase.DONE
        return [Say("info", f"{event.reason}: stopped"), Finish(self.exit_code)]
