"""cgroup v2 limits per app: memory, CPU and processes, and OOM kills reported.

Layout under the daemon's own cgroup ``B`` (from ``/proc/self/cgroup``; under systemd
the unit's cgroup, which needs ``Delegate=yes``): the daemon moves every process of
``B`` into ``B/tako-daemon`` (a cgroup with controllers for its children may hold no process
itself), enables ``memory cpu pids`` for ``B`` and ``B/apps``, and each app gets
``B/apps/{app}-{env}`` with ``memory.max`` (+ ``memory.swap.max = 0``), ``cpu.max`` and
``pids.max`` (:func:`limit_files`). Every instance of the app joins that cgroup before
``exec`` (so the limits are per app, all instances together). Instances stay in it
across daemon restarts; the next daemon finds them there.

An instance killed by SIGKILL while the app's ``memory.events`` ``oom_kill`` count went
up was killed by the OOM killer: the supervisor says so in the exit reason.

Reduced mode: without a writable cgroup v2 hierarchy that offers the three controllers
(cgroup v1 or hybrid hosts, containers without delegation, a non-root server),
:meth:`CgroupTree.detect` returns None, the daemon logs it once, and apps run without
these limits (``docs/server.md``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tako_server")

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000
DAEMON_CGROUP = "tako-daemon"


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpu_percent: int  # of one CPU: 200 = two CPUs' worth
    pids_max: int


def limit_files(limits: Limits) -> dict[str, str]:
    """The cgroup files of an app and their contents (pure)."""
    quota = limits.cpu_percent * CPU_PERIOD_US // 100
    return {
        "memory.max": str(limits.memory_mb * 1024 * 1024),
        "memory.swap.max": "0",
        "cpu.max": f"{quota} {CPU_PERIOD_US}",
        "pids.max": str(limits.pids_max),
    }


def own_cgroup(proc_self_cgroup: str) -> str | None:
    """The cgroup v2 path of a process (``0::/path`` line; None on a v1-only host)."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def oom_kills(memory_events: str) -> int:
    """The ``oom_kill`` count of a ``memory.events`` file (pure)."""
    for line in memory_events.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


class CgroupTree:
    """The daemon's cgroup and its ``apps`` children."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.apps = base / "apps"

    @classmethod
    def detect(cls, root: Path = CGROUP_ROOT) -> CgroupTree | None:
        """The usable tree, prepared; None (reduced mode) when limits cannot be applied."""
        try:
            controllers = (root / "cgroup.controllers").read_text().split()
            path = own_cgroup(Path("/proc/self/cgroup").read_text())
        except OSError:
            return None
        if path is None or not all(c in controllers for c in CONTROLLERS):
            return None
        base = root / path.lstrip("/")
        tree = cls(base.parent if base.name == DAEMON_CGROUP else base)  # a successor
        try:
            tree._prepare()
        except OSError as exc:
            log.warning("cgroup limits unavailable (%s): apps run without them", exc)
            return None
        return tree

    def _prepare(self) -> None:
        enable = " ".join(f"+{c}" for c in CONTROLLERS)
        daemon = self.base / DAEMON_CGROUP
        daemon.mkdir(exist_ok=True)
        for pid in (self.base / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # gone meanwhile
                (daemon / "cgroup.procs").write_text(pid)
        (self.base / "cgroup.subtree_control").write_text(enable)
        self.apps.mkdir(exist_ok=True)
        (self.apps / "cgroup.subtree_control").write_text(enable)

    def app_dir(self, app: str, env: str, limits: Limits) -> Path:
        """The app's cgroup with its limits written (created on first use)."""
        path = self.apps / f"{app}-{env}"
        path.mkdir(exist_ok=True)
        for name, value in limit_files(limits).items():
            with contextlib.suppress(FileNotFoundError):  # memory.swap.max without swap
                (path / name).write_text(value)
        return path

    def remove_app(self, app: str, env: str) -> None:
        with contextlib.suppress(OSError):
            (self.apps / f"{app}-{env}").rmdir()

    def __repr__(self) -> str:
        return f"CgroupTree({str(self.base)!r})"


def read_oom_kills(cgroup: Path) -> int:
    try:
        return oom_kills((cgroup / "memory.events").read_text())
    except OSError:
        return 0


def join(cgroup: Path) -> None:
    """In the child before ``exec``: move this process into ``cgroup``."""
    fd = os.open(cgroup / "cgroup.procs", os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
