"""Instance output through files the daemon tails, so logs survive the daemon.

An instance's (and a workflow worker's) stdout and stderr are not pipes to tako-server
(a pipe dies with the process that holds its read end, and the app would get
``SIGPIPE``): they are two
append-only files, ``<log_dir>/instances/<id>.out`` and ``.err`` (0600), opened with
``O_APPEND`` before the spawn. The daemon tails them into the app log
(:class:`~tako_server.supervisor.logs.AppLog`) and records how far it read in
``<id>.pos`` (two little-endian u64 offsets, one ``pwrite``). A new daemon (after a
SIGHUP takeover, a restart or a ``kill -9``) resumes from those offsets: nothing is lost.

Rules:

- only complete lines are consumed (the offset always sits after a ``\\n``), so a line
  the app is half-way through writing is read whole by whoever reads next; a run of
  :data:`MAX_LINE_BYTES` without a newline is emitted as one (cut) line;
- lines go to the app log first, then the offset is written: a graceful hand-over
  (:meth:`InstanceOutput.release`) loses and doubles nothing; a ``kill -9`` between
  those two system calls can double the last batch (microseconds; documented);
- consumed bytes are given back to the file system with ``FALLOC_FL_PUNCH_HOLE``
  (the file's size grows, its disk usage does not); where the file system cannot punch
  holes the files grow until the instance exits;
- when the instance exits, the rest (an unterminated last line too) is written and the
  files are removed (:meth:`InstanceOutput.finish`).

Workflow workers (:mod:`tako_server.workflows.workers`) use the same files under
``<log_dir>/workers/<worker id>.*``; their lines carry the ``[group]`` prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import struct
from pathlib import Path

from tako_common.tasks import spawn
from tako_server.supervisor.logs import MAX_LINE_BYTES, AppLog, Stream

POLL_BUSY = 0.02  # seconds between reads while output keeps coming
POLL_IDLE = 0.1  # seconds between reads of a quiet instance
_CHUNK = 256 * 1024
_POS = struct.Struct("<QQ")
_PUNCH_EVERY = 1024 * 1024
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02

_libc_name = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_libc_name, use_errno=True) if _libc_name else None


class InstanceFiles:
    """The paths of one instance's files under ``<log_dir>/instances`` (a worker's:
    ``subdir="workers"``, named by its worker id)."""

    def __init__(
        self, log_dir: Path, instance_id: int, *, subdir: str = "instances", stem: str = ""
    ) -> None:
        self.dir = log_dir / subdir
        self.instance_id = instance_id
        stem = stem or str(instance_id)
        self.record = self.dir / f"{stem}.json"
        self.out = self.dir / f"{stem}.out"
        self.err = self.dir / f"{stem}.err"
        self.pos = self.dir / f"{stem}.pos"

    def create_outputs(self) -> tuple[int, int]:
        """Fresh output files; returns write fds (the caller hands them to the child and
        closes them)."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        fds = (os.open(self.out, flags, 0o600), os.open(self.err, flags, 0o600))
        with contextlib.suppress(FileNotFoundError):
            self.pos.unlink()
        return fds

    def remove(self) -> None:
        for path in (self.record, self.out, self.err, self.pos):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def __repr__(self) -> str:
        return f"InstanceFiles({str(self.dir)!r}, {self.instance_id})"


def split_complete(data: bytes, final: bool) -> tuple[list[bytes], int]:
    """The lines of ``data`` a reader may consume and how many bytes they take (pure).

    Only newline-terminated lines, unless ``final`` (the writer is gone) or a line is
    already longer than :data:`MAX_LINE_BYTES` (emitted cut, the rest follows later)."""
    end = data.rfind(b"\n") + 1
    if final:
        end = len(data)
    elif end == 0 and len(data) >= MAX_LINE_BYTES:
        end = MAX_LINE_BYTES
    if end == 0:
        return [], 0
    body = data[:end]
    lines = body.split(b"\n")
    if body.endswith(b"\n"):
        lines.pop()
    return lines, end


