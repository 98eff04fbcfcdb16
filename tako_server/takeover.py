"""The takeover (SIGHUP), both sides: the one module that drives the handshake and keeps
its record. The wire format and the process primitives (environment variables,
inherited listeners, the :class:`~tako_server.upgrade.Successor` process handle) live
beside it in :mod:`tako_server.upgrade`; ``docs/upgrade.md`` tells the whole story.

Old side (:class:`Takeover`): one takeover at a time; upgrading mode is entered unless a
client holds it; running mutating commands finish first (at most ``MUTATIONS_WAIT``);
the app processes are released (left running, their records and log offsets on disk)
for the successor to adopt, and reclaimed if it fails; the successor is started with
this process's listeners and awaited; on success the daemon is told to drain and exit;
on failure everything is rolled back: the successor is stopped, ``tako.sock`` points at
this process again (:func:`reclaim_control`), the upgrading mode it took is left, systemd
hears why, and this process keeps serving.

New side (:func:`complete_handover`): once the successor serves it tells systemd and the
old process, and leaves the upgrading mode the old process took for it.

The record (:class:`TakeoverRecord`): this process's start time, the process it took
over from (and whether that one still runs), and the status of the last takeover it
started, as ``server_info`` reports them (``TakeoverStatus`` of the protocol, replaced
whole by the pure :func:`begun` / :func:`ended`). The status is also written to
``{data_dir}/takeover.json`` for CLIs older than ``server_info``'s takeover fields;
nothing in this repository reads that file.

Rules: time comes in as an argument (``clock``); the successor is created by a factory
(tests pass a fake); a process is named by pid + kernel start time (``/proc/<pid>/stat``
is parsed here and nowhere else), so a reused pid never passes for the predecessor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from tako_common.errors import TakoError
from tako_common.protocol import TakeoverState, TakeoverStatus
from tako_common.tasks import spawn
from tako_server.notify import Notifier
from tako_server.state import StateStore
from tako_server.upgrade import (
    READY_TIMEOUT,
    Inheritance,
    Successor,
    TakeoverError,
    current_successor_argv,
    reload_owner,
)

log = logging.getLogger("tako_server")

MUTATIONS_WAIT = 120.0  # a takeover waits this long for running deploys to finish
LEGACY_RECORD = "takeover.json"
_LEGACY_STATES = {"in_progress": "started", "rolled_back": "failed"}

# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/<pid>/stat`` says: the state letter and the start time in clock ticks
    after boot (with the pid, it names one process)."""

    state: str
    start_ticks: int

    @property
    def has_exited(self) -> bool:
        return self.state in ("Z", "X")  # a zombie not reaped yet has exited


def parse_proc_stat(text: str) -> ProcStat:
    """Parse ``/proc/<pid>/stat`` (the command name may hold spaces and parentheses)."""
    fields = text[text.rindex(")") + 2 :].split()  # fields 3.. of proc(5)
    return ProcStat(state=fields[0], start_ticks=int(fields[19]))


def read_proc_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat`` parsed; None when there is no such process (or no ``/proc``)."""
    try:
        return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def start_time(start_ticks: int, boot_time: float, ticks_per_second: int) -> datetime:
    """The wall-clock start of a process from its ``start_ticks`` (pure)."""
    return datetime.fromtimestamp(boot_time + start_ticks / ticks_per_second, UTC)


def process_start(pid: int) -> datetime | None:
    """When ``pid`` started, from the kernel (None without ``/proc``)."""
    stat = read_proc_stat(pid)
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        btime = next(float(line.split()[1]) for line in lines if line.startswith("btime "))
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return None
    return None if stat is None else start_time(stat.start_ticks, btime, hz)


@dataclass(frozen=True)
class Predecessor:
    """The process this one took over from, named by pid and start ticks."""

    pid: int
    start_ticks: int | None

    @classmethod
    def of(cls, pid: int) -> Predecessor:
        stat = read_proc_stat(pid)
        return cls(pid, stat.start_ticks if stat is not None else None)

    def is_running(self) -> bool:
        """Still draining (False once it exited, is a zombie, or the pid was reused)."""
        stat = read_proc_stat(self.pid)
        if stat is None or stat.has_exited:
            return False
        return self.start_ticks is None or stat.start_ticks == self.start_ticks


# --------------------------------------------------------------------------- the record


@dataclass
class TakeoverRecord:
    """What ``server_info`` reports about this process's start and takeovers."""

    started: datetime | None = None
    predecessor: Predecessor | None = None
    status: TakeoverStatus = field(default_factory=TakeoverStatus)

    def __repr__(self) -> str:
        pred = self.predecessor.pid if self.predecessor else None
        return f"TakeoverRecord(state={self.status.state!r}, predecessor={pred})"

    @classmethod
    def of_this_process(cls, inherited: Inheritance | None = None) -> TakeoverRecord:
        predecessor = Predecessor.of(inherited.from_pid) if inherited is not None else None
        return cls(started=process_start(os.getpid()), predecessor=predecessor)

    def predecessor_running(self) -> bool:
        return self.predecessor is not None and self.predecessor.is_running()


