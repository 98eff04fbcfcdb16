"""The client side of the dev edge: start it when none runs, open a session, ask it things.

Rules:

- the dev edge is reached at ``$TAKO_HOME/dev/edge.sock``; when nothing answers there,
  one ``tako dev`` starts it (``python -m tako_server.devedge``, detached in its own
  session so Ctrl-C in this terminal never reaches it, stderr to ``dev/edge.log``) while
  holding ``dev/edge.lock``, so two ``tako dev`` started at once make one edge; the
  edge's first stdout line says it serves, or why not (a taken port, named);
- a registration the edge refuses because it is shutting down (its last app just left)
  is retried with a new edge, a bounded number of times;
- ``list`` and ``stop`` never start an edge: with none running there is no app;
- the session's connection carries ``state`` lines out and ``DevEvent`` lines in; the
  ``leave`` reply says how many apps are left, so the ``tako dev`` that started the edge
  waits for it to exit when it was the last one (no orphan process).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from tako_common.errors import ProtocolError, TakoError
from tako_common.protocol.dev import (
    DevEdgeStarted,
    DevEvent,
    DevLeave,
    DevLeft,
    DevMessage,
    DevRegister,
    DevRegistered,
    DevState,
    DevStateName,
)
from tako_common.protocol.framing import MAX_FRAME_BYTES, encode_frame, loads_strict

from .settings import DevSettings

EDGE_MODULE = "tako_server.devedge"
START_TIMEOUT = 20.0
LOCK_TIMEOUT = 30.0
REGISTER_ATTEMPTS = 5
REPLY_TIMEOUT = 30.0


class EdgeNotRunning(TakoError):
    """No dev edge answers (so no app runs under tako dev)."""

    code = "dev_edge_not_running"


def _raise_envelope(envelope: dict[str, Any]) -> None:
    if envelope.get("status") != "ok":
        raise TakoError(
            str(envelope.get("message") or "the dev edge refused the request"),
            hint=envelope.get("hint"),
            code=str(envelope.get("code") or "error"),
        )


def _parse_line(line: bytes) -> dict[str, Any]:
    try:
        value = loads_strict(line)
    except ProtocolError as exc:
        raise TakoError(f"the dev edge sent an invalid line: {exc.message}") from exc
    if not isinstance(value, dict):
        raise TakoError("the dev edge sent a line that is not a JSON object")
    return value


# --------------------------------------------------------------------------- starting


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise TakoError(
                    f"another tako dev holds {path} for more than {LOCK_TIMEOUT:.0f}s",
                    hint="if no tako dev is starting, remove that file",
                ) from None
            time.sleep(0.05)


def ensure_edge(settings: DevSettings) -> tuple[subprocess.Popen[bytes], DevEdgeStarted] | None:
    """A dev edge that answers: None when one already did, else the one started here."""
    settings.check_socket_path()
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(settings.state_dir, 0o700)
    if _answers(settings.socket_path):
        return None
    fd = _lock(settings.lock_path)
    try:
        if _answers(settings.socket_path):
            return None
        return _start(settings)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _start(settings: DevSettings) -> tuple[subprocess.Popen[bytes], DevEdgeStarted]:
    argv = [sys.executable, "-m", EDGE_MODULE, "--state-dir", str(settings.state_dir)]
    if settings.https_port is not None:
        argv += ["--https-port", str(settings.https_port)]
    if settings.http_port is not None:
        argv += ["--http-port", str(settings.http_port)]
    with settings.log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            start_new_session=True, close_fds=True, cwd="/",
        )
    assert proc.stdout is not None
    try:
        line = _first_line(proc.stdout, START_TIMEOUT)
    finally:
        proc.stdout.close()
    if not line:
        code = proc.poll()
        if code is None:
            proc.kill()
            proc.wait()
        raise TakoError(
            f"the dev edge did not start (exit code {proc.returncode}): {_log_tail(settings)}",
            hint=f"see {settings.log_path}",
        )
    envelope = _parse_line(line)
    if envelope.get("status") != "ok":
        proc.wait(timeout=10)
    _raise_envelope(envelope)
    return proc, DevEdgeStarted.model_validate(envelope.get("data"))


def _first_line(stream: Any, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        ready, _, _ = select.select([stream], [], [], left)
        if not ready:
            return b""
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\n", 1)[0]


def _log_tail(settings: DevSettings) -> str:
    try:
        lines = settings.log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Reap the edge this ``tako dev`` started once it exits (True) within ``timeout``."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


# --------------------------------------------------------------------------- talking


async def _connect(settings: DevSettings) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(
            str(settings.socket_path), limit=MAX_FRAME_BYTES
        )
    except OSError as exc:
        raise EdgeNotRunning("no dev edge runs (no app runs under tako dev)") from exc


async def _read_envelope(reader: asyncio.StreamReader) -> dict[str, Any]:
    try:
        async with asyncio.timeout(REPLY_TIMEOUT):
            while True:
                line = await reader.readline()
                if not line:
                    raise TakoError("the dev edge closed the connection without an answer")
                value = _parse_line(line)
                if "status" in value:
                    return value
    except TimeoutError:
        raise TakoError(f"the dev edge did not answer within {REPLY_TIMEOUT:.0f}s") from None


async def ask(settings: DevSettings, request: DevMessage) -> dict[str, Any]:
    """One request, one reply (``list``, ``stop``); the reply's ``data``."""
    reader, writer = await _connect(settings)
    try:
        writer.write(encode_frame(request))
        await writer.drain()
        envelope = await _read_envelope(reader)
    finally:
        writer.close()
    _raise_envelope(envelope)
    data = envelope.get("data")
    return data if isinstance(data, dict) else {}


