"""The edge channel's typed messages: each one survives encode -> decode unchanged, and
a line that is not a valid message is refused with an error naming its op.

The channel test feeds a plain ``StreamReader`` (no socket): a refused line is logged
and skipped, and the next valid message comes through.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tako_server.edge.channel import Channel
from tako_server.edge.hooks import ColdStartKind
from tako_server.edge.messages import (
    OPS,
    ActivityReport,
    AppLogLine,
    CertsChanged,
    ChallengeReply,
    ChallengeRequest,
    ColdStartReply,
    ColdStartRequest,
    Message,
    MessageError,
    MeterReport,
    Ready,
    SnapshotPush,
    Started,
    StopWorker,
    decode,
    encode,
)
from tako_server.edge.meter import Meter
from tako_server.edge.snapshot import Backend, EdgeApp, EdgeSnapshot, ImageRules

B1 = Backend(1, "127.0.0.1", 9001)
RULES = ImageRules(
    ("/img/**",), ("https://cdn.example.com/**",), (320, 640), (75, 90), ("avif", "webp"), "/c"
)
SNAPSHOT = EdgeSnapshot(
    routes=(("a.example.com", "a/prod"), ("*.b.example.com/x/*", "b/prod")),
    apps={
        "a/prod": EdgeApp("a/prod", (B1, Backend(2, "::1", 9002)), "/srv/a/public", False),
        "b/prod": EdgeApp("b/prod", (), None, True),
        "c/prod": EdgeApp("c/prod", (B1,), None, False, maintenance="back <soon>", images=RULES),
        "d/prod": EdgeApp("d/prod", (B1,), None, False, maintenance=""),
        "e/prod": EdgeApp("e/prod", (B1,), None, False, source_ip="trusted-proxy"),
    },
)


def _meter() -> Meter:
    meter = Meter()
    meter.record("a/prod", 200, b"GET", 0.003)
    meter.record(None, 404, b"BREW", 0.2)
    meter.cold_start("b/prod", 1.5)
    meter.count("upstream_connect_errors", "a/prod")
    return meter


EVERY_MESSAGE: list[Message] = [
    SnapshotPush(SNAPSHOT),
    SnapshotPush(EdgeSnapshot()),
    CertsChanged(),
    StopWorker(2.5),
    ColdStartReply(7, backends=(B1,)),
    ColdStartReply(8, error=ColdStartKind.REJECTED, message="queue of a/prod is full"),
    ColdStartReply(9, error=ColdStartKind.TIMEOUT, message="not ready in 30s"),
    ChallengeReply(3, "token.key-authorization"),
    ChallengeReply(4, None),
    Started(1234),
    Ready(1234),
    ActivityReport({"a/prod": {1: 3, 2: 0}, "b/prod": {}}),
    ColdStartRequest(7, "b/prod"),
    ChallengeRequest(3, "tok-EN_1"),
    AppLogLine("a/prod", "edge: 502 for /x: cannot connect"),
    MeterReport(_meter().snapshot()),
    MeterReport(Meter().snapshot()),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["op"] == message.op
    assert decode(line) == message


def test_every_op_has_a_round_trip_case() -> None:
    assert sorted({m.op for m in EVERY_MESSAGE}) == sorted(OPS)


def line(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


MALFORMED: list[tuple[str, bytes, str, str]] = [
    # (case, line, op named in the error, words in the error)
    ("not JSON", b"{nope\n", "?", "not JSON"),
    ("not an object", b"[1, 2]\n", "?", "not a JSON object"),
    ("no op", line(pid=1), "?", "no op"),
    ("unknown op", line(op="reply", id=1), "reply", "unknown op"),
    ("missing field", line(op="started"), "started", "missing field 'pid'"),
    ("id as text", line(op="cold_start", id="1", key="a"), "cold_start", "'id'"),
    ("id as bool", line(op="challenge", id=True, token="t"), "challenge", "'id'"),
    ("key as number", line(op="cold_start", id=1, key=5), "cold_start", "'key'"),
    ("negative drain", line(op="stop", drain=-1), "stop", "'drain'"),
    ("bad kind", line(op="cold_start_reply", id=1, error="gone", message=""), "", "gone"),
    ("bad backend", line(op="cold_start_reply", id=1, backends=[[1, "h"]]), "", "backend"),
    ("bad answer", line(op="challenge_reply", id=1, answer=5), "challenge_reply", "answer"),
    ("bad count", line(op="activity", apps={"a/prod": {"1": "2"}}), "activity", "count"),
    ("bad instance", line(op="activity", apps={"a/prod": {"x": 1}}), "activity", "x"),
    ("apps not object", line(op="activity", apps=[]), "activity", "apps"),
    ("log line number", line(op="app_log", key="a/prod", line=1), "app_log", "'line'"),
    ("meter not object", line(op="meter", snapshot=[]), "meter", "snapshot"),
    (
        "meter count as text",
        line(
            op="meter",
            snapshot={**Meter().snapshot(), "requests": [["a/prod", "2xx", "GET", "1"]]},
        ),
        "meter",
        "requests",
    ),
    (
        "meter histogram short",
        line(op="meter", snapshot={**Meter().snapshot(), "durations": {"a/prod": [[1], 0.1, 1]}}),
        "meter",
        "durations",
    ),
    ("route triple", line(op="snapshot", routes=[["a", "b", "c"]], apps={}), "snapshot", "route"),
    (
        "cold_start text",
        line(
            op="snapshot",
            routes=[],
            apps={"a/prod": {"backends": [], "public_dir": None, "cold_start": "yes"}},
        ),
        "snapshot",
        "cold_start",
    ),
    (
        "maintenance number",
        line(
            op="snapshot",
            routes=[],
            apps={"a": {"backends": [], "public_dir": None, "cold_start": False, "maintenance": 1}},
        ),
        "snapshot",
        "maintenance",
    ),
    (
        "image sizes as text",
        line(
            op="snapshot",
            routes=[],
            apps={"a": {"backends": [], "public_dir": None, "cold_start": False, "images": {
                "local_patterns": ["/**"], "remote_patterns": [], "sizes": ["320"],
                "qualities": [75], "formats": ["webp"], "cache_dir": "/c"}}},
        ),
        "snapshot",
        "images.sizes",
    ),
    (
        "images without a cache dir",
        line(
            op="snapshot",
            routes=[],
            apps={"a": {"backends": [], "public_dir": None, "cold_start": False, "images": {
                "local_patterns": ["/**"], "remote_patterns": [], "sizes": [320],
                "qualities": [75], "formats": ["webp"]}}},
        ),
        "snapshot",
        "cache_dir",
    ),
    (
        "unknown source_ip",
        line(
            op="snapshot",
            routes=[],
            apps={"a": {"backends": [], "public_dir": None, "cold_start": False,
                        "source_ip": "proxy"}},
        ),  # fmt: skip
        "snapshot",
        "source_ip",
    ),
    (
        "public_dir number",
        line(
            op="snapshot",
            routes=[],
            apps={"a/prod": {"backends": [], "public_dir": 3, "cold_start": False}},
        ),
        "snapshot",
        "public_dir",
    ),
]


@pytest.mark.parametrize(("case", "raw", "op", "words"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_lines_are_refused_naming_the_op(
    case: str, raw: bytes, op: str, words: str
) -> None:
    with pytest.raises(MessageError) as caught:
        decode(raw)
    expected_op = op or "cold_start_reply"
    assert caught.value.op == expected_op, case
    assert f"{expected_op!r} refused" in str(caught.value)
    assert words in str(caught.value), str(caught.value)


class _NoWriter:
    """The channel's writer, never written to by a reading test."""

    def is_closing(self) -> bool:
        return False


async def test_the_channel_logs_a_refused_line_and_reads_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(line(op="cold_start", id="x", key="a/prod"))
    reader.feed_data(line(op="launch_missiles"))
    reader.feed_data(encode(Ready(42)))
    reader.feed_eof()
    channel = Channel(reader, _NoWriter())  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="tako_server.edge.channel"):
        assert await channel.recv() == Ready(42)
        assert await channel.recv() is None  # EOF: the other side is gone

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and channel.refused == 2
    assert "'cold_start' refused" in errors[0] and "'id'" in errors[0]
    assert "'launch_missiles' refused: unknown op" in errors[1]
