"""What the proxy benchmark measures about a process and its children, read from /proc.

- :func:`tree` is a process and every descendant (nginx's master and workers, tako's main
  process and workers), found by parent PID;
- :func:`pss_kib` sums ``Pss`` of ``/proc/<pid>/smaps_rollup`` over them (proportional set
  size: shared pages divided among the processes that map them, so workers forked from one
  parent are not counted twice as RSS would);
- :func:`cpu_seconds` sums ``utime + stime`` of ``/proc/<pid>/stat`` (all threads);
- :func:`listen_overflows` is the kernel's count of connections dropped because a
  listen queue was full (``TcpExt ListenOverflows``, /proc/net/netstat): each costs the
  client a SYN retransmit (1 s, then 3 s), so a run that caused some measured that too;
- :func:`raise_nofile` lifts this process's file descriptor limit (children inherit it);
- :func:`source_shim` builds ``srcaddr.c``, the ``LD_PRELOAD`` library that spreads wrk's
  connections over many loopback source addresses (tako caps connections per client
  address, as a server facing the Internet must; 5,000 users are not one address).

Parsers take text so they are tested without /proc (tests/unit/test_bench_measure.py).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
SHIM_SOURCE = Path(__file__).with_name("srcaddr.c")


def parse_pss_kib(smaps_rollup: str) -> int:
    """``Pss:`` of one smaps_rollup file in KiB (0 when absent)."""
    match = re.search(r"^Pss:\s+(\d+) kB", smaps_rollup, re.M)
    return int(match.group(1)) if match else 0


def parse_stat(stat: str) -> tuple[int, int]:
    """(parent PID, utime + stime in clock ticks) from one /proc/<pid>/stat line.

    The command name (field 2) may hold spaces and parentheses: fields are counted from
    the last ``)``.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def tree(root: int) -> list[int]:
    """``root`` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat is not None:
                children.setdefault(parse_stat(stat)[0], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def pss_kib(pids: list[int]) -> int:
    return sum(parse_pss_kib(_read(f"/proc/{pid}/smaps_rollup") or "") for pid in pids)


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        stat = _read(f"/proc/{pid}/stat")
        if stat is not None:
            ticks += parse_stat(stat)[1]
    return ticks / CLK_TCK


def parse_netstat(text: str, name: str) -> int:
    """Counter ``name`` of the ``TcpExt:`` lines of /proc/net/netstat (0 when absent)."""
    lines = [line.split() for line in text.splitlines() if line.startswith("TcpExt:")]
    if len(lines) < 2 or name not in lines[0]:
        return 0
    return int(lines[1][lines[0].index(name)])


def listen_overflows() -> int:
    return parse_netstat(_read("/proc/net/netstat") or "", "ListenOverflows")


def raise_nofile(want: int = 200_000) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``want`` (the hard limit too where allowed);
    returns the soft limit now in force (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE: as far as the hard limit goes
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(min(want, hard), soft), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def source_shim(work: Path) -> Path | None:
    """Compile srcaddr.c into ``work``; None without a C compiler (then one source address)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = work / "srcaddr.so"
    subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    return out


def source_address(index: int) -> str:
    """The ``index``-th loopback source address (0-based), as srcaddr.c numbers them."""
    n = index + 1
    return f"127.1.{n >> 8}.{n & 0xFF}"