class EdgeSession:
    """One app's session with the dev edge (see the module rules)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        registered: DevRegistered,
        started: subprocess.Popen[bytes] | None,
        notes: list[str],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.registered = registered
        self.started = started
        self.notes = notes

    def __repr__(self) -> str:
        return f"EdgeSession(edge_pid={self.registered.edge_pid}, started={bool(self.started)})"

    @classmethod
    async def open(cls, settings: DevSettings, request: DevRegister) -> EdgeSession:
        started: subprocess.Popen[bytes] | None = None
        notes: list[str] = []
        for attempt in range(REGISTER_ATTEMPTS):
            spawned = await asyncio.to_thread(ensure_edge, settings)
            if spawned is not None:
                started, notes = spawned[0], list(spawned[1].notes)
            try:
                reader, writer = await _connect(settings)
            except EdgeNotRunning:
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            writer.write(encode_frame(request))
            await writer.drain()
            try:
                envelope = await _read_envelope(reader)
            except (TakoError, ConnectionError):
                writer.close()
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if envelope.get("code") == "exiting":
                writer.close()
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            _raise_envelope(envelope)
            registered = DevRegistered.model_validate(envelope.get("data"))
            return cls(reader, writer, registered, started, notes)
        raise TakoError(
            f"could not reach a dev edge after {REGISTER_ATTEMPTS} attempts",
            hint=f"see {settings.log_path}",
        )

    def send_state(self, state: DevStateName, port: int | None, message: str = "") -> None:
        if not self.writer.is_closing():
            request = DevState(state=state, port=port if state == "up" else None,
                               message=message[:1024])
            self.writer.write(encode_frame(request))

    async def next_event(self) -> DevEvent | None:
        """The edge's next event; None when the connection ended."""
        while True:
            try:
                line = await self.reader.readline()
            except (ConnectionError, ValueError):
                return None
            if not line:
                return None
            value = _parse_line(line)
            if "event" in value:
                try:
                    return DevEvent.model_validate(value)
                except PydanticValidationError:
                    continue

    async def leave(self) -> int | None:
        """End the session; how many apps the edge still serves (None: no answer)."""
        if self.writer.is_closing():
            return None
        try:
            self.writer.write(encode_frame(DevLeave()))
            await self.writer.drain()
            async with asyncio.timeout(5.0):
                while line := await self.reader.readline():
                    value = _parse_line(line)
                    if value.get("status") == "ok":
                        return DevLeft.model_validate(value.get("data")).remaining
        except (OSError, TimeoutError, TakoError, PydanticValidationError):
            return None
        finally:
            self.writer.close()
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

