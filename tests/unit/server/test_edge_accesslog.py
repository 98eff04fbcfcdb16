"""The access log's lines (JSON, escaping, query off by default), sampling and rotation."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest

from tako_server.edge.accesslog import (
    BATCH,
    MAX_BATCH,
    AccessLog,
    Row,
    format_row,
    format_rows,
    rotate,
)

ROW: Row = (
    1_800_000_000.123,
    "shop.example.com",
    b"POST",
    '/cart/"x"\\y',
    b"?token=secret",
    201,
    512,
    0.0123,
    0.011,
    -1.0,
    "shop/prod",
    3,
    b"abc-1",
    b"203.0.113.9",
)


def test_a_line_is_json_with_every_field() -> None:
    line = json.loads(format_row(ROW, query=False))
    assert line == {
        "time": "2027-01-15T08:00:00.123Z",
        "host": "shop.example.com",
        "method": "POST",
        "path": '/cart/"x"\\y',
        "status": 201,
        "bytes": 512,
        "duration_ms": 12.3,
        "upstream_ms": 11.0,
        "cold_start_ms": None,
        "app": "shop",
        "env": "prod",
        "instance": 3,
        "request_id": "abc-1",
        "client": "203.0.113.9",
    }
    assert json.loads(format_row(ROW, query=True))["path"] == '/cart/"x"\\y?token=secret'
    edge = json.loads(format_row((*ROW[:9], -1.0, "", -1, *ROW[12:]), query=False))
    assert (edge["app"], edge["env"], edge["instance"]) == ("", "", None)
    cold = json.loads(format_row((*ROW[:8], -1.0, 2.5, *ROW[10:]), query=False))
    assert (cold["upstream_ms"], cold["cold_start_ms"], cold["instance"]) == (None, 2500.0, 3)


def test_paths_are_escaped_only_when_they_need_it() -> None:
    paths = (
        "/plain",
        "/caf\u00e9",
        "/tab\t",
        "/nl\n",
        "/cr\r",
        "/nel\x85",
        "/ls\u2028",
        '/q"',
        "/b\\",
    )
    for path in paths:
        line = format_row((*ROW[:3], path, *ROW[4:]), query=False)
        assert json.loads(line)["path"] == path
        assert line.endswith(b"\n") and line.count(b"\n") == 1
    line = format_row((*ROW[:3], "/p", b"?a=\n", *ROW[5:]), query=True)
    assert json.loads(line)["path"] == "/p?a=\n" and line.count(b"\n") == 1


def test_a_batch_formats_each_row_on_its_own() -> None:
    a, b, c = ROW[0] + 1.5, ROW[0] + 2.0, ROW[0] + 3.25
    rows: list[Row] = [
        ROW,
        (a, "a.example", b"GET", "/a\tb", b"?x=1", 200, 1, 0.001, 0.0005, -1.0, "a/prod", 1,
         b"r1", b"192.0.2.1"),
        (b, "b.example", b"HEAD", "/", b"", 404, 0, 0.0002, -1.0, -1.0, "", -1, b"r2", b"::1"),
        (c, "c.example", b"PUT", "/c", b"?y", 503, 9, 2.0, -1.0, 1.75, "c/staging", 2,
         b"r3", b"198.51.100.7"),
    ]  # fmt: skip
    block = format_rows(rows, query=True)
    assert block == b"".join(format_row(row, query=True) for row in rows)
    lines = [json.loads(line) for line in block.splitlines()]
    assert [(x["host"], x["path"], x["status"], x["app"], x["env"]) for x in lines] == [
        ("shop.example.com", '/cart/"x"\\y?token=secret', 201, "shop", "prod"),
        ("a.example", "/a\tb?x=1", 200, "a", "prod"),
        ("b.example", "/", 404, "", ""),
        ("c.example", "/c?y", 503, "c", "staging"),
    ]
    assert [x["time"][-7:] for x in lines] == ["00.123Z", "01.623Z", "02.123Z", "03.373Z"]


def test_sampling_keeps_errors_and_cold_starts(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "a.log", sample=0.000001)
    for _ in range(200):
        log.add(ROW)
    server_error = (*ROW[:5], 502, *ROW[6:])
    cold = (*ROW[:9], 1.5, *ROW[10:])
    log.add(server_error)
    log.add(cold)
    assert log.rows[-2:] == [server_error, cold]
    assert len(log.rows) < 10


def test_flush_appends_and_follows_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "access.log"
    log = AccessLog(path)
    log.add(ROW)
    log.flush()
    assert len(path.read_text().splitlines()) == 1
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"
    assert rotate(path, max_bytes=10, keep=2)
    log.add(ROW)
    log.flush()  # reopens: the new line lands in the new file, not the rotated one
    assert len(path.read_text().splitlines()) == 1
    assert len((tmp_path / "logs" / "access.log.1").read_text().splitlines()) == 1
    assert not rotate(path, max_bytes=10_000, keep=2)
    for _ in range(3):
        log.add(ROW)
        log.flush()
        rotate(path, max_bytes=10, keep=2)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["access.log.1", "access.log.2"]  # keep=2: older ones are dropped
    log.close()


def test_an_unwritable_log_drops_lines_without_raising(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = AccessLog(blocker / "access.log")  # its directory is a file
    log.add(ROW)
    log.flush()
    assert log.rows == []


def test_rows_are_formatted_and_written_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path)
    for _ in range(BATCH - 1):
        log.add(ROW)
    assert len(log.rows) == BATCH - 1  # nothing formatted yet
    assert not path.exists()
    log.add(ROW)
    assert log.rows == []  # the batch went to the writer thread
    log.add(ROW)
    log.close()  # the writer finishes, the rest is written here
    lines = path.read_text().splitlines()
    assert len(lines) == BATCH + 1
    assert all(json.loads(line) == json.loads(format_row(ROW, False)) for line in lines)


def test_a_stalled_writer_holds_at_most_max_batch_lines(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "access.log")
    log._written = -MAX_BATCH  # as if MAX_BATCH more lines were still waiting for the disk
    log._handed = 0
    for _ in range(BATCH):
        log.add(ROW)
    assert log.rows == [] and log._handed == 0  # dropped, not queued
    log._written = 0
    for _ in range(BATCH):
        log.add(ROW)
    assert log._handed == BATCH
    log.close()
    assert len((tmp_path / "access.log").read_text().splitlines()) == BATCH


def test_close_leaves_a_stuck_writer_its_descriptor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AccessLog(tmp_path / "access.log")
    release, writing = threading.Event(), threading.Event()
    written: list[int] = []

    def stuck_write(self: AccessLog, data: bytes, count: int) -> None:  # a disk that hangs
        writing.set()
        release.wait(10)
        written.append(count)

    monkeypatch.setattr(AccessLog, "_write", stuck_write)
    for _ in range(BATCH + 3):
        log.add(ROW)
    assert writing.wait(5)
    writer = log._writer
    assert writer is not None
    with caplog.at_level(logging.WARNING):
        log.close(timeout=0.1)
    assert "the writer is stuck" in caplog.text and f"{BATCH + 3} line(s)" in caplog.text
    assert log.rows == [] and log._fd == -1 and not (tmp_path / "access.log").exists()
    release.set()
    writer.join(5)
    assert written == [BATCH]  # the writer finished its block and stopped
