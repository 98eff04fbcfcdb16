"""Stop or restart: whether app processes outlive a stopping tako-server.

systemd sends the same SIGTERM for ``systemctl stop`` and ``systemctl restart``. The unit
runs ``tako-server prepare-stop`` as ``ExecStop=`` (before the SIGTERM; ``KillMode=process``
so systemd signals the daemon only): when a restart job of the unit is queued
(``systemctl list-jobs``), it writes ``{data_dir}/keep-apps``; the daemon, on SIGTERM,
takes (removes) that marker and leaves its app processes running for the next daemon to
adopt instead of stopping them. Without the marker a SIGTERM stops every app, as a
``systemctl stop`` should. A marker older than :data:`MARKER_MAX_AGE` is ignored (a stop
that never came must not make a much later one keep apps).

Pure: :func:`restart_pending` (parses ``list-jobs`` output). I/O: the marker, the
``systemctl`` call.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

KEEP_APPS_MARKER = "keep-apps"
MARKER_MAX_AGE = 600.0  # seconds
DEFAULT_UNIT = "tako-server.service"


def restart_pending(list_jobs: str, unit: str) -> bool:
    """True when ``systemctl list-jobs --no-legend --plain`` shows a restart job of ``unit``
    (lines: ``JOB UNIT TYPE STATE``; a restart shows as ``restart`` or ``try-restart``)."""
    for line in list_jobs.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == unit and fields[2] in ("restart", "try-restart"):
            return True
    return False


def systemd_restart_pending(unit: str = DEFAULT_UNIT, timeout: float = 10.0) -> bool:
    """Ask systemd whether ``unit`` is being restarted (False when it cannot tell)."""
    try:
        done = subprocess.run(
            ["systemctl", "list-jobs", "--no-legend", "--plain", "--no-pager"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and restart_pending(done.stdout, unit)


def write_keep_marker(path: Path) -> None:
    path.write_text(f"{os.getpid()} {time.time():.0f}\n")


def take_keep_marker(path: Path, now: float | None = None) -> bool:
    """Remove the marker; True when it was there and fresh."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return age <= MARKER_MAX_AGE
