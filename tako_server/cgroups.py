"""Per-app limits in cgroups (v2, or v1 on hybrid hosts): memory, CPU and processes, and
OOM kills reported.

**cgroup v2** (preferred: ``/sys/fs/cgroup`` is a cgroup2 mount offering ``memory cpu
pids``). Layout under the daemon's own cgroup ``B`` (the ``0::/path`` line of
``/proc/self/cgroup``; under systemd the unit's cgroup, which needs ``Delegate=yes``): the
daemon moves every process of ``B`` into ``B/tako-daemon`` (a cgroup with controllers for
its children may hold no process itself), enables ``memory cpu pids`` for ``B`` and
``B/apps``, and each app gets ``B/apps/{app}-{env}`` with ``memory.max`` (+
``memory.swap.max = 0``), ``cpu.max`` and ``pids.max`` (:func:`limit_files`). OOM kills:
the ``oom_kill`` line of its ``memory.events``.

**cgroup v1** (hybrid or legacy hosts: ``memory``, ``cpu`` and ``pids`` hierarchies
mounted, found in ``/proc/self/mountinfo``). Under each hierarchy the daemon's own
cgroup there (the ``N:memory:/path`` lines of ``/proc/self/cgroup``) + ``apps/{app}-{env}``
holds the app's limits (:func:`limit_files_v1`): ``memory.limit_in_bytes`` (and
``memory.memsw.limit_in_bytes`` equal to it where it exists: no swap), ``memory.oom_control``
left enabled, ``cpu.cfs_period_us``/``cpu.cfs_quota_us`` and ``pids.max``. v1 lets a cgroup
with children hold processes, so the daemon stays where it is. OOM kills: the ``oom_kill``
line of ``memory.oom_control`` (kernels from 4.13).

Either way every instance of the app joins its cgroup (every hierarchy's ``cgroup.procs``)
before ``exec``, so the limits are per app, all instances together. Instances stay there
across daemon restarts; the next daemon finds them there. An instance killed by SIGKILL
while the app's ``oom_kill`` count went up was killed by the OOM killer: the supervisor
says so in the exit reason.

Reduced mode: when neither works (containers without delegation, a non-root server, a
hierarchy missing or read-only), :meth:`CgroupTree.detect` returns None, the daemon logs it
once, and apps run without these limits (``docs/server.md``).

Pure: :func:`limit_files`, :func:`limit_files_v1`, :func:`memory_v1_order`, :func:`cap_cpu_quota`,
:func:`own_cgroup`, :func:`own_cgroups_v1`, :func:`v1_mounts`, :func:`v1_dir`,
:func:`oom_kills`. I/O: the tree classes, :func:`join`, :func:`read_oom_kills`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tako_server")

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF = Path("/proc/self")
CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000
DAEMON_CGROUP = "tako-daemon"
MEMSW = "memory.memsw.limit_in_bytes"
MEMORY_V1 = "memory.limit_in_bytes"


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpu_percent: int  # of one CPU: 200 = two CPUs' worth
    pids_max: int


@dataclass(frozen=True)
class AppCgroup:
    """One app's cgroup: its directory in each hierarchy (one with v2; ``memory``, ``cpu``
    and ``pids`` with v1), and the file whose ``oom_kill`` line counts its OOM kills."""

    dirs: tuple[Path, ...]
    oom_file: Path
    #: the memory limit in force when it differs from the app's setting (v1 keeps a
    #: higher one it cannot lower while the app uses more), for the OOM message
    memory_mb: int | None = None


def limit_files(limits: Limits) -> dict[str, str]:
    """The cgroup v2 files of an app and their contents (pure)."""
    quota = limits.cpu_percent * CPU_PERIOD_US // 100
    return {
        "memory.max": str(limits.memory_mb * 1024 * 1024),
        "memory.swap.max": "0",
        "cpu.max": f"{quota} {CPU_PERIOD_US}",
        "pids.max": str(limits.pids_max),
    }


def limit_files_v1(limits: Limits) -> dict[str, dict[str, str]]:
    """The cgroup v1 files of an app, per controller, in writing order (pure). The memory
    files' order depends on the current limit: :func:`memory_v1_order`."""
    memory = str(limits.memory_mb * 1024 * 1024)
    return {
        "memory": {MEMORY_V1: memory, MEMSW: memory, "memory.oom_control": "0"},
        "cpu": {
            "cpu.cfs_period_us": str(CPU_PERIOD_US),
            "cpu.cfs_quota_us": str(limits.cpu_percent * CPU_PERIOD_US // 100),
        },
        "pids": {"pids.max": str(limits.pids_max)},
    }


def memory_v1_order(current: int, new: int) -> tuple[str, str]:
    """v1 refuses ``memory.limit_in_bytes`` above ``memory.memsw.limit_in_bytes``: raising
    writes memsw first, lowering the memory limit first (pure)."""
    return (MEMSW, MEMORY_V1) if new > current else (MEMORY_V1, MEMSW)


def cap_cpu_quota(quota_us: int, ancestors: list[tuple[int, int]]) -> int:
    """v1 refuses a CFS quota above an ancestor's (per period, e.g. a systemd ``CPUQuota=``
    of the unit): the app's quota capped at the ancestors' (``(quota, period)`` pairs,
    quota -1: none; pure)."""
    for quota, period in ancestors:
        if quota > 0 and period > 0:
            quota_us = min(quota_us, quota * CPU_PERIOD_US // period)
    return quota_us


def own_cgroup(proc_self_cgroup: str) -> str | None:
    """The cgroup v2 path of a process (``0::/path`` line; None on a v1-only host)."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def own_cgroups_v1(proc_self_cgroup: str) -> dict[str, str]:
    """The cgroup v1 path of a process per controller (``N:cpu,cpuacct:/path`` lines; pure)."""
    paths: dict[str, str] = {}
    for line in proc_self_cgroup.splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        for controller in controllers.split(","):
            if controller and not controller.startswith("name="):
                paths[controller] = path.strip() or "/"
    return paths


def v1_mounts(mountinfo: str) -> dict[str, tuple[Path, str]]:
    """Where each cgroup v1 controller is mounted and the cgroup at the mount's root
    (``/proc/self/mountinfo``; pure)."""
    mounts: dict[str, tuple[Path, str]] = {}
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts, extra = fields.split(), rest.split()
        if len(parts) < 5 or len(extra) < 3 or extra[0] != "cgroup":
            continue
        for option in extra[2].split(","):
            if option in CONTROLLERS:
                mounts.setdefault(option, (Path(parts[4]), parts[3]))
    return mounts


def v1_dir(mount: Path, mount_root: str, path: str) -> Path | None:
    """The directory of cgroup ``path`` in a hierarchy mounted at ``mount`` whose root is
    ``mount_root`` (None: the cgroup is outside the mount; pure)."""
    root = mount_root.rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        return None
    relative = path[len(root) :].strip("/")
    return mount / relative if relative else mount


def oom_kills(text: str) -> int:
    """The ``oom_kill`` count of a v2 ``memory.events`` or v1 ``memory.oom_control`` (pure)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


class CgroupTree:
    """The daemon's cgroup(s) and their ``apps`` children: v2 or v1 (:meth:`detect`)."""

    version = 0

    def __init__(self, bases: tuple[Path, ...]) -> None:
        self.bases = bases

    @property
    def base(self) -> Path:
        return self.bases[0]

    @classmethod
    def detect(cls, root: Path = CGROUP_ROOT, proc: Path = PROC_SELF) -> CgroupTree | None:
        """The usable tree, prepared: v2, else v1; None (reduced mode) when neither can
        apply limits."""
        for kind in (CgroupV2, CgroupV1):
            try:
                tree = kind.find(root, proc)
                if tree is not None:
                    tree.prepare()
                    return tree
            except OSError as exc:
                log.warning("cgroup v%d limits unavailable (%s)", kind.version, exc)
        return None

    @classmethod
    def find(cls, root: Path, proc: Path) -> CgroupTree | None:
        raise NotImplementedError

    def prepare(self) -> None:
        for base in self.bases:
            (base / "apps").mkdir(exist_ok=True)

    def app_dir(self, app: str, env: str, limits: Limits) -> AppCgroup:
        """The app's cgroup with its limits written (created on first use)."""
        raise NotImplementedError

    def remove_app(self, app: str, env: str) -> None:
        """Its directory in every hierarchy goes (once its processes are gone)."""
        for base in self.bases:
            with contextlib.suppress(OSError):
                (base / "apps" / f"{app}-{env}").rmdir()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(str(b) for b in self.bases)})"


