"""The release artifacts of ``scripts/build-release``, built once and reused by tests.

Job: give tests the path of ``dist/tako-server-linux-<arch>-<libc>.tar.gz`` for this
machine. Rules: the build itself is cached by ``scripts/build-release`` (build venv and
executable keyed by source hashes under ``build/``), so calling :func:`build_release`
again is fast; a failed build raises :class:`ReleaseBuildError` with the output tail.
Within one test process the script runs once per kind of build (server only, or server and
wheel): later calls return the same tarball while it still exists, instead of re-running the
script (which re-checks the executable and re-packs the tarball, seconds each time).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 20 * 60.0
EXECUTABLE = REPO / "build" / "pyinstaller" / "dist" / "tako-server"  # cached by the build


class ReleaseBuildError(RuntimeError):
    """scripts/build-release failed."""


def target() -> str:
    """``linux-<arch>-<libc>`` of this machine, named as the release artifacts are."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    probe = subprocess.run(["ldd", "--version"], capture_output=True, text=True, check=False)
    libc = "musl" if "musl" in (probe.stdout + probe.stderr).lower() else "glibc"
    return f"linux-{arch}-{libc}"


def package_version() -> str:
    text = (REPO / "tako_common" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if found is None:
        raise ReleaseBuildError("no __version__ in tako_common/__init__.py")
    return found.group(1)


def tarball_path() -> Path:
    return REPO / "dist" / f"tako-server-{target()}.tar.gz"


def daemon_sources_present() -> bool:
    """True once the daemon's entry point exists (the executable needs it to run)."""
    return (REPO / "tako_server" / "cli.py").is_file()


_BUILT: set[bool] = set()  # the ``wheel`` values this process already built successfully


def build_release(*, wheel: bool = False) -> Path:
    """Run scripts/build-release (server only unless ``wheel``); return the tarball path.

    Once per process and kind: a server-and-wheel build also answers server-only calls."""
    covered = True in _BUILT or (not wheel and False in _BUILT)
    if covered and tarball_path().is_file():
        return tarball_path()
    argv = [str(REPO / "scripts" / "build-release")]
    if not wheel:
        argv.append("--server-only")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise ReleaseBuildError(f"scripts/build-release exited {result.returncode}:\n{tail}")
    _BUILT.add(wheel)
    return tarball_path()
