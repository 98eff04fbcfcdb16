"""The dev edge's listening ports: 443/80 when this process may bind them, else fixed high
ports, and who holds a port that is taken.

Rules:

- HTTPS tries 443, then :data:`HTTPS_FALLBACK` (47831); HTTP tries 80, then
  :data:`HTTP_FALLBACK` (47830), then any free port (plain HTTP is a convenience: it never
  stops the edge). A port the developer asked for (``TAKO_DEV_HTTPS_PORT`` /
  ``TAKO_DEV_HTTP_PORT``, passed on the command line) is the only candidate;
- a port below 1024 this process may not bind (``EACCES``) moves on quietly; a port in
  use moves on with a note naming the holder, and when it was the last candidate the
  start fails with :class:`PortInUse`, which names the process when it can;
- sockets are bound WITHOUT ``SO_REUSEPORT`` (the server's edge sets it; here a second
  process on the same port must fail, not share it) and handed to the edge as inherited
  listeners;
- the holder of a port: the ``LISTEN`` rows of ``/proc/net/tcp{,6}`` give the socket
  inode, ``/proc/*/fd`` the process (only processes this user may inspect); ``lsof``
  where there is no ``/proc``. :func:`listening_inodes` is the pure part.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tako_common.errors import TakoError

HTTPS_DEFAULTS = (443, 47831)
HTTP_DEFAULTS = (80, 47830, 0)
HTTPS_FALLBACK = HTTPS_DEFAULTS[1]
HTTP_FALLBACK = HTTP_DEFAULTS[1]
BACKLOG = 1024
_LISTEN = "0A"


class PortInUse(TakoError):
    """Every candidate port is taken; ``owner`` says by what, when that is known."""

    code = "port_in_use"

    def __init__(self, port: int, owner: str | None, *, variable: str) -> None:
        held = f"by {owner}" if owner else "by another process"
        super().__init__(
            f"port {port} is in use {held}: the dev edge cannot listen on 127.0.0.1:{port}",
            hint=f"stop that process, or pick another port with {variable}=<port>",
        )
        self.port = port
        self.owner = owner


@dataclass
class Bound:
    """A listening socket and what happened on the way to it."""

    sock: socket.socket
    notes: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


def candidates(requested: int | None, defaults: tuple[int, ...]) -> tuple[int, ...]:
    """The ports to try in order: the one asked for, else the defaults."""
    return (requested,) if requested is not None else defaults


def bind_first(host: str, ports: tuple[int, ...], *, variable: str) -> Bound:
    """Listen on the first port of ``ports`` this process may bind (module rules)."""
    notes: list[str] = []
    for index, port in enumerate(ports):
        last = index == len(ports) - 1
        try:
            return Bound(_listen(host, port), notes)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                owner = port_owner(port)
                if last:
                    raise PortInUse(port, owner, variable=variable) from exc
                notes.append(f"port {port} is in use by {owner or 'another process'}")
            elif exc.errno in (errno.EACCES, errno.EPERM):
                if last:
                    raise TakoError(
                        f"cannot listen on {host}:{port}: ports below 1024 need privileges",
                        hint=f"unset {variable}, or pick a port above 1023",
                    ) from exc
            else:
                raise TakoError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    raise TakoError("no port to listen on")  # candidates() never gives an empty tuple


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


# --------------------------------------------------------------------------- port owner


def listening_inodes(table: str, port: int) -> set[int]:
    """Socket inodes of the ``LISTEN`` rows for ``port`` in a ``/proc/net/tcp`` table."""
    found: set[int] = set()
    for row in table.splitlines()[1:]:
        cols = row.split()
        if len(cols) < 10 or cols[3] != _LISTEN:
            continue
        _, _, hex_port = cols[1].rpartition(":")
        try:
            if int(hex_port, 16) == port:
                found.add(int(cols[9]))
        except ValueError:
            continue
    return found


def port_owner(port: int, proc: Path = Path("/proc")) -> str | None:
    """``"nginx (pid 812)"`` for the process listening on ``port``, or None if unknown."""
    if (proc / "net" / "tcp").exists():
        return _proc_owner(port, proc)
    return _lsof_owner(port)


def _proc_owner(port: int, proc: Path) -> str | None:
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            inodes |= listening_inodes((proc / "net" / name).read_text(), port)
        except OSError:
            continue
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid_dir in proc.iterdir():
        if pid_dir.name.isdigit() and _holds(pid_dir, wanted):
            return _describe(pid_dir)
    return None


def _holds(pid_dir: Path, wanted: set[str]) -> bool:
    """Whether the process has one of the ``wanted`` sockets open (fds it may not read,
    or that close while we look, are skipped)."""
    try:
        fds = list((pid_dir / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in wanted:
                return True
        except OSError:
            continue
    return False


def _describe(pid_dir: Path) -> str:
    try:
        comm = (pid_dir / "comm").read_text().strip()
    except OSError:
        comm = "?"
    return f"{comm} (pid {pid_dir.name})"


def _lsof_owner(port: int) -> str | None:
    lsof = shutil.which("lsof")
    if lsof is None:
        return None
    try:
        done = subprocess.run(
            [lsof, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    pid = command = None
    for line in done.stdout.splitlines():
        if line.startswith("p") and pid is None:
            pid = line[1:]
        elif line.startswith("c") and command is None:
            command = line[1:]
    return f"{command or '?'} (pid {pid})" if pid else None