class CgroupV2(CgroupTree):
    """One cgroup2 hierarchy: the daemon in ``B/tako-daemon``, apps in ``B/apps``."""

    version = 2

    @classmethod
    def find(cls, root: Path, proc: Path) -> CgroupTree | None:
        try:
            controllers = (root / "cgroup.controllers").read_text().split()
        except FileNotFoundError:
            return None  # not a cgroup2 mount (a v1 or hybrid host)
        path = own_cgroup((proc / "cgroup").read_text())
        if path is None or not all(c in controllers for c in CONTROLLERS):
            return None
        base = root / path.lstrip("/")
        return cls((base.parent if base.name == DAEMON_CGROUP else base,))  # a successor

    def prepare(self) -> None:
        enable = " ".join(f"+{c}" for c in CONTROLLERS)
        daemon = self.base / DAEMON_CGROUP
        daemon.mkdir(exist_ok=True)
        for pid in (self.base / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # gone meanwhile
                (daemon / "cgroup.procs").write_text(pid)
        (self.base / "cgroup.subtree_control").write_text(enable)
        super().prepare()
        (self.base / "apps" / "cgroup.subtree_control").write_text(enable)

    def app_dir(self, app: str, env: str, limits: Limits) -> AppCgroup:
        path = self.base / "apps" / f"{app}-{env}"
        path.mkdir(exist_ok=True)
        for name, value in limit_files(limits).items():
            with contextlib.suppress(FileNotFoundError):  # memory.swap.max without swap
                (path / name).write_text(value)
        return AppCgroup((path,), path / "memory.events")


class CgroupV1(CgroupTree):
    """One hierarchy per controller (``memory``, ``cpu``, ``pids``, in that order): the
    daemon's cgroup in each + ``apps``."""

    version = 1

    @classmethod
    def find(cls, root: Path, proc: Path) -> CgroupTree | None:
        mounts = v1_mounts((proc / "mountinfo").read_text())
        own = own_cgroups_v1((proc / "cgroup").read_text())
        bases = []
        for controller in CONTROLLERS:
            if controller not in mounts or controller not in own:
                return None
            base = v1_dir(*mounts[controller], own[controller])
            if base is None:
                return None
            bases.append(base)
        return cls(tuple(bases))

    def app_dir(self, app: str, env: str, limits: Limits) -> AppCgroup:
        dirs = tuple(base / "apps" / f"{app}-{env}" for base in self.bases)
        for path, files in zip(dirs, limit_files_v1(limits).values(), strict=True):
            path.mkdir(exist_ok=True)
            if MEMORY_V1 in files:
                files = _memory_v1_files(path, files)
            if "cpu.cfs_quota_us" in files:
                files = _cpu_v1_files(path, files)
            kept = False  # a memory limit that could not be lowered: memsw stays above it
            for name, value in files.items():
                if not (kept and name == MEMSW):
                    kept = not _write_v1(path / name, value) or kept
        memory = int((dirs[0] / MEMORY_V1).read_text()) >> 20
        in_force = memory if memory != limits.memory_mb else None
        return AppCgroup(dirs, dirs[0] / "memory.oom_control", in_force)


def _memory_v1_files(path: Path, files: dict[str, str]) -> dict[str, str]:
    """The memory files in the order the kernel accepts; no memsw without swap accounting."""
    if not (path / MEMSW).exists():
        return {k: v for k, v in files.items() if k != MEMSW}
    current = int((path / MEMORY_V1).read_text())
    first, second = memory_v1_order(current, int(files[MEMORY_V1]))
    rest = {k: v for k, v in files.items() if k not in (MEMSW, MEMORY_V1)}
    return {first: files[first], second: files[second], **rest}


def _write_v1(path: Path, value: str) -> bool:
    """Write a limit (False: kept). A memory limit below what the app's processes use now
    (that the kernel cannot reclaim: EBUSY) stays as it was, with a warning, until the
    app's next deploy or the next daemon start writes it again."""
    try:
        path.write_text(value)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        log.warning("%s: cannot lower it to %s while the app uses more: kept", path, value)
        return False
    return True


def _cpu_v1_files(path: Path, files: dict[str, str]) -> dict[str, str]:
    """The CPU quota capped at the ancestors' (the kernel refuses more)."""
    ancestors = []
    for parent in path.parents:
        try:
            quota = int((parent / "cpu.cfs_quota_us").read_text())
            period = int((parent / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            break  # above the hierarchy's root
        ancestors.append((quota, period))
    wanted = int(files["cpu.cfs_quota_us"])
    quota = cap_cpu_quota(wanted, ancestors)
    if quota < wanted:
        log.warning("%s: CPU quota %d us capped at %d us (a parent's)", path, wanted, quota)
    return {**files, "cpu.cfs_quota_us": str(quota)}


def read_oom_kills(cgroup: AppCgroup) -> int:
    try:
        return oom_kills(cgroup.oom_file.read_text())
    except OSError:
        return 0


def join(cgroup: AppCgroup) -> None:
    """In the child before ``exec``: move this process into the app's cgroup (each
    hierarchy's)."""
    for path in cgroup.dirs:
        fd = os.open(path / "cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
