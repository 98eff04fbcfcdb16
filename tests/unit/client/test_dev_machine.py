"""Playbooks of a `tako dev` session's state machine: events in, actions out, no clock."""

from __future__ import annotations

from tako_client.dev.machine import (
    Action,
    Begin,
    DevMachine,
    Event,
    Exited,
    FilesChanged,
    Finish,
    Phase,
    Probed,
    Report,
    RestartKey,
    Say,
    Spawn,
    SpawnFailed,
    StopRequested,
    Terminate,
    Tick,
    describe_exit,
)


def machine(reloads_itself: bool = False) -> DevMachine:
    return DevMachine(app="web", port=4000, reloads_itself=reloads_itself, ready_timeout=30)


def kinds(actions: list[Action]) -> list[object]:
    """Actions without the wording of what is said (a Say is its level)."""
    return [a.level if isinstance(a, Say) else a for a in actions]


def play(m: DevMachine, steps: list[tuple[Event, float, list[object]]]) -> None:
    for number, (event, now, expected) in enumerate(steps):
        assert kinds(m.handle(event, now)) == expected, f"step {number}: {event}"


def running(m: DevMachine) -> DevMachine:
    play(m, [
        (Begin(), 0, [Spawn(), Report("starting")]),
        (Probed(True), 1, [Report("up"), "ok"]),
    ])
    return m


def test_start_then_listen_is_up_and_says_where() -> None:
    m = machine()
    m.handle(Begin(), 0)
    said = [a for a in m.handle(Probed(True), 1) if isinstance(a, Say)]
    assert said[0].text == "listening on 127.0.0.1:4000"
    assert m.phase is Phase.RUNNING


def test_files_changed_restarts_when_the_command_does_not_reload_by_itself() -> None:
    m = running(machine())
    play(m, [
        (FilesChanged(("app.py",)), 5, ["info", Terminate(), Report("starting")]),
        (Probed(True), 5.1, []),  # the old process is not a new readiness
        (Exited(-15), 5.2, [Spawn(), Report("starting")]),
        (Probed(True), 5.5, [Report("up"), "ok"]),
    ])
    assert m.restarts == 1


def test_files_changed_is_left_to_a_command_that_reloads_by_itself() -> None:
    m = running(machine(reloads_itself=True))
    play(m, [
        (FilesChanged(("server.js",)), 5, []),
        (Probed(False), 5.1, [Report("starting")]),  # its reloader restarts it
        (Probed(True), 5.4, [Report("up")]),  # silently back
    ])


def test_r_restarts_even_a_command_that_reloads_by_itself() -> None:
    m = running(machine(reloads_itself=True))
    play(m, [(RestartKey(), 5, ["info", Terminate(), Report("starting")])])


def test_a_crash_says_the_exit_code_and_waits_for_a_change_instead_of_looping() -> None:
    m = running(machine())
    actions = m.handle(Exited(3), 9)
    assert kinds(actions) == [Report("down", "exited with code 3"), "error"]
    said = [a for a in actions if isinstance(a, Say)][0].text
    assert "exited with code 3" in said and "r + Enter" in said
    play(m, [(Tick(), 100, []), (Probed(False), 101, []), (Tick(), 500, [])])
    assert m.phase is Phase.CRASHED
    play(m, [(FilesChanged(("app.py",)), 600, ["info", Spawn(), Report("starting")])])


def test_a_crash_restarts_on_r_as_well() -> None:
    m = running(machine())
    m.handle(Exited(1), 2)
    play(m, [(RestartKey(), 3, ["info", Spawn(), Report("starting")])])


def test_a_command_that_cannot_start_is_a_crash_with_its_reason() -> None:
    m = machine()
    m.handle(Begin(), 0)
    actions = m.handle(SpawnFailed("command not found: nodee"), 0)
    assert actions[0] == Report("down", "could not start: command not found: nodee")
    assert m.phase is Phase.CRASHED


def test_not_listening_after_the_timeout_is_said_once_while_it_keeps_running() -> None:
    m = machine()
    play(m, [
        (Begin(), 0, [Spawn(), Report("starting")]),
        (Tick(), 29.9, []),
        (Tick(), 30, ["warn"]),
        (Tick(), 60, []),
        (Probed(True), 61, [Report("up"), "ok"]),
    ])


def test_the_timeout_warning_names_the_port() -> None:
    m = machine()
    m.handle(Begin(), 0)
    [warning] = m.handle(Tick(), 31)
    assert isinstance(warning, Say) and "PORT=4000" in warning.text


def test_stop_terminates_then_finishes_when_the_app_exited() -> None:
    m = running(machine())
    play(m, [
        (StopRequested("interrupted (Ctrl-C)"), 3, ["info", Terminate()]),
        (FilesChanged(("x",)), 3.1, []),
        (StopRequested("interrupted (Ctrl-C)"), 3.2, [Terminate(force=True)]),
        (Exited(-9), 3.3, ["info", Finish(0)]),
        (Begin(), 4, []),
    ])
    assert m.phase is Phase.DONE


def test_stop_of_a_crashed_app_finishes_at_once() -> None:
    m = running(machine())
    m.handle(Exited(2), 1)
    play(m, [(StopRequested("stopped by `tako dev stop`"), 2, ["info", Finish(0)])])


def test_losing_the_edge_stops_with_a_failure_code() -> None:
    m = running(machine())
    m.handle(StopRequested("the dev edge went away", failed=True), 1)
    assert m.handle(Exited(0), 2)[-1] == Finish(1)


def test_exit_descriptions() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(-200) == "was killed by signal 200"
