"""The main <-> worker channel: typed messages (:mod:`.messages`), one per line, over a
Unix socketpair.

Rules: only :class:`~.messages.Message` values go in and come out; :func:`.messages.encode`
and :func:`.messages.decode` are the one codec. A line that does not decode (unknown op,
malformed field) is refused: logged as an error naming its op, then skipped; the channel
stays open. Snapshots can be large, so the line limit is generous. A closed channel
reads as ``None`` (the other side is gone); sending on it is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from .messages import Message, MessageError, decode, encode

LINE_LIMIT = 64 * 1024 * 1024

log = logging.getLogger(__name__)


class Channel:
    """A typed message stream over a connected Unix socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.refused = 0

    def __repr__(self) -> str:
        return f"Channel(closed={self._writer.is_closing()}, refused={self.refused})"

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer)

    def send(self, message: Message) -> None:
        """Queue ``message`` (never blocks; dropped once the channel is closed)."""
        self.send_encoded(encode(message))

    def send_encoded(self, line: bytes) -> None:
        """Queue a line made by :func:`.messages.encode` (one encoding, many channels)."""
        if not self._writer.is_closing():
            self._writer.write(line)

    async def recv(self) -> Message | None:
        """The next valid message, or None when the other side closed the channel."""
        while True:
            try:
                line = await self._reader.readline()
            except (ConnectionError, asyncio.LimitOverrunError, ValueError):
                return None
            if not line:
                return None
            try:
                return decode(line)
            except MessageError as exc:
                self.refused += 1
                log.error("edge channel: %s", exc)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError:
            pass

    def close(self) -> None:
        self._writer.close()
