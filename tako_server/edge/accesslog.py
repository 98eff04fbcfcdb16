"""The access log: one JSON line per request, written off the request path, rotated by size.

Rules:

- A finished request leaves a row (a tuple) on the event loop (:meth:`AccessLog.add`);
  every :data:`BATCH` rows, and at the runtime's sweep (every ``tick``), the rows are
  formatted in one go, still on the loop (:meth:`AccessLog.hand_off`: ~0.4 ms for 256
  rows, so the loop is never held long; what the log costs is measured in
  bench/README.md), and the lines go
  to the log's writer thread, which joins them and appends them with one ``write``
  (``O_APPEND``: every edge process appends whole lines to the same file). The thread
  never formats: a CPU-bound thread beside the event loop can make the loop wait for the
  GIL after a system call (up to the 5 ms switch interval). Sampling (``sample`` < 1)
  keeps that fraction of requests, but every 5xx and every request that waited for a cold
  start is kept.
- Fields: ``time`` (UTC, ISO 8601 with milliseconds), ``host``, ``method``, ``path``
  (without the query unless ``query`` is set), ``status`` (``499``: the client went away
  before an answer), ``bytes`` (response body bytes sent), ``duration_ms``,
  ``upstream_ms`` (until the app's response head; ``null`` when the edge answered),
  ``cold_start_ms``, ``app``, ``env``, ``instance``, ``request_id``, ``client``.
- Rotation (:func:`rotate`): the main process renames ``access.log`` to ``access.log.1``
  (and so on, ``keep`` files) when it passes ``max_bytes``; every writer notices the
  rename (the path's inode changed) at its next flush and reopens, so no line is lost.
- A write failure (disk full) drops that batch and is logged once per minute, never
  raised into serving.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import re
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)
MAX_BATCH = 100_000  # lines kept between flushes at most (a stalled disk cannot eat memory)
BATCH = 256  # rows formatted and handed to the writer at once
# host (checked by the Host rule), method (an HTTP token), app and env (names), request id
# (checked or made by the edge) and client address never need escaping: they go in as is
_FMT = (
    '{"time":"%s.%03dZ","host":"%s","method":"%s","path":%s,"status":%d,"bytes":%d,'
    '"duration_ms":%.2f,"upstream_ms":%s,"cold_start_ms":%s,"app":"%s","env":"%s",'
    '"instance":%s,"request_id":"%s","client":"%s"}\n'
)
Row = tuple[float, str, bytes, str, bytes, int, int, float, float, float, str, int, bytes, bytes]


def _ms(value: float) -> str:
    return "null" if value < 0 else f"{value * 1000:.2f}"


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')
_SECONDS: dict[int, str] = {}  # formatted UTC second, the last few


def _str(text: str) -> str:
    """A JSON string: quoted as is in the common case (nothing to escape)."""
    return json.dumps(text, ensure_ascii=False) if _NEEDS_ESCAPE.search(text) else f'"{text}"'


def _second(when: float) -> str:
    second = int(when)
    text = _SECONDS.get(second)
    if text is None:
        if len(_SECONDS) > 8:
            _SECONDS.clear()
        text = _SECONDS[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return text


def format_row(row: Row, query: bool) -> str:
    """One JSON line for a row (pure; :meth:`AccessLog.add` calls it per request)."""
    when, host, method, path, qs, status, sent, dur, up, cold, key, inst, rid, ip = row
    app, _, env = key.partition("/")
    return _FMT % (
        _second(when),
        int(when * 1000) % 1000,
        host,
        method.decode("latin-1"),
        _str(path + qs.decode("latin-1") if query and qs else path),
        status,
        sent,
        dur * 1000,
        "null" if up < 0 else f"{up * 1000:.2f}",
        "null" if cold < 0 else f"{cold * 1000:.2f}",
        app,
        env,
        "null" if inst < 0 else inst,
        rid.decode("latin-1"),
        ip.decode("latin-1"),
    )


class AccessLog:
    """Rows waiting for the next flush, and the file they go to."""

    __slots__ = (
        "path",
        "sample",
        "query",
        "rows",
        "_handed",
        "_written",
        "_fd",
        "_ino",
        "_warned_at",
        "_queue",
        "_writer",
    )

    def __init__(self, path: Path, *, sample: float = 1.0, query: bool = False) -> None:
        self.path = path
        self.sample = sample
        self.query = query
        self.rows: list[Row] = []
        self._handed = 0  # lines given to the writer (counted by the loop's thread only)
        self._written = 0  # lines it has done with (counted by the writer only)
        self._fd = -1
        self._ino = 0
        self._warned_at = 0.0
        self._queue: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"AccessLog({self.path}, sample={self.sample}, rows={len(self.rows)})"

    def add(self, row: Row) -> None:
        """Keep ``row`` for the next batch (subject to sampling, see the module rules)."""
        if self.sample < 1.0 and row[5] < 500 and row[9] < 0 and random.random() >= self.sample:
            return
        rows = self.rows
        rows.append(row)
        if len(rows) >= BATCH:
            self.hand_off()

    def _lines(self) -> list[str]:
        rows, self.rows = self.rows, []
        query = self.query
        return [format_row(row, query) for row in rows]

    def hand_off(self) -> None:
        """Format the rows and give the lines to the writer thread (joining and writing
        them would hold the event loop for longer). While the disk stalls, at most
        :data:`MAX_BATCH` lines wait; later ones are dropped."""
        if not self.rows:
            return
        if self._handed - self._written >= MAX_BATCH:
            self.rows = []
            return
        lines = self._lines()
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
            self._writer.start()
        self._handed += len(lines)
        self._queue.put(lines)

    def _write_loop(self) -> None:
        while (lines := self._queue.get()) is not None:
            self._write(lines)
            self._written += len(lines)

    def flush(self) -> None:
        """Write the pending rows now, in this thread (tests, and at close)."""
        lines = self._lines()
        if lines:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        data = "".join(lines).encode()
        try:
            fd = self._open()
            os.write(fd, data)
        except OSError as exc:
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("access log %s: dropped %d line(s): %s", self.path, len(lines), exc)

    def _open(self) -> int:
        """The descriptor to append to, reopened when the file was rotated or removed."""
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            ino = -1
        if self._fd >= 0 and ino == self._ino:
            return self._fd
        self._close_fd()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._ino = os.fstat(self._fd).st_ino
        return self._fd

    def close(self, timeout: float = 5.0) -> None:
        """Let the writer finish what it was given (bounded), write the rest, close."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join(timeout)
        self.flush()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def rotate(path: Path, max_bytes: int, keep: int) -> bool:
    """Rename ``path`` -> ``path.1`` -> ... (``keep`` old files) once it passes
    ``max_bytes``; True when it rotated."""
    try:
        if path.stat().st_size < max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    if keep > 0:
        path.replace(path.with_name(f"{path.name}.1"))
    else:
        path.unlink()
    return True
