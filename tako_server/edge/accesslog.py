"""The access log: one JSON line per request, written off the request path, rotated by size.

Rules:

- A finished request leaves a row (a tuple) on the event loop (:meth:`AccessLog.add`).
  Every :data:`BATCH` rows, and at the runtime's sweep (every ``tick``), the batch is
  formatted in one loop into one block of JSON lines, still on the loop
  (:meth:`AccessLog.hand_off`, :func:`format_rows`: ~1 us a row, less than each request
  formatting its own line), and the block goes to the log's writer thread, which appends
  it with one ``write`` (``O_APPEND``: every edge process appends whole lines to the same
  file) and does nothing else: a CPU-bound thread beside the event loop can make the loop
  wait for the GIL after a system call (up to the 5 ms switch interval); a ``write``
  releases the GIL, and a stalled disk holds the thread, never the loop. What the log
  costs per request is measured in bench/README.md. Sampling (``sample`` < 1) keeps that
  fraction of requests, but every 5xx and every request that waited for a cold start is
  kept.
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
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)
MAX_BATCH = 100_000  # lines kept between flushes at most (a stalled disk cannot eat memory)
BATCH = 256  # lines handed to the writer at once
_FMT = (
    b'{"time":"%s.%03dZ","host":"%s","method":"%s","path":%s,"status":%d,"bytes":%d,'
    b'"duration_ms":%.2f,"upstream_ms":%s,"cold_start_ms":%s,"app":"%s","env":"%s",'
    b'"instance":%s,"request_id":"%s","client":"%s"}\n'
)
# the common line (an app answered, no cold start): no field is null, no nested formatting
_PROXIED = (
    b'{"time":"%s.%03dZ","host":"%s","method":"%s","path":%s,"status":%d,"bytes":%d,'
    b'"duration_ms":%.2f,"upstream_ms":%.2f,"cold_start_ms":null,"app":"%s","env":"%s",'
    b'"instance":%d,"request_id":"%s","client":"%s"}\n'
)
Row = tuple[float, str, bytes, str, bytes, int, int, float, float, float, str, int, bytes, bytes]

_SECONDS: dict[int, bytes] = {}  # formatted UTC second, the last few
_KEYS: dict[str, tuple[bytes, bytes]] = {}  # app key -> (app, env), as bytes


def _second(second: int) -> bytes:
    if len(_SECONDS) > 8:
        _SECONDS.clear()
    text = _SECONDS[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
    return text


def _names(key: str) -> tuple[bytes, bytes]:
    if len(_KEYS) > 1024:
        _KEYS.clear()
    app, _, env = key.partition("/")
    names = _KEYS[key] = (app.encode(), env.encode())
    return names


def format_row(row: Row, query: bool) -> bytes:
    """One JSON line (UTF-8) for a row (pure)."""
    return format_rows([row], query)


def format_rows(rows: list[Row], query: bool) -> bytes:
    """The JSON lines (UTF-8) of a batch of rows, joined (pure; :meth:`AccessLog.hand_off`
    calls it every :data:`BATCH` requests: one tight loop formats a batch for less than
    each request formatting its own line). host (checked by the Host rule), method (an
    HTTP token), app and env (names), request id (checked or made by the edge) and
    client address never need escaping: they go in as they are; the path is escaped
    when it needs to be."""
    lines: list[bytes] = []
    add = lines.append
    seconds, keys, proxied, fmt = _SECONDS, _KEYS, _PROXIED, _FMT
    for when, host, method, path, qs, status, sent, dur, up, cold, key, inst, rid, ip in rows:
        second = int(when)
        stamp = seconds.get(second) or _second(second)
        app, env = keys.get(key) or _names(key)
        if query and qs:
            path += qs.decode("latin-1")
        if path.isprintable() and '"' not in path and "\\" not in path:
            quoted = b'"%s"' % path.encode()
        else:
            quoted = json.dumps(path, ensure_ascii=False).encode()
        ms = int(when * 1000) % 1000
        if up >= 0 and cold < 0 and inst >= 0:
            add(proxied % (
                stamp, ms, host.encode(), method, quoted, status, sent, dur * 1000, up * 1000,
                app, env, inst, rid, ip,
            ))  # fmt: skip
        else:
            add(fmt % (
                stamp, ms, host.encode(), method, quoted, status, sent, dur * 1000,
                b"null" if up < 0 else b"%.2f" % (up * 1000),
                b"null" if cold < 0 else b"%.2f" % (cold * 1000),
                app, env, b"null" if inst < 0 else b"%d" % inst, rid, ip,
            ))  # fmt: skip
    return b"".join(lines)


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
        self.rows: list[Row] = []  # not yet formatted
        self._handed = 0  # lines given to the writer (counted by the loop's thread only)
        self._written = 0  # lines it has done with (counted by the writer only)
        self._fd = -1
        self._ino = 0
        self._warned_at = 0.0
        self._queue: queue.SimpleQueue[tuple[bytes, int] | None] = queue.SimpleQueue()
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

    def hand_off(self) -> None:
        """Format the rows and give the block to the writer thread (writing it would hold
        the event loop while the disk is slow). While the disk stalls, at most
        :data:`MAX_BATCH` lines wait; later ones are dropped."""
        rows, self.rows = self.rows, []
        if not rows or self._handed - self._written >= MAX_BATCH:
            return
        block = format_rows(rows, self.query)
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
            self._writer.start()
        self._handed += len(rows)
        self._queue.put((block, len(rows)))

    def _write_loop(self) -> None:
        while (block := self._queue.get()) is not None:
            self._write(*block)
            self._written += block[1]

    def flush(self) -> None:
        """Write the pending rows now, in this thread (tests, and at close)."""
        rows, self.rows = self.rows, []
        if rows:
            self._write(format_rows(rows, self.query), len(rows))

    def _write(self, data: bytes, count: int) -> None:
        try:
            fd = self._open()
            os.write(fd, data)
        except OSError as exc:
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("access log %s: dropped %d line(s): %s", self.path, count, exc)

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
        """Let the writer finish what it was given (bounded), write the rest, close. A
        writer still stuck in a ``write`` after ``timeout`` (a stalled disk) keeps the
        descriptor, which the process's exit closes: closing it under the writer could
        let its next ``write`` land in whatever file reuses the number."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join(timeout)
            if writer.is_alive():
                log.warning(
                    "access log %s: the writer is stuck (disk stalled?); %d line(s) not written",
                    self.path,
                    self._handed - self._written + len(self.rows),
                )
                self.rows = []
                return
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
