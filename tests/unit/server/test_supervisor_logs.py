"""App log: line splitting, truncation, rotation, history and followers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tako_server.supervisor.health import judge, parse_status_line
from tako_server.supervisor.logs import MAX_LINE_BYTES, TRUNCATED, AppLog, LineSplitter, iter_lines

LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(out|err|tako)\] \[(\d+|-)\] ")


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b"a\nb\n"], ["a", "b"]),
        ([b"he", b"llo\nwor", b"ld\n"], ["hello", "world"]),
        ([b"no newline at end"], ["no newline at end"]),
        ([b"crlf\r\n"], ["crlf"]),
        ([b"\xff\xfe bad utf8\n"], ["\ufffd\ufffd bad utf8"]),
        ([b"\n\n"], ["", ""]),
    ],
)
def test_line_splitter_splits_a_byte_stream_into_lines(
    chunks: list[bytes], lines: list[str]
) -> None:
    assert list(iter_lines(chunks)) == lines


def test_line_splitter_truncates_a_line_over_64_kib_and_skips_its_rest() -> None:
    splitter = LineSplitter()
    out = splitter.feed(b"x" * 40_000)
    out += splitter.feed(b"x" * 40_000)
    out += splitter.feed(b"x" * 10 + b"\nnext\n")
    assert len(out) == 2
    assert out[0] == "x" * MAX_LINE_BYTES + TRUNCATED
    assert out[1] == "next"


def test_log_lines_carry_time_stream_and_instance(tmp_path: Path) -> None:
    log = AppLog(tmp_path)
    log.write_lines(["hello", "world"], stream="out", instance=3)
    log.write("instance 3 started")
    lines = log.history(10)
    assert [LINE_RE.match(line) is not None for line in lines] == [True, True, True]
    assert lines[0].endswith("[out] [3] hello")
    assert lines[2].endswith("[tako] [-] instance 3 started")
    assert (tmp_path / "current.log").read_text().count("\n") == 3


def test_log_rotates_to_previous_before_passing_max_bytes(tmp_path: Path) -> None:
    log = AppLog(tmp_path, max_bytes=10_000)
    for i in range(300):
        log.write_lines([f"line {i:04d} " + "y" * 80], stream="out", instance=1)
    current = tmp_path / "current.log"
    previous = tmp_path / "previous.log"
    assert current.stat().st_size <= 10_000
    assert previous.exists() and previous.stat().st_size <= 10_000
    last = log.history(100)  # about 80 lines per file: spans both
    assert len(last) == 100 and "line 0299" in last[-1] and "line 0200" in last[0]


def test_history_spans_previous_and_current_and_handles_missing_files(tmp_path: Path) -> None:
    assert AppLog(tmp_path / "nothing").history(5) == []
    log = AppLog(tmp_path, max_bytes=200)
    for i in range(6):
        log.write(f"entry {i}")
    assert [line.rsplit(" ", 1)[-1] for line in log.history(3)] == ["3", "4", "5"]
    assert log.history(0) == []


async def test_follow_receives_new_lines_and_a_slow_follower_loses_only_the_oldest(
    tmp_path: Path,
) -> None:
    log = AppLog(tmp_path)
    follow = log.follow(buffer=5)
    for i in range(8):
        log.write(f"n{i}")
    got = [await follow.__anext__() for _ in range(6)]
    assert "3 line(s) skipped" in got[0]
    assert [g.rsplit(" ", 1)[-1] for g in got[1:]] == ["n3", "n4", "n5", "n6", "n7"]
    await follow.aclose()
    assert log.followers == 0
    log.write("after close")  # no follower: nothing buffered, nothing blocks


async def test_follow_ends_when_the_log_is_closed(tmp_path: Path) -> None:
    log = AppLog(tmp_path)
    follow = log.follow()
    log.write("last")
    log.close()
    assert [line async for line in follow][-1].endswith("last")


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (b"HTTP/1.1 200 OK\r\n", True),
        (b"HTTP/1.1 404 Not Found\r\n", True),
        (b"HTTP/1.0 499 Whatever\r\n", True),
        (b"HTTP/1.1 500 Internal Server Error\r\n", False),
        (b"HTTP/1.1 503\r\n", False),
        (b"SSH-2.0-OpenSSH\r\n", False),
        (b"HTTP/1.1 abc\r\n", False),
    ],
)
def test_health_verdict_is_healthy_for_any_status_below_500(line: bytes, ok: bool) -> None:
    assert judge(parse_status_line(line)).ok is ok


def test_a_full_disk_loses_log_lines_but_never_raises(tmp_path: Path) -> None:
    from tako_server.supervisor.logs import AppLog

    log = AppLog(tmp_path / "logs")
    log.write("first")
    log._file = open("/dev/full", "ab")  # noqa: SIM115 - every write now fails with ENOSPC
    log.write_lines(["a", "b"], stream="out", instance=1)
    assert log.lost_lines >= 1
    log.write("after the disk has room again")
    assert "after the disk has room again" in (tmp_path / "logs" / "current.log").read_text()
    log.close()
