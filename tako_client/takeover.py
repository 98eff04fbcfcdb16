"""A graceful restart of tako-server seen from the CLI: start a takeover, then follow it
through ``server_info`` until a new process serves and the old one has exited.

Rules:

- the server is asked through :class:`~tako_client.remote.RemoteServer` only, on a fresh
  control stream each time (``tako.sock`` moves to the new process); nothing reads the
  server's files or ``/proc`` over SSH. The one shell command is ``kill -HUP <pid>``,
  the signal that starts a takeover (the server runs as the SSH user);
- a process is named by ``pid`` + ``started_at`` (:func:`is_same_process`): "a new process
  serves" means ``server_info`` answers with another name;
- no signal is sent when a takeover of that process already runs or happened (an
  installer that reloads the service itself), see :func:`needs_signal`;
- a failed takeover is reported at once with the server's reason: the signalled process
  answers with a takeover status that changed since before the signal and ended
  ``failed`` or ``rolled_back`` (:func:`takeover_failure`);
- the old process has exited when the new one, which took over from it, says its
  predecessor no longer runs (a zombie counts as exited); after ``OLD_EXIT_TIMEOUT`` the
  caller only warns.

The decisions are the pure functions below; :func:`reload_server` only polls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tako_client.remote import RemoteServer
from tako_client.ssh import Connection
from tako_common.errors import TakoError
from tako_common.protocol import ServerInfoData

TAKEOVER_TIMEOUT = 120.0  # the server gives its successor 60 s; restores wait up to 30 s
OLD_EXIT_TIMEOUT = 90.0  # the old process drains (30 s) and stops its instances
ANSWER_TIMEOUT = 10.0  # how long the first look may meet a socket being swapped
POLL_INTERVAL = 0.5
JOURNAL_HINT = "see `journalctl -u tako-server` on the server"


@dataclass(frozen=True)
class Restarted:
    old_pid: int
    new_pid: int
    version: str
    old_gone: bool


# --------------------------------------------------------------------------- decisions


def is_same_process(a: ServerInfoData, b: ServerInfoData) -> bool:
    """Did ``a`` and ``b`` come from one process? (a pid may be reused, its start not)"""
    return (a.pid, a.started_at) == (b.pid, b.started_at)


def needs_signal(signalled: ServerInfoData, now: ServerInfoData) -> bool:
    """Must ``signalled`` still be sent SIGHUP? Not when another process answers ``now``
    (a takeover already happened) or one of its takeovers runs or succeeded."""
    return is_same_process(signalled, now) and now.takeover.state not in (
        "in_progress",
        "succeeded",
    )


def takeover_failure(before: ServerInfoData, now: ServerInfoData) -> str | None:
    """The reason of a takeover of ``before``'s process that failed since ``before``."""
    if not is_same_process(before, now) or now.takeover == before.takeover:
        return None
    if now.takeover.state in ("failed", "rolled_back"):
        return now.takeover.error or "unknown reason"
    return None


def is_old_gone(old_pid: int, now: ServerInfoData) -> bool:
    """Has ``old_pid`` exited, as far as the serving process ``now`` knows? A process that
    did not take over from it (a fresh start) means it is not draining any more."""
    return now.took_over_from != old_pid or not now.predecessor_running


# --------------------------------------------------------------------------- polling


async def _info(conn: Connection) -> ServerInfoData:
    """``server_info`` on a fresh control stream (``tako.sock`` may point elsewhere now)."""
    async with RemoteServer(conn) as server:
        return await server.server_info()


async def _answer(conn: Connection, timeout: float) -> ServerInfoData | None:
    """``server_info`` from whichever process serves, retried while the socket moves."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await _info(conn)
        except TakoError:
            if loop.time() > deadline:
                return None
        await asyncio.sleep(POLL_INTERVAL)


async def reload_server(conn: Connection, info: ServerInfoData) -> Restarted:
    """SIGHUP the server (unless a takeover of it already started, e.g. by an installer
    that reloads the service) and wait for its successor and the old pid to go away."""
    before = await _answer(conn, ANSWER_TIMEOUT) or info
    if needs_signal(info, before):
        sent = await conn.run(f"kill -HUP {info.pid}")
        if sent.exit != 0:
            raise TakoError(
                f"cannot signal tako-server (pid {info.pid}) on {conn.target.display}:"
                f" {sent.stderr.strip()}",
                hint="tako-server must run as the SSH user (tako)",
            )
    new = await _wait_new_process(conn, info, before)
    async with RemoteServer(conn) as server:
        hello = await server.hello()
    loop = asyncio.get_running_loop()
    gone = await _wait_gone(conn, info.pid, loop.time() + OLD_EXIT_TIMEOUT)
    return Restarted(info.pid, new.pid, hello.server_version, gone)


async def _wait_new_process(
    conn: Connection, info: ServerInfoData, before: ServerInfoData
) -> ServerInfoData:
    """Poll until another process than ``info``'s answers; a failed takeover raises."""
    if not is_same_process(info, before):
        return before  # the takeover happened before we looked
    where = conn.target.display
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TAKEOVER_TIMEOUT
    while True:
        if loop.time() > deadline:
            raise TakoError(
                f"tako-server on {where} did not hand over within {TAKEOVER_TIMEOUT:.0f}s"
                f" (pid {info.pid} still serves)",
                hint=JOURNAL_HINT,
            )
        await asyncio.sleep(POLL_INTERVAL)
        try:
            current = await _info(conn)
        except TakoError:
            continue  # the socket link is being swapped
        reason = takeover_failure(before, current)
        if reason is not None:
            raise TakoError(
                f"tako-server on {where} could not restart: {reason}; pid {info.pid} keeps serving",
                hint=JOURNAL_HINT,
            )
        if not is_same_process(info, current):
            return current


async def _wait_gone(conn: Connection, pid: int, deadline: float) -> bool:
    """Wait until ``pid`` exited, as the process serving now reports it."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        try:
            if is_old_gone(pid, await _info(conn)):
                return True
        except TakoError:
            pass  # not answering for a moment: ask again
        await asyncio.sleep(POLL_INTERVAL)
    return False
