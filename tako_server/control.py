"""The management socket: JSON lines over a Unix socket, many requests per connection.

Rules:

- The server binds ``tako-{pid}.sock`` next to the configured socket path (directory
  created 0700, socket chmod 0600), then points ``tako.sock`` at it with an atomic
  symlink swap (symlink to a temporary name + rename), so a restarting server never
  leaves clients without a socket and an old process never steals it back.
- Who points the link when is not decided here: :meth:`ControlServer.start` points it
  at the new socket, and after a failed takeover :mod:`tako_server.takeover` points it
  back (:meth:`ControlServer.point_link`), whatever the failed successor did with it.
- Frames are split by :class:`~tako_common.protocol.FrameDecoder` and parsed by
  :func:`~tako_common.protocol.parse_request`; EVERY line gets exactly one answer: a bad,
  empty, too deeply nested or oversized line gets an error response and the connection
  stays usable (nothing is skipped silently, no line drops the connection).
- Requests on one connection are answered in order; connections are independent.
- A streamed answer (``logs`` with ``follow``) runs until the client closes.
- A :class:`Duplex` answer (a session: ``exec``, ``run_release``) sends its first
  envelope, then owns the connection both ways: it gets every later line the client
  sends (those already read included) and a sender, until it returns; its ``close``
  runs on every path. The connection ends with it.
- When a connection closes, ``on_close(connection_id)`` runs (the daemon releases the
  deploy locks that connection took).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tako_common.errors import ProtocolError, TakoError
from tako_common.protocol import (
    FrameDecoder,
    Request,
    encode_frame,
    error,
    error_from,
    parse_request,
)

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
Dispatch = Callable[[Request, int], Awaitable[Any]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Incoming = AsyncIterator[bytes | ProtocolError]


@dataclass
class Duplex:
    """A two-way answer: ``first`` is sent, then ``run(incoming, send)`` owns the connection;
    ``close`` runs when it ends, whatever happened (the dispatcher's guard ends there)."""

    first: dict[str, Any]
    run: Callable[[Incoming, Send], Awaitable[None]]
    close: Callable[[], None]


class ControlServer:
    def __init__(
        self,
        socket_path: Path,
        dispatch: Dispatch,
        *,
        on_close: Callable[[int], object] = lambda _conn: None,
    ) -> None:
        self.link_path = socket_path
        self.pid_path = socket_path.parent / f"tako-{os.getpid()}.sock"
        self._dispatch = dispatch
        self._on_close = on_close
        self._server: asyncio.AbstractServer | None = None
        self._ids = itertools.count(1)
        self._connections: dict[int, asyncio.Task[Any]] = {}

    def __repr__(self) -> str:
        return f"ControlServer({str(self.pid_path)!r}, connections={len(self._connections)})"

    async def start(self) -> None:
        directory = self.link_path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.pid_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.pid_path))
        os.chmod(self.pid_path, 0o600)
        self.point_link()

    @property
    def is_serving(self) -> bool:
        return self._server is not None

    def point_link(self) -> None:
        """Atomically point ``tako.sock`` at our pid socket (symlink to a temp name + rename)."""
        tmp = self.link_path.parent / f".{self.link_path.name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(self.pid_path.name, tmp)
        os.replace(tmp, self.link_path)
        log.info("control socket %s -> %s", self.link_path, self.pid_path)

    def owns_link(self) -> bool:
        try:
            return os.readlink(self.link_path) == self.pid_path.name
        except OSError:
            return False

    async def stop(self) -> None:
        """Stop accepting, close open connections, remove our socket (and our link)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections.values()):
            task.cancel()
        await asyncio.gather(*self._connections.values(), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self.owns_link():
            with contextlib.suppress(OSError):
                self.link_path.unlink()
        self.pid_path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = next(self._ids)
        task = asyncio.current_task()
        assert task is not None
        self._connections[conn] = task
        try:
            await Connection(conn, reader, writer, self._dispatch).run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.pop(conn, None)
            try:
                self._on_close(conn)
            except Exception:
                log.exception("on_close of connection %d failed", conn)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class Connection:
    """One client: read frames, answer each in order."""

    def __init__(
        self,
        conn_id: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dispatch: Dispatch,
    ) -> None:
        self.id = conn_id
        self._reader = reader
        self._writer = writer
        self._dispatch = dispatch
        self._decoder = FrameDecoder()
        self._pending: deque[bytes | ProtocolError] = deque()

    def __repr__(self) -> str:
        return f"Connection(id={self.id}, pending={len(self._pending)}, {self._decoder!r})"

    async def run(self) -> None:
        while True:
            data = await self._reader.read(READ_CHUNK)
            if not data:
                return
            self._pending.extend(self._decoder.feed(data))
            while self._pending:
                frame = self._pending.popleft()
                if isinstance(frame, ProtocolError):
                    await self._send(error_from(frame))
                    continue
                if not await self._answer(frame):
                    return

    async def _answer(self, frame: bytes) -> bool:
        """Answer one frame; False when the connection must end (a stream finished)."""
        try:
            request = parse_request(frame)
        except ProtocolError as exc:
            await self._send(error_from(exc))
            return True
        except Exception as exc:  # a parser bug must not drop the connection
            log.exception("request line could not be parsed")
            await self._send(error(f"unparsable request: {type(exc).__name__}", code="bad_request"))
            return True
        try:
            reply = await self._dispatch(request, self.id)
        except TakoError as exc:
            reply = error_from(exc)
        except Exception as exc:
            log.exception("command %s failed", request.command)
            reply = error(
                f"internal error in {request.command}: {type(exc).__name__}", code="internal"
            )
        if isinstance(reply, dict):
            await self._send(reply)
            return True
        if isinstance(reply, Duplex):
            await self._duplex(reply)
        else:
            await self._stream(reply)
        return False

    async def _duplex(self, duplex: Duplex) -> None:
        """Run a session; a failure ends the connection (logged, never raised further)."""
        try:
            await self._send(duplex.first)
            await duplex.run(self._incoming(), self._send)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("session on connection %d failed", self.id)
        finally:
            duplex.close()

    async def _incoming(self) -> Incoming:
        """The client's lines after the session's request, until it closes the connection."""
        while True:
            while self._pending:
                yield self._pending.popleft()
            data = await self._reader.read(READ_CHUNK)
            if not data:
                return
            self._pending.extend(self._decoder.feed(data))

    async def _stream(self, stream: Any) -> None:
        """Send a stream until it ends or the client closes (detected by EOF on read)."""
        await self._send(stream.first)
        closed = asyncio.ensure_future(self._reader.read(READ_CHUNK))
        try:
            iterator = stream.rest.__aiter__()
            while True:
                item = asyncio.ensure_future(iterator.__anext__())
                done, _ = await asyncio.wait({item, closed}, return_when=asyncio.FIRST_COMPLETED)
                if item not in done:
                    item.cancel()
                    with contextlib.suppress(BaseException):
                        await item
                    return
                try:
                    await self._send(item.result())
                except StopAsyncIteration:
                    return
        finally:
            closed.cancel()
            with contextlib.suppress(BaseException):
                await closed
            with contextlib.suppress(BaseException):
                await stream.rest.aclose()

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            data = encode_frame(message)
        except ProtocolError as exc:
            data = encode_frame(error_from(exc))
        self._writer.write(data)
        await self._writer.drain()
