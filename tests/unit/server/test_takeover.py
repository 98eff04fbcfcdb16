"""The takeover's old side as playbooks (fake successors, no processes, no clock), its
status record, ``/proc/<pid>/stat`` parsing, and the upgrading mode a dead reload leaves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tako_common.errors import TakoError
from tako_common.protocol import TakeoverStatus
from tako_server.notify import Notifier
from tako_server.state import StateStore
from tako_server.takeover import (
    Predecessor,
    Takeover,
    TakeoverHooks,
    TakeoverRecord,
    begun,
    clear_dead_reload_mode,
    ended,
    legacy_record,
    parse_proc_stat,
    process_start,
    read_proc_stat,
    reclaim_control,
    start_time,
)
from tako_server.upgrade import (
    LISTEN_FDS_ENV,
    READY_FD_ENV,
    TAKEOVER_FROM_ENV,
    Inheritance,
    TakeoverError,
    reload_owner,
)

NOW = "2026-01-02T03:04:05Z"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- fakes


class FakeControl:
    def __init__(self, owns: bool = True) -> None:
        self.owns = owns
        self.pointed = 0
        self.is_serving = True

    def owns_link(self) -> bool:
        return self.owns

    def point_link(self) -> None:
        self.pointed += 1
        self.owns = True


class FakeNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[Mapping[str, str | int]] = []

    def send(self, fields: Mapping[str, str | int]) -> bool:
        self.sent.append(dict(fields))
        return True


class FakeSuccessor:
    """``start`` answers ``pid``, or raises ``error`` (after "spawning" when ``spawned``)."""

    def __init__(self, pid: int = 4242, error: Exception | None = None, spawned: bool = True):
        self._pid = pid
        self.error = error
        self.spawned = spawned
        self.pid: int | None = None
        self.aborted = False
        self.listeners: object = None

    async def start(self) -> int:
        if self.spawned:
            self.pid = self._pid
        if self.error is not None:
            raise self.error
        return self._pid

    async def abort(self) -> None:
        self.aborted = True


class Playbook:
    """One old side with fakes around it; ``run`` plays one takeover."""

    def __init__(self, tmp_path: Path, successor: FakeSuccessor, in_flight: int = 0) -> None:
        self.state = StateStore.open(tmp_path / "state.sqlite3")
        self.control = FakeControl()
        self.notifier = FakeNotifier()
        self.successor = successor
        self.handed_over = 0
        self.record = TakeoverRecord()
        self.legacy = tmp_path / "takeover.json"
        hooks = TakeoverHooks(lambda: {"http": []}, lambda: in_flight, self._handed_over)
        self.takeover = Takeover(
            self.record,
            hooks,
            state=self.state,
            control=self.control,
            notifier=self.notifier,
            clock=lambda: NOW,
            legacy_path=self.legacy,
            mutations_wait=0.0,
            start_successor=self._start,
        )

    def _start(self, argv: object, listeners: object, timeout: float) -> FakeSuccessor:
        self.successor.listeners = listeners
        return self.successor

    def _handed_over(self) -> None:
        self.handed_over += 1

    @property
    def statuses(self) -> list[object]:
        return [m.get("STATUS") for m in self.notifier.sent]


# --------------------------------------------------------------------------- playbooks


async def test_a_successor_that_serves_ends_the_takeover_and_hands_over(tmp_path: Path) -> None:
    play = Playbook(tmp_path, FakeSuccessor(pid=4242))
    await play.takeover.run()
    status = play.record.status
    assert (status.state, status.attempt, status.successor_pid) == ("succeeded", 1, 4242)
    assert (status.started_at, status.finished_at, status.error) == (NOW, NOW, None)
    assert play.takeover.successor_pid == 4242 and play.handed_over == 1
    assert play.successor.listeners == {"http": []}
    assert play.statuses == ["takeover: starting a new tako-server"]
    assert play.control.pointed == 0
    # the successor leaves the mode, not the old process
    assert play.state.server_mode().owner == reload_owner(os.getpid())


@pytest.mark.parametrize(
    ("successor", "state"),
    [
        (FakeSuccessor(error=TakeoverError("not ready within 60s")), "rolled_back"),
        (FakeSuccessor(error=TakeoverError("cannot start"), spawned=False), "failed"),
        (FakeSuccessor(error=PermissionError("denied")), "rolled_back"),
    ],
)
async def test_a_failed_successor_is_rolled_back_and_this_process_keeps_serving(
    tmp_path: Path, successor: FakeSuccessor, state: str
) -> None:
    play = Playbook(tmp_path, successor)
    play.control.owns = False  # the successor had swapped tako.sock before it failed
    await play.takeover.run()
    status = play.record.status
    assert (status.state, status.attempt, status.successor_pid) == (state, 1, None)
    assert status.error and status.error in {
        "not ready within 60s",
        "cannot start",
        "PermissionError: denied",
    }
    assert play.control.pointed == 1 and play.handed_over == 0
    assert play.takeover.successor_pid is None
    assert play.state.server_mode().mode == "normal"
    assert f"takeover failed: {status.error}" in str(play.statuses[-1])


async def test_deploys_still_running_fail_the_takeover_before_a_successor_starts(
    tmp_path: Path,
) -> None:
    play = Playbook(tmp_path, FakeSuccessor(), in_flight=2)
    await play.takeover.run()
    status = play.record.status
    assert status.state == "failed"
    assert status.error == "2 deploy-type command(s) still running after 0s; takeover not started"
    assert play.successor.pid is None and play.state.server_mode().mode == "normal"


async def test_an_upgrading_mode_held_by_a_client_is_left_to_that_client(tmp_path: Path) -> None:
    play = Playbook(tmp_path, FakeSuccessor(error=TakoError("boom")))
    play.state.set_server_mode("upgrading", "upgrade-prod-1-2", NOW)
    await play.takeover.run()
    mode = play.state.server_mode()
    assert (mode.mode, mode.owner) == ("upgrading", "upgrade-prod-1-2")


async def test_every_takeover_is_a_new_attempt_and_is_written_for_older_clis(
    tmp_path: Path,
) -> None:
    play = Playbook(tmp_path, FakeSuccessor(error=TakoError("boom")))
    await play.takeover.run()
    first = play.record.status
    play.successor.error = None
    await play.takeover.run()
    assert (first.attempt, play.record.status.attempt) == (1, 2)
    assert play.legacy.read_text().startswith(f'{{"from_pid": {os.getpid()}, "state": "succeeded"')


# --------------------------------------------------------------------------- pure parts


def test_status_transitions_keep_the_attempt_and_name_the_outcome() -> None:
    idle = TakeoverStatus()
    running = begun(ended(begun(idle, "t1"), "t2", error="x"), "t3")
    assert (running.state, running.attempt, running.started_at, running.error) == (
        "in_progress",
        2,
        "t3",
        None,
    )
    assert ended(running, "t4", error="y", rolled_back=True).state == "rolled_back"
    assert ended(running, "t4", error="y").state == "failed"
    done = ended(running, "t4", successor_pid=9)
    assert (done.state, done.successor_pid, done.finished_at) == ("succeeded", 9, "t4")


@pytest.mark.parametrize(
    ("state", "legacy"),
    [
        ("in_progress", "started"),
        ("rolled_back", "failed"),
        ("failed", "failed"),
        ("succeeded", "succeeded"),
    ],
)
def test_the_legacy_file_keeps_its_old_state_names(state: str, legacy: str) -> None:
    status = TakeoverStatus.model_validate({"state": state, "started_at": "a", "error": "e"})
    assert legacy_record(status, 7) == {
        "from_pid": 7,
        "state": legacy,
        "successor_pid": None,
        "reason": "e",
        "at": "a",
    }


def test_proc_stat_is_parsed_past_a_command_name_with_spaces_and_parentheses() -> None:
    text = "123 (tako (x) y) S 1 123 123 0 -1 4194560 " + " ".join(["0"] * 12) + " 98765 1 2\n"
    stat = parse_proc_stat(text)
    assert (stat.state, stat.start_ticks, stat.has_exited) == ("S", 98765, False)
    assert parse_proc_stat(text.replace(") S ", ") Z ")).has_exited


def test_start_time_is_boot_time_plus_ticks() -> None:
    assert start_time(250, 1_700_000_000.0, 100) == datetime.fromtimestamp(1_700_000_002.5, UTC)


def test_this_process_is_running_and_a_dead_or_reused_pid_is_not() -> None:
    me = read_proc_stat(os.getpid())
    assert me is not None and process_start(os.getpid()) is not None
    assert Predecessor(os.getpid(), me.start_ticks).is_running()
    assert not Predecessor(os.getpid(), me.start_ticks + 1).is_running()  # pid reused
    assert not Predecessor(dead_pid(), None).is_running()


@pytest.mark.parametrize(
    ("serving", "owns", "moved"), [(True, False, True), (True, True, False), (False, False, False)]
)
def test_the_control_link_is_reclaimed_only_when_it_points_elsewhere(
    serving: bool, owns: bool, moved: bool
) -> None:
    control = FakeControl(owns)
    control.is_serving = serving
    assert reclaim_control(control) is moved and control.pointed == int(moved)


# --------------------------------------------------------------------------- dead reloads


@pytest.mark.parametrize(
    ("owner", "after"),
    [
        (f"reload-{dead_pid()}", "normal"),
        ("upgrade-prod-a-1700000000-42", "upgrading"),
        ("reload-1", "upgrading"),  # pid 1 is alive
    ],
)
def test_only_a_dead_reloads_upgrading_mode_is_cleared(
    tmp_path: Path, owner: str, after: str
) -> None:
    state = StateStore.open(tmp_path / "state.sqlite3")
    state.set_server_mode("upgrading", owner, "2026-01-01T00:00:00Z")
    clear_dead_reload_mode(state)
    assert state.server_mode().mode == after


def inheritance_over_a_pipe() -> tuple[Inheritance, int, socket.socket]:
    """A successor's inheritance from this process: a real ready pipe, one listener."""
    read_fd, write_fd = os.pipe()
    listener = socket.create_server(("127.0.0.1", 0))
    environ = {
        TAKEOVER_FROM_ENV: str(os.getpid()),
        READY_FD_ENV: str(write_fd),
        LISTEN_FDS_ENV: f"http:{listener.detach()}",
    }
    inherited = Inheritance.from_environ(environ)
    assert inherited is not None and environ == {}
    return inherited, read_fd, inherited.listeners["http"][0]


def test_a_server_without_the_edge_closes_its_listeners_and_still_signals_ready() -> None:
    inherited, read_fd, listener = inheritance_over_a_pipe()
    try:
        inherited.close_listeners()
        assert listener.fileno() == -1 and inherited.listeners == {}
        assert inherited.signal_ready() is True
        assert os.read(read_fd, 100) == f"ready {os.getpid()}\n".encode()
        assert os.read(read_fd, 100) == b""  # the write end is closed once told
    finally:
        inherited.close()
        os.close(read_fd)


def test_giving_up_closes_the_ready_pipe_so_the_predecessor_reads_eof() -> None:
    inherited, read_fd, listener = inheritance_over_a_pipe()
    try:
        inherited.close()
        assert listener.fileno() == -1
        assert os.read(read_fd, 100) == b""
        assert inherited.signal_ready() is False
    finally:
        os.close(read_fd)
