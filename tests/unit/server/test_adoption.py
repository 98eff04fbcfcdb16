"""Adoption of running instances, the pure parts: record verdicts, record parsing, which
output bytes a reader may consume, the machine's adopted instances, stop vs restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tako_server.stopmode import restart_pending, take_keep_marker, write_keep_marker
from tako_server.supervisor.adopt import (
    InstanceRecord,
    Verdict,
    WorkerRecord,
    judge,
    parse_record,
    parse_worker_record,
    read_records,
    read_worker_records,
    write_record,
)
from tako_server.supervisor.events import Adopted, Exited, Log, ProbeHealth, Restore, Spawn, Tick
from tako_server.supervisor.instance import InstanceState, describe_exit
from tako_server.supervisor.logs import MAX_LINE_BYTES
from tako_server.supervisor.machine import AppMachine
from tako_server.supervisor.outputs import read_offsets, split_complete
from tako_server.supervisor.spec import LaunchSpec, SupervisorSettings
from tako_server.takeover import ProcStat

RECORD = InstanceRecord(instance_id=3, pid=4242, start_ticks=1000, port=40001, version="v2")


@pytest.mark.parametrize(
    ("stat", "version", "stopped", "verdict"),
    [
        (ProcStat("S", 1000), "v2", False, Verdict.ADOPT),
        (ProcStat("R", 1000), "v2", False, Verdict.ADOPT),
        (None, "v2", False, Verdict.GONE),  # no such pid
        (ProcStat("Z", 1000), "v2", False, Verdict.GONE),  # exited, not reaped yet
        (ProcStat("S", 999), "v2", False, Verdict.GONE),  # the pid was reused
        (ProcStat("S", 1000), "v3", False, Verdict.STALE),  # another version is restored
        (ProcStat("S", 1000), "v2", True, Verdict.STALE),  # the app is stopped
    ],
)
def test_a_record_is_adopted_only_when_the_same_process_runs_the_restored_version(
    stat: ProcStat | None, version: str, stopped: bool, verdict: Verdict
) -> None:
    assert judge(RECORD, stat, version, stopped) is verdict


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        json.dumps({"instance_id": 3, "pid": 4242}),
        json.dumps({**RECORD.__dict__, "pid": 1}),  # never init
        json.dumps({**RECORD.__dict__, "instance_id": 0}),
        json.dumps({**RECORD.__dict__, "pid": "x"}),
    ],
)
def test_torn_or_foreign_records_are_ignored(text: str) -> None:
    assert parse_record(text) is None


def test_records_round_trip_and_only_files_named_by_their_id_count(tmp_path: Path) -> None:
    write_record(tmp_path / "3.json", RECORD)
    write_record(tmp_path / "7.json", RECORD)  # says instance 3: not this file's
    assert oct((tmp_path / "3.json").stat().st_mode & 0o777) == "0o600"
    assert read_records(tmp_path) == [RECORD]
    assert read_records(tmp_path / "missing") == []


WORKER = WorkerRecord(
    worker_id="host.ab12cd.web.production.jobs.v2-1", pid=4343, start_ticks=1000,
    group="jobs", version="v2",
)


@pytest.mark.parametrize(
    ("stat", "version", "stale", "verdict"),
    [
        (ProcStat("S", 1000), "v2", False, Verdict.ADOPT),
        (ProcStat("S", 999), "v2", False, Verdict.GONE),  # the pid was reused
        (None, "v2", False, Verdict.GONE),
        (ProcStat("S", 1000), "v3", False, Verdict.STALE),  # a worker of another release
        (ProcStat("S", 1000), "v2", True, Verdict.STALE),  # its group is gone
    ],
)
def test_a_worker_record_is_judged_by_the_same_rule(
    stat: ProcStat | None, version: str, stale: bool, verdict: Verdict
) -> None:
    assert judge(WORKER, stat, version, stale) is verdict


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        json.dumps({"worker_id": "w-1", "pid": 4242}),
        json.dumps({**WORKER.__dict__, "pid": 1}),
        json.dumps({**WORKER.__dict__, "worker_id": ""}),
        json.dumps({**WORKER.__dict__, "start_ticks": "soon"}),
    ],
)
def test_torn_or_foreign_worker_records_are_ignored(text: str) -> None:
    assert parse_worker_record(text) is None


def test_worker_records_round_trip_and_only_files_named_by_their_id_count(
    tmp_path: Path,
) -> None:
    write_record(tmp_path / f"{WORKER.worker_id}.json", WORKER)
    write_record(tmp_path / "other-2.json", WORKER)  # names another worker: not this file's
    (tmp_path / "3.json").write_text(json.dumps(RECORD.__dict__))  # an instance's record
    assert read_worker_records(tmp_path) == [WORKER]
    assert read_worker_records(tmp_path / "missing") == []


@pytest.mark.parametrize(
    ("data", "final", "lines", "used"),
    [
        (b"", False, [], 0),
        (b"a\nb\n", False, [b"a", b"b"], 4),
        (b"a\nhalf", False, [b"a"], 2),  # the half line waits for its newline
        (b"half", False, [], 0),
        (b"half", True, [b"half"], 4),  # the writer is gone: the rest is a line
        (b"a\n\n", False, [b"a", b""], 3),
        (b"x" * MAX_LINE_BYTES + b"y", False, [b"x" * MAX_LINE_BYTES], MAX_LINE_BYTES),
    ],
)
def test_a_reader_consumes_complete_lines_only(
    data: bytes, final: bool, lines: list[bytes], used: int
) -> None:
    assert split_complete(data, final) == (lines, used)


def test_offsets_default_to_zero_until_recorded(tmp_path: Path) -> None:
    path = tmp_path / "1.pos"
    assert read_offsets(path) == (0, 0)
    path.write_bytes(b"\x01")
    assert read_offsets(path) == (0, 0)
    path.write_bytes((5).to_bytes(8, "little") + (9).to_bytes(8, "little"))
    assert read_offsets(path) == (5, 9)


def spec(version: str = "v2") -> LaunchSpec:
    return LaunchSpec("shop", "prod", version, Path("/srv"), ["app"], {}, Path("/srv/logs"))


def test_adopted_instances_are_healthy_at_once_probed_and_never_reused_by_id() -> None:
    machine = AppMachine("shop/prod", SupervisorSettings())
    actions = machine.handle(Restore(spec(), 2, 300, adopted=(Adopted(4, 4242, 40001),)), 10.0)
    assert machine.backends()[0].port == 40001
    assert machine.instances[4].state is InstanceState.HEALTHY
    assert Log(4, "adopted version v2: pid 4242, port 40001") in actions
    spawns = [a for a in actions if isinstance(a, Spawn)]
    assert [s.instance_id for s in spawns] == [5]  # one more for desired 2, a fresh id
    assert ProbeHealth(4, 40001) in actions


def test_an_adopted_instance_that_exits_is_replaced_with_its_unknown_status_logged() -> None:
    machine = AppMachine("shop/prod", SupervisorSettings(restart_backoff_base=0.5))
    machine.handle(Restore(spec(), 1, 300, adopted=(Adopted(1, 4242, 40001),)), 0.0)
    actions = machine.handle(Exited(1, None), 1.0)
    assert Log(1, f"exited unexpectedly ({describe_exit(None)})") in actions
    later = machine.handle(Tick(), 1.6)
    assert [a.instance_id for a in later if isinstance(a, Spawn)] == [2]


def test_describe_exit_names_adopted_processes() -> None:
    assert "adopted" in describe_exit(None)
    assert describe_exit(3) == "exit code 3"


@pytest.mark.parametrize(
    ("jobs", "restart"),
    [
        ("", False),
        ("123 tako-server.service restart running\n", True),
        ("123 tako-server.service try-restart waiting\n", True),
        ("123 tako-server.service stop running\n", False),
        ("124 other.service restart running\n", False),
        ("9 tako-server.service\n", False),
    ],
)
def test_a_restart_job_of_the_unit_means_keep_the_apps(jobs: str, restart: bool) -> None:
    assert restart_pending(jobs, "tako-server.service") is restart


def test_the_keep_marker_is_taken_once_and_expires(tmp_path: Path) -> None:
    marker = tmp_path / "keep-apps"
    assert take_keep_marker(marker) is False
    write_keep_marker(marker)
    assert take_keep_marker(marker) is True
    assert not marker.exists()
    write_keep_marker(marker)
    os.utime(marker, (0, 0))
    assert take_keep_marker(marker) is False  # stale: a stop long after is a stop
