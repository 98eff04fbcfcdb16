"""Open one server's SSH connection and control channel for a command, and run a command
on every server of an environment in parallel.

Rules: one SSH connection per server per command; ``hello`` (protocol check) before any
other request; connections are closed on every path; results are collected per server by
:func:`tako_client.fanout.fan_out`, so one failing host never stops the others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from tako_client.fanout import HostResult, fan_out
from tako_client.global_config import ServerEntry
from tako_client.remote import RemoteServer
from tako_client.ssh import Connection, SshClient, SshTarget

T = TypeVar("T")


class Session:
    """A connected server: its :class:`RemoteServer` (typed requests) plus SFTP upload."""

    def __init__(self, entry: ServerEntry, connection: Connection, remote: RemoteServer) -> None:
        self.entry = entry
        self.connection = connection
        self.remote = remote

    def __repr__(self) -> str:
        return f"Session({self.entry.name})"

    async def upload(
        self, local: Path, remote: str, progress: Callable[[int, int], None] | None = None
    ) -> None:
        await self.connection.upload(local, remote, progress)


def target_of(entry: ServerEntry) -> SshTarget:
    """Where to reach an inventory entry over SSH (its name labels messages)."""
    return SshTarget(entry.host, entry.port, label=entry.name)


@asynccontextmanager
async def open_session(client: SshClient, entry: ServerEntry) -> AsyncIterator[Session]:
    connection = await client.connect(target_of(entry))
    async with connection:
        async with RemoteServer(connection) as remote:
            await remote.hello()
            yield Session(entry, connection, remote)


async def on_servers(
    client: SshClient,
    servers: Sequence[ServerEntry],
    operation: Callable[[Session], Awaitable[T]],
) -> list[HostResult[T]]:
    """Connect to every server in parallel and run ``operation`` on each session."""

    async def one(entry: ServerEntry) -> T:
        async with open_session(client, entry) as session:
            return await operation(session)

    return await fan_out(servers, lambda e: e.name, one)