class _Tail:
    """One output file read from ``offset`` on."""

    def __init__(self, path: Path, stream: Stream, offset: int) -> None:
        self.stream = stream
        # O_CREAT: an adopted instance whose file was deleted keeps running (its output
        # is lost, it is not a reason to kill it)
        self.fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.offset = offset
        self.punched = offset

    def read_lines(self, final: bool) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            data = os.pread(self.fd, _CHUNK, self.offset)
            got, used = split_complete(data, final)
            lines += got
            self.offset += used
            if used == 0 or len(data) < _CHUNK:
                return lines

    def punch(self) -> None:
        """Free the disk blocks of what was read (whole 4 KiB blocks only)."""
        upto = self.offset - self.offset % 4096
        if _libc is None or upto - self.punched < _PUNCH_EVERY:
            return
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        _libc.fallocate(self.fd, mode, ctypes.c_long(0), ctypes.c_long(upto))
        self.punched = upto  # unsupported: the file keeps its blocks (no harm)

    def close(self) -> None:
        os.close(self.fd)


class InstanceOutput:
    """Tails one instance's two output files into the app log."""

    def __init__(
        self,
        files: InstanceFiles,
        instance_id: int | None,
        log: AppLog,
        *,
        resume: bool = False,
        prefix: str = "",
    ) -> None:
        self.files = files
        self.instance_id = instance_id  # None: a worker (its lines show ``[-]``)
        self.log = log
        self.prefix = prefix
        out_at, err_at = read_offsets(files.pos) if resume else (0, 0)
        self._pos_fd = os.open(files.pos, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._tails = [_Tail(files.out, "out", out_at), _Tail(files.err, "err", err_at)]
        self._task: asyncio.Task[None] | None = None

    def pump(self, final: bool = False) -> int:
        """Copy what is there to the app log, then record the offsets; lines copied."""
        if self._pos_fd < 0:
            return 0  # closed (the instance exited or was released)
        count = 0
        for tail in self._tails:
            lines = tail.read_lines(final)
            if lines:
                text = [
                    self.prefix + line.decode("utf-8", errors="replace").rstrip("\r")
                    for line in lines
                ]
                self.log.write_lines(text, stream=tail.stream, instance=self.instance_id)
                count += len(lines)
        if count:
            os.pwrite(self._pos_fd, _POS.pack(*(t.offset for t in self._tails)), 0)
            for tail in self._tails:
                tail.punch()
        return count

    def start(self) -> None:
        self._task = spawn(self._follow(), name=f"tako-output-{self.files.record.stem}")

    async def _follow(self) -> None:
        # pump() never awaits: a cancellation (see _halt) lands only in the sleep
        while True:
            await asyncio.sleep(POLL_BUSY if self.pump() else POLL_IDLE)

    async def _halt(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def finish(self) -> None:
        """The instance exited: copy the rest (a last unterminated line too), remove the files."""
        await self._halt()
        self.pump(final=True)
        self._close()
        self.files.remove()

    async def release(self) -> None:
        """Another daemon takes over: copy the complete lines, record the offsets, keep
        the files (the next reader resumes exactly there)."""
        await self._halt()
        self.pump()
        self._close()

    def _close(self) -> None:
        if self._pos_fd < 0:
            return
        for tail in self._tails:
            tail.close()
        os.close(self._pos_fd)
        self._pos_fd = -1

    def __repr__(self) -> str:
        offsets = [t.offset for t in self._tails]
        return f"InstanceOutput({self.instance_id}, offsets={offsets})"


def read_offsets(path: Path) -> tuple[int, int]:
    """The recorded offsets (0, 0 when there is no valid record yet)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, 0
    if len(data) < _POS.size:
        return 0, 0
    out_at, err_at = _POS.unpack(data[: _POS.size])
    return int(out_at), int(err_at)
