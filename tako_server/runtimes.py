"""Runtime preparation of a release and the command that starts its instances.

Rules (DESIGN.md "App process contract"):

- Prep runs in the release's working directory before the rolling update: the
  manifest's ``install`` (a shell command) when given; else python: a venv in
  ``.venv`` made with the interpreter the server runs on, then ``pip install -r
  requirements.txt`` or ``pip install .``; node and bun: the production install of the
  manifest's ``package_manager`` (default: npm for node, bun for bun), lockfile-frozen
  with its lockfile, and only when package.json declares dependencies
  (:mod:`tako_common.package_managers`).
- A failed prep raises :class:`PrepError` with the last output lines; the caller removes
  the release it created.
- The start command is the manifest's ``start`` with every argument that is exactly
  ``{main}`` replaced (nothing else is expanded), else the runtime default. Paths of
  release-local programs are absolute, and the release's
  ``.venv/bin`` / ``node_modules/.bin`` come first on ``PATH``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections import deque
from pathlib import Path
from typing import Any

from tako_common import package_managers
from tako_common.entry import expand_main
from tako_common.errors import TakoError

PREP_TIMEOUT = 15 * 60.0
TAIL_LINES = 30
JS_RUNTIMES = frozenset({"bun", "node", "deno"})
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PrepError(TakoError):
    """Runtime preparation failed; ``tail`` holds the last output lines."""

    code = "prep_failed"

    def __init__(self, message: str, tail: list[str]) -> None:
        super().__init__(message, hint="last output lines:\n" + "\n".join(tail) if tail else None)
        self.tail = tail


def python_interpreter() -> str:
    """The Python used for app venvs: the server's own, or the host's ``python3`` when the
    server is the self-contained (PyInstaller) executable."""
    if not getattr(sys, "frozen", False):
        return sys.executable
    found = shutil.which("python3") or shutil.which("python")
    if found is None:
        raise PrepError(
            "python apps need python3 on the server (the tako-server executable bundles "
            "its own Python but does not lend it to apps)",
            [],
        )
    return found


def prep_commands(
    runtime: str,
    install: str | None,
    workdir: Path,
    package_manager: str | None = None,
    python: str | None = None,
) -> list[list[str]]:
    """The commands that prepare ``workdir`` (pure apart from looking at which files exist);
    ``python`` is a pinned interpreter for the venv (default: :func:`python_interpreter`)."""
    if install:
        return [["/bin/sh", "-c", install]]
    if runtime == "python":
        return _python_prep(workdir, python)
    if runtime in package_managers.RUNTIME_DEFAULTS:
        manager = package_manager or package_managers.RUNTIME_DEFAULTS[runtime]
        files = package_managers.ProjectFiles.read(workdir)
        command = package_managers.server_install_argv(manager, files)
        return [command] if command is not None else []
    return []


def _python_prep(workdir: Path, python: str | None = None) -> list[list[str]]:
    pip = [str(workdir / ".venv" / "bin" / "python"), "-m", "pip", "install"]
    pip += ["--disable-pip-version-check", "--no-input"]
    if (workdir / "requirements.txt").exists():
        deps = [*pip, "-r", "requirements.txt"]
    elif (workdir / "pyproject.toml").exists():
        deps = [*pip, "."]
    else:
        return []
    return [[python or python_interpreter(), "-m", "venv", ".venv"], deps]


async def prepare(
    runtime: str,
    install: str | None,
    workdir: Path,
    environ: dict[str, str],
    package_manager: str | None = None,
    *,
    python: str | None = None,
) -> None:
    """Run every prep command in ``workdir``; raise PrepError with the output tail."""
    for command in prep_commands(runtime, install, workdir, package_manager, python):
        await _run(command, workdir, environ)


async def _run(command: list[str], workdir: Path, environ: dict[str, str]) -> None:
    label = " ".join(command)
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=workdir,
            env=environ,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise PrepError(f"runtime prep `{label}` could not start: {exc}", []) from exc
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        await asyncio.wait_for(_collect(proc, tail), PREP_TIMEOUT)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise PrepError(
            f"runtime prep `{label}` timed out after {PREP_TIMEOUT:.0f}s", list(tail)
        ) from exc
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise PrepError(
            f"runtime prep `{label}` failed with exit code {proc.returncode}", list(tail)
        )


async def _collect(proc: asyncio.subprocess.Process, tail: deque[str]) -> None:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        tail.append(raw.decode("utf-8", "replace").rstrip("\n"))
    await proc.wait()


def start_command(manifest: dict[str, Any], workdir: Path) -> list[str]:
    """argv of an instance: ``start`` with exact ``{main}`` arguments expanded, else the
    runtime default."""
    main = str(manifest["main"])
    start = manifest.get("start")
    if start:
        return expand_main((str(arg) for arg in start), main)
    runtime = manifest["runtime"]
    if runtime == "bun":
        return ["bun", "run", main]
    if runtime == "node":
        return ["node", main]
    if runtime == "deno":
        return ["deno", "run", "-A", main]
    if runtime == "python":
        venv_python = workdir / ".venv" / "bin" / "python"
        if venv_python.exists():
            return [str(venv_python), main]
        # a pinned python is first on PATH (tako_server.pinned); else the server's
        return ["python3" if manifest.get("runtime_version") else python_interpreter(), main]
    if runtime in ("go", "binary"):
        return [str(workdir / main)]
    raise TakoError(f"unsupported runtime {runtime!r}: use bun, node, deno, python, go or binary")


def base_environ(workdir: Path, server_env: dict[str, str]) -> dict[str, str]:
    """PATH (release-local bins first) and HOME for prep and instances."""
    path = server_env.get("PATH") or DEFAULT_PATH
    extra = [workdir / ".venv" / "bin", workdir / "node_modules" / ".bin"]
    prefix = [str(p) for p in extra if p.is_dir()]
    parts = [*prefix, *path.split(os.pathsep)]
    if not getattr(sys, "frozen", False):
        # the server's own Python stays reachable for python apps (never needed when frozen:
        # python_interpreter() then uses the host's python3 from PATH)
        python_dir = str(Path(sys.executable).parent)
        if python_dir not in parts:
            parts.append(python_dir)
    return {"PATH": os.pathsep.join(parts), "HOME": server_env.get("HOME") or str(workdir)}
