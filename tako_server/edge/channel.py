"""The main <-> worker channel: one JSON object per line over a Unix socketpair.

Rules: messages are small dicts with an ``op`` field (see :mod:`.workers` for the list);
a request that needs an answer carries an ``id`` and is answered by an ``op: "reply"``
with the same ``id``. Snapshots can be large, so the line limit is generous. A closed
channel reads as ``None`` (the other side is gone).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

LINE_LIMIT = 64 * 1024 * 1024


class Channel:
    """A JSON-lines message stream over a connected Unix socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    def __repr__(self) -> str:
        return f"Channel(closed={self._writer.is_closing()})"

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> None:
        """Queue ``message`` (never blocks; silently dropped once the channel is closed)."""
        if self._writer.is_closing():
            return
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def recv(self) -> dict[str, Any] | None:
        """The next message, or None when the other side closed the channel."""
        try:
            line = await self._reader.readline()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            return None
        if not line:
            return None
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"channel message is not an object: {line[:80]!r}")
        return message

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError:
            pass

    def close(self) -> None:
        self._writer.close()