def begun(status: TakeoverStatus, now: str) -> TakeoverStatus:
    """The status once a new takeover started (pure)."""
    return TakeoverStatus(state="in_progress", attempt=status.attempt + 1, started_at=now)


def ended(
    status: TakeoverStatus,
    now: str,
    *,
    successor_pid: int | None = None,
    error: str | None = None,
    rolled_back: bool = False,
) -> TakeoverStatus:
    """The status once the running takeover ended: succeeded without ``error``; else
    rolled back (a successor had started) or failed (pure)."""
    state: TakeoverState = "succeeded"
    if error is not None:
        state = "rolled_back" if rolled_back else "failed"
    return TakeoverStatus(
        state=state,
        attempt=status.attempt,
        successor_pid=successor_pid,
        error=error,
        started_at=status.started_at,
        finished_at=now,
    )


def legacy_record(status: TakeoverStatus, pid: int) -> dict[str, object]:
    """The ``takeover.json`` shape older CLIs read (pure)."""
    return {
        "from_pid": pid,
        "state": _LEGACY_STATES.get(status.state, status.state),
        "successor_pid": status.successor_pid,
        "reason": status.error,
        "at": status.finished_at or status.started_at,
    }


def write_legacy_record(path: Path, status: TakeoverStatus) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(legacy_record(status, os.getpid())) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)


# --------------------------------------------------------------------------- old side


class ControlLink(Protocol):
    """What a takeover needs of the control server (:class:`~tako_server.control.ControlServer`)."""

    @property
    def is_serving(self) -> bool: ...
    def owns_link(self) -> bool: ...
    def point_link(self) -> None: ...


def reclaim_control(control: ControlLink) -> bool:
    """Point ``tako.sock`` back at this process's socket if it points elsewhere (a failed
    successor may have swapped it); True when it moved."""
    if not control.is_serving or control.owns_link():
        return False
    control.point_link()
    return True


class SuccessorLike(Protocol):
    """What a takeover needs of its successor (:class:`~tako_server.upgrade.Successor`)."""

    @property
    def pid(self) -> int | None: ...
    async def start(self) -> int: ...
    async def abort(self) -> None: ...


Listeners = Mapping[str, Sequence[socket.socket]]
SuccessorFactory = Callable[[Sequence[str], Listeners, float], SuccessorLike]


def start_process(argv: Sequence[str], listeners: Listeners, timeout: float) -> SuccessorLike:
    """The real successor: this program again, as a child process (:mod:`.upgrade`)."""
    return Successor(argv, listeners, timeout=timeout)


@dataclass
class TakeoverHooks:
    """What the daemon lends a takeover: its listeners, its count of running mutating
    commands, and what to do once a successor serves (drain and exit)."""

    listeners: Callable[[], Listeners]
    in_flight: Callable[[], int]
    handed_over: Callable[[], None]
    release_apps: Callable[[], Awaitable[None]] = field(default=lambda: _nothing())
    reclaim_apps: Callable[[], Awaitable[None]] = field(default=lambda: _nothing())


async def _nothing() -> None:
    return None


