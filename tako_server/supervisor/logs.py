"""Per-app log: ``<log_dir>/current.log`` rotated to ``previous.log``, plus live followers.

Line format: ``<ISO8601 UTC, ms, Z> [out|err|tako] [<instance or ->] <text>``. Rules:

- writing never blocks on readers: each follower has a bounded buffer that drops its
  oldest lines (and says how many) when the follower is slow;
- ``current.log`` is rotated to ``previous.log`` (replacing it) before it would pass
  ``max_bytes`` (10 MiB), so the log of an app takes at most about twice that;
- a line longer than ``MAX_LINE_BYTES`` (64 KiB) is cut and marked ``…[truncated]``;
- ``history(n)`` reads the last ``n`` lines from both files (previous first);
- the files are 0600 in a 0700 directory (the daemon's; apps never write them).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

logger = logging.getLogger(__name__)

Stream = Literal["out", "err", "tako"]
MAX_LINE_BYTES = 64 * 1024
TRUNCATED = " …[truncated]"
FOLLOW_BUFFER = 1000
_BLOCK = 64 * 1024


def timestamp(now: datetime | None = None) -> str:
    """``2026-03-01T12:00:00.123Z``."""
    moment = now or datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class LineSplitter:
    """Splits a byte stream into text lines (sans-I/O); over-long lines are truncated."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        start = 0
        while True:
            idx = data.find(b"\n", start)
            if idx < 0:
                self._take_partial(data[start:], lines)
                return lines
            if self._skipping:
                self._skipping = False
            else:
                self._buf += data[start:idx]
                lines.append(self._decode(self._buf[: self._max], len(self._buf) > self._max))
            self._buf.clear()
            start = idx + 1

    def _take_partial(self, rest: bytes, lines: list[str]) -> None:
        if self._skipping:
            return
        self._buf += rest
        if len(self._buf) > self._max:
            lines.append(self._decode(self._buf[: self._max], True))
            self._buf.clear()
            self._skipping = True

    def flush(self) -> list[str]:
        """The unterminated last line (at end of stream)."""
        if self._skipping or not self._buf:
            self._buf.clear()
            return []
        line = self._decode(self._buf, False)
        self._buf.clear()
        return [line]

    @staticmethod
    def _decode(raw: bytes | bytearray, cut: bool) -> str:
        text = bytes(raw).decode("utf-8", errors="replace").rstrip("\r")
        return text + TRUNCATED if cut else text


class _Follower:
    """A bounded buffer of lines for one ``follow()`` reader (drops the oldest)."""

    def __init__(self, size: int) -> None:
        self.lines: deque[str] = deque(maxlen=size)
        self.dropped = 0
        self.closed = False
        self.event = asyncio.Event()

    def close(self) -> None:
        self.closed = True
        self.event.set()

    def push(self, line: str) -> None:
        if len(self.lines) == self.lines.maxlen:
            self.dropped += 1
        self.lines.append(line)
        self.event.set()


class LogFollow:
    """Async iterator over live log lines; registered at creation, removed on ``aclose()``."""

    def __init__(self, follower: _Follower, registry: set[_Follower]) -> None:
        self._follower = follower
        self._registry = registry

    def __aiter__(self) -> LogFollow:
        return self

    async def __anext__(self) -> str:
        f = self._follower
        while not f.lines and not f.dropped:
            if f.closed:
                raise StopAsyncIteration
            f.event.clear()
            await f.event.wait()
        if f.dropped:
            dropped, f.dropped = f.dropped, 0
            return f"{timestamp()} [tako] [-] follower too slow: {dropped} line(s) skipped"
        return f.lines.popleft()

    async def aclose(self) -> None:
        self._registry.discard(self._follower)
        self._follower.close()

    async def __aenter__(self) -> LogFollow:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AppLog:
    """The log of one app (``{app}/{env}``); one instance per app, shared by all writers."""

    def __init__(self, log_dir: Path, *, max_bytes: int = 10 * 1024 * 1024) -> None:
        self.log_dir = log_dir
        self.max_bytes = max_bytes
        self._file: IO[bytes] | None = None
        self._size = 0
        self._followers: set[_Follower] = set()
        self.lost_lines = 0

    @property
    def current(self) -> Path:
        return self.log_dir / "current.log"

    @property
    def previous(self) -> Path:
        return self.log_dir / "previous.log"

    def write(self, line: str, *, stream: Stream = "tako", instance: int | None = None) -> None:
        """Write one line now (used for ``[tako]`` lines and by the edge)."""
        self.write_lines([line], stream=stream, instance=instance)

    def write_lines(
        self, lines: Iterable[str], *, stream: Stream, instance: int | None = None
    ) -> None:
        """Write lines that arrived together (one timestamp), then flush."""
        prefix = f"{timestamp()} [{stream}] [{instance if instance is not None else '-'}] "
        for text in lines:
            if len(text) > MAX_LINE_BYTES:
                text = text[:MAX_LINE_BYTES] + TRUNCATED
            entry = prefix + text
            self._write_safely((entry + "\n").encode("utf-8", errors="replace"))
            for follower in self._followers:
                follower.push(entry)
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self._lost(exc)

    def _write_safely(self, data: bytes) -> None:
        """A full or broken disk loses log lines, never the app: the caller (the pipe
        reader, the supervisor) must keep running, so errors are counted, not raised."""
        try:
            self._append(data)
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        self.lost_lines += 1
        if self.lost_lines == 1 or self.lost_lines % 1000 == 0:
            logger.warning("app log %s: %d line(s) lost: %s", self.current, self.lost_lines, exc)
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None  # reopened (and retried) on the next line

    def _append(self, data: bytes) -> None:
        if self._file is None:
            self._open()
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        assert self._file is not None
        self._file.write(data)
        self._size += len(data)

    def _open(self) -> None:
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_dir.chmod(0o700)
        self._file = _private_append(self.current)
        self._size = self._file.tell()

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        os.replace(self.current, self.previous)
        self._file = _private_append(self.current)
        self._size = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for follower in self._followers:
            follower.close()
        self._followers.clear()

    def history(self, n: int) -> list[str]:
        """The last ``n`` lines of the log (``previous.log`` then ``current.log``)."""
        if n <= 0:
            return []
        if self._file is not None:
            self._file.flush()
        lines = _tail(self.current, n)
        if len(lines) < n:
            lines = _tail(self.previous, n - len(lines)) + lines
        return lines

    def follow(self, *, buffer: int = FOLLOW_BUFFER) -> LogFollow:
        """Every line written from this call on, as an async iterator (``aclose()`` it).

        A slow reader loses the oldest lines and gets one ``[tako]`` line saying how many.
        """
        follower = _Follower(buffer)
        self._followers.add(follower)
        return LogFollow(follower, self._followers)

    @property
    def followers(self) -> int:
        return len(self._followers)

    def __repr__(self) -> str:
        return f"AppLog({str(self.log_dir)!r}, size={self._size}, followers={self.followers})"


def _private_append(path: Path) -> IO[bytes]:
    """Open for appending; a new file is 0600 (the log may hold what apps print)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # a log of an older server was 0644
    return os.fdopen(fd, "ab")


def _tail(path: Path, n: int) -> list[str]:
    """Last ``n`` lines of a file, reading backwards in blocks (never the whole file)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return []
    with handle:
        end = handle.seek(0, os.SEEK_END)
        data = b""
        pos = end
        while pos > 0 and data.count(b"\n") <= n:
            step = min(_BLOCK, pos)
            pos -= step
            handle.seek(pos)
            data = handle.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:]


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split an iterable of byte chunks into lines (helper for tests and tools)."""
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.flush()
