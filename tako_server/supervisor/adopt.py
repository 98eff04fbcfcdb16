"""Instance records: what a later tako-server needs to adopt a running instance.

Each native (process) instance has ``<log_dir>/instances/<id>.json`` (0600), written
right after the spawn and removed after its exit: pid, the kernel start time of that pid
(``/proc/<pid>/stat`` field 22, in clock ticks after boot), port and version. A new
daemon (after a SIGHUP takeover, a restart or a ``kill -9`` of the old one) reads them
and decides, per record (:func:`judge`, pure):

- ``adopt``: the pid runs, has the same start time (so it is the same process, not a
  reused pid) and runs the version being restored: it is supervised again without a
  restart;
- ``gone``: it exited (or the pid now names another process) while no daemon watched:
  its remaining output is copied to the app log and the machine replaces it;
- ``stale``: it runs but is of another version (a rollout was cut short) or the app is
  stopped: it is stopped (SIGTERM to its group, SIGKILL 5 s later) and not adopted.

Workflow workers (:mod:`tako_server.workflows.workers`) have the same kind of record,
``<log_dir>/workers/<worker id>.json`` (:class:`WorkerRecord`: worker id, pid, start
time, group, version), judged by the same rule (a worker of a group the release no
longer has is ``stale``).

Container instances live in Podman and have no record here.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from tako_server.takeover import ProcStat

R = TypeVar("R", "InstanceRecord", "WorkerRecord")


@dataclass(frozen=True)
class InstanceRecord:
    instance_id: int
    pid: int
    start_ticks: int
    port: int
    version: str


@dataclass(frozen=True)
class WorkerRecord:
    worker_id: str
    pid: int
    start_ticks: int
    group: str
    version: str


class Verdict(enum.Enum):
    ADOPT = "adopt"
    GONE = "gone"
    STALE = "stale"


def is_recorded_process(stat: ProcStat | None, start_ticks: int) -> bool:
    """Whether ``stat`` is the running process a record names (a reused pid has another
    start time) (pure)."""
    return stat is not None and not stat.has_exited and stat.start_ticks == start_ticks


def judge(
    record: InstanceRecord | WorkerRecord, stat: ProcStat | None, version: str, stopped: bool
) -> Verdict:
    """What to do with a recorded instance given what the kernel says of its pid (pure)."""
    if not is_recorded_process(stat, record.start_ticks):
        return Verdict.GONE
    if stopped or record.version != version:
        return Verdict.STALE
    return Verdict.ADOPT


def write_record(path: Path, record: InstanceRecord | WorkerRecord) -> None:
    """Write the record atomically (a reader sees the old one or the new one)."""
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(record), handle)
    os.replace(tmp, path)


def parse_record(text: str) -> InstanceRecord | None:
    """A record from its JSON (None when it is not one: a torn or foreign file)."""
    try:
        data = json.loads(text)
        record = InstanceRecord(
            instance_id=int(data["instance_id"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            port=int(data["port"]),
            version=str(data["version"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return record if record.pid > 1 and record.instance_id > 0 else None


def read_records(instances_dir: Path) -> list[InstanceRecord]:
    """Every valid record in ``instances_dir``, by instance id."""
    found = _read_dir(instances_dir, parse_record, lambda r: str(r.instance_id))
    return sorted(found, key=lambda r: r.instance_id)


def parse_worker_record(text: str) -> WorkerRecord | None:
    """A worker's record from its JSON (None when it is not one)."""
    try:
        data = json.loads(text)
        record = WorkerRecord(
            worker_id=str(data["worker_id"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            group=str(data["group"]),
            version=str(data["version"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return record if record.pid > 1 and record.worker_id else None


def read_worker_records(workers_dir: Path) -> list[WorkerRecord]:
    """Every valid worker record in ``workers_dir``, by worker id."""
    return _read_dir(workers_dir, parse_worker_record, lambda r: r.worker_id)


def _read_dir(
    directory: Path, parse: Callable[[str], R | None], stem: Callable[[R], str]
) -> list[R]:
    """The records ``parse`` accepts among ``directory``'s ``*.json`` files, in name order,
    each in the file named after it (``stem``); unreadable or misnamed files are skipped."""
    records = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = parse(path.read_text())
        except OSError:
            continue
        if record is not None and path.stem == stem(record):
            records.append(record)
    return records
