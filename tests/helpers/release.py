"""The release artifacts of ``scripts/build-release``, built once and reused by tests.

Job: give tests the path of ``dist/tako-server-linux-<arch>-<libc>.tar.gz`` for this
machine. Rules: the build itself is cached by ``scripts/build-release`` (build venv and
executable keyed by source hashes under ``build/``), so calling :func:`build_release`
again is fast; a failed build raises :class:`ReleaseBuildError` with the output tail.
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


def build_release(*, wheel: bool = False) -> Path:
    """Run scripts/build-release (server only unless ``wheel``); return the tarball path."""
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
    return tarball_path()