class Takeover:
    """The old side of this process's takeovers: one at a time, rolled back on failure."""

    def __init__(
        self,
        record: TakeoverRecord,
        hooks: TakeoverHooks,
        *,
        state: StateStore,
        control: ControlLink,
        notifier: Notifier,
        clock: Callable[[], str],
        legacy_path: Path | None = None,
        timeout: float = READY_TIMEOUT,
        mutations_wait: float = MUTATIONS_WAIT,
        start_successor: SuccessorFactory = start_process,
    ) -> None:
        self.record = record
        self.hooks = hooks
        self.state = state
        self.control = control
        self.notifier = notifier
        self.clock = clock
        self.legacy_path = legacy_path
        self.timeout = timeout
        self.mutations_wait = mutations_wait
        self.start_successor = start_successor
        self.successor_pid: int | None = None  # set once a successor serves
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Takeover({self.record.status.state}, running={self.is_running})"

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done()

    def request(self) -> None:
        """SIGHUP: start a takeover unless one runs (the daemon checks that it serves)."""
        if self.is_running:
            log.warning("SIGHUP ignored: a takeover is already in progress")
            return
        self._task = spawn(self.run(), name="takeover")

    async def cancel(self) -> None:
        """Stop a running takeover (this process stops): its successor is stopped too."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def run(self) -> None:
        """One takeover, start to outcome (never raises but for cancellation)."""
        owner = reload_owner(os.getpid())
        owns_mode = self._enter_mode(owner)
        self.notifier.status("takeover: starting a new tako-server")
        self._publish(begun(self.record.status, self.clock()))
        successor: SuccessorLike | None = None
        try:
            await self._wait_mutations()
            listeners = self.hooks.listeners()
            await self.hooks.release_apps()  # the successor adopts the app processes
            successor = self.start_successor(current_successor_argv(), listeners, self.timeout)
            pid = await successor.start()
        except (TakoError, OSError) as exc:
            reason = exc.message if isinstance(exc, TakoError) else f"{type(exc).__name__}: {exc}"
            started = successor is not None and successor.pid is not None
            await self.hooks.reclaim_apps()
            self._roll_back(owner, owns_mode, reason, started)
            return
        except asyncio.CancelledError:
            if successor is not None:  # stopping mid-takeover: the successor must not stay
                await successor.abort()
            await self.hooks.reclaim_apps()
            self._leave_mode(owner, owns_mode)
            self._publish(ended(self.record.status, self.clock(), error="this server stopped"))
            raise
        self.successor_pid = pid
        log.info("takeover: pid %d serves now; pid %d drains and exits", pid, os.getpid())
        self._publish(ended(self.record.status, self.clock(), successor_pid=pid))
        self.hooks.handed_over()

    def _roll_back(self, owner: str, owns_mode: bool, reason: str, started: bool) -> None:
        log.error("takeover failed, pid %d keeps serving: %s", os.getpid(), reason)
        if reclaim_control(self.control):
            log.info("control socket reclaimed by pid %d", os.getpid())
        self._leave_mode(owner, owns_mode)
        self.notifier.status(f"serving (pid {os.getpid()}); takeover failed: {reason}")
        self._publish(ended(self.record.status, self.clock(), error=reason, rolled_back=started))

    def _enter_mode(self, owner: str) -> bool:
        """Enter upgrading mode unless a client holds it; True when this takeover owns it."""
        if self.state.server_mode().mode != "normal":
            return False
        self.state.set_server_mode("upgrading", owner, self.clock())
        return True

    def _leave_mode(self, owner: str, owns_mode: bool) -> None:
        mode = self.state.server_mode()
        if owns_mode and mode.mode == "upgrading" and mode.owner == owner:
            self.state.set_server_mode("normal", None, None)

    def _publish(self, status: TakeoverStatus) -> None:
        self.record.status = status
        if self.legacy_path is not None:
            write_legacy_record(self.legacy_path, status)

    async def _wait_mutations(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.mutations_wait
        while (running := self.hooks.in_flight()) > 0:
            if loop.time() >= deadline:
                raise TakeoverError(
                    f"{running} deploy-type command(s) still running after"
                    f" {self.mutations_wait:.0f}s; takeover not started"
                )
            await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- new side


def complete_handover(inherited: Inheritance, state: StateStore, notifier: Notifier) -> None:
    """The successor serves: tell systemd (``MAINPID`` first) and the old process, and
    leave the upgrading mode the old process took for this takeover."""
    pid = os.getpid()
    notifier.ready(f"serving (pid {pid}, took over from pid {inherited.from_pid})")
    if inherited.signal_ready():
        log.info("tako-server ready (pid %d), took over from pid %d", pid, inherited.from_pid)
    else:  # the predecessor gives the takeover up and stops this process
        log.error("takeover: pid %d could not be told this process serves", inherited.from_pid)
    mode = state.server_mode()
    if mode.mode == "upgrading" and mode.owner == inherited.owner:
        state.set_server_mode("normal", None, None)


def clear_dead_reload_mode(state: StateStore) -> None:
    """Upgrading mode taken by a server's own SIGHUP reload (owner ``reload-<pid>``) dies
    with that process: a fresh start after a crash mid-takeover must not refuse every
    deploy forever. Modes held by a client (``tako servers upgrade``) are left alone."""
    mode = state.server_mode()
    owner = mode.owner or ""
    if mode.mode != "upgrading" or not owner.startswith("reload-"):
        return
    pid = owner.removeprefix("reload-")
    if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
        log.warning("leaving upgrading mode held by %s: that process is gone", owner)
        state.set_server_mode("normal", None, None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
