"""tako-server release artifacts on the client, and the host targets they are built for.

Job: find, verify, inspect and upload the tarballs ``scripts/build-release`` writes, for
``tako servers upgrade --artifact`` and ``tako servers add --install``.

Rules:

- an artifact is ``tako-server-linux-<arch>-<libc>.tar.gz`` with ``<tarball>.sha256``
  (``sha256sum`` format) beside it; it is verified against that file before it is used;
- a host's target is ``uname -m`` (``amd64``/``arm64`` normalised) and ``ldd --version``
  (glibc or musl); a tarball named for another target is refused before any upload;
- without ``--artifact`` the artifact comes from the ``dist/`` of the checkout this
  package runs from: the newest file named for the host's target;
- uploads put the tarball and its ``.sha256`` side by side in one remote directory;
- :func:`install_release` installs an uploaded tarball over a running server's
  executable: through the root-owned ``INSTALL_HELPER`` when ``sudo -n`` allows it,
  else by an atomic in-place replace of a ``tako-server`` binary that ``tako`` may
  write (checksum checked again on the host); otherwise it fails with a hint.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import tarfile
from collections.abc import Iterable
from pathlib import Path

from tako_client.global_config import ARCHES, normalize_arch
from tako_client.ssh import Connection
from tako_common.errors import TakoError, ValidationError
from tako_common.protocol import ServerInfoData

ARTIFACT_RE = re.compile(r"^tako-server-linux-(?P<arch>[a-z0-9_]+)-(?P<libc>[a-z]+)\.tar\.gz$")
INSTALL_HELPER = "/usr/local/bin/tako-server-install"
BUILD_HINT = "build one with `scripts/build-release --server-only`, or pass --artifact FILE"


def artifact_name(arch: str, libc: str) -> str:
    """The release tarball's file name for a target."""
    return f"tako-server-linux-{arch}-{libc}.tar.gz"


def parse_libc(ldd_output: str) -> str:
    """``glibc`` or ``musl`` from the output of ``ldd --version`` (stdout and stderr)."""
    text = ldd_output.lower()
    if "musl" in text:
        return "musl"
    if "glibc" in text or "gnu libc" in text or "gnu c library" in text:
        return "glibc"
    first = ldd_output.strip().splitlines()[0] if ldd_output.strip() else "(no output)"
    raise ValidationError(
        f"cannot tell the C library from `ldd --version`: {first}",
        hint="tako supports glibc and musl Linux hosts",
    )


def parse_arch(uname_output: str) -> str:
    arch = normalize_arch(uname_output.strip())
    if arch not in ARCHES:
        raise ValidationError(
            f"unsupported architecture {arch!r}: tako supports {', '.join(ARCHES)}"
        )
    return arch


async def detect_target(conn: Connection) -> tuple[str, str]:
    """``(arch, libc)`` of the host behind ``conn``."""
    uname = await conn.run("uname -m")
    if uname.exit != 0:
        raise TakoError(f"`uname -m` failed on {conn.target.display}: {uname.stderr.strip()}")
    ldd = await conn.run("ldd --version 2>&1")
    return parse_arch(uname.stdout), parse_libc(ldd.stdout)


# --------------------------------------------------------------------------- finding


def checkout_dist() -> Path | None:
    """``dist/`` of the source checkout this package runs from (None for an installed wheel)."""
    root = Path(__file__).resolve().parents[1]
    return root / "dist" if (root / "scripts" / "build-release").is_file() else None


def choose_artifact(files: Iterable[tuple[Path, float]], arch: str, libc: str) -> Path | None:
    """The newest (by mtime) of ``(path, mtime)`` pairs named for ``arch``/``libc``."""
    wanted = artifact_name(arch, libc)
    matching = [(mtime, str(path), path) for path, mtime in files if path.name == wanted]
    return max(matching)[2] if matching else None


def release_files(dist: Path) -> list[tuple[Path, float]]:
    """``(path, mtime)`` of every release tarball in ``dist`` that has its ``.sha256``."""
    if not dist.is_dir():
        return []
    return [
        (path, path.stat().st_mtime)
        for path in sorted(dist.iterdir())
        if ARTIFACT_RE.match(path.name) and Path(f"{path}.sha256").is_file()
    ]


def find_artifact(dist: Path | None, arch: str, libc: str) -> Path:
    """The artifact in ``dist`` for a target, or an error naming what exists and how to build."""
    if dist is None:
        raise ValidationError(
            "no tako-server release artifact: tako does not run from a source checkout",
            hint="pass --artifact FILE (a tako-server-linux-<arch>-<libc>.tar.gz with its .sha256)",
        )
    files = release_files(dist)
    chosen = choose_artifact(files, arch, libc)
    if chosen is not None:
        return chosen
    found = ", ".join(path.name for path, _ in files) or "none"
    raise ValidationError(
        f"no tako-server release artifact for linux-{arch}-{libc} in {dist} (found: {found})",
        hint=BUILD_HINT + " (the build makes the target of the machine it runs on)",
    )


def check_target(tarball: Path, arch: str, libc: str) -> None:
    """Refuse a tarball whose name says it was built for another target."""
    if ARTIFACT_RE.match(tarball.name) and tarball.name != artifact_name(arch, libc):
        raise ValidationError(
            f"{tarball.name} is not for this host: it needs {artifact_name(arch, libc)}"
        )


# --------------------------------------------------------------------------- verifying


def read_checksum(tarball: Path) -> str:
    """The verified SHA-256 of a release tarball (``<tarball>.sha256`` must match it)."""
    sums = Path(f"{tarball}.sha256")
    if not tarball.is_file():
        raise ValidationError(f"release tarball {tarball} does not exist", hint=BUILD_HINT)
    if not sums.is_file():
        raise ValidationError(
            f"no checksum for {tarball.name}: {sums.name} must be beside it",
            hint="scripts/build-release writes both files",
        )
    expected = sums.read_text().split()[0].lower() if sums.read_text().split() else ""
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != expected:
        raise ValidationError(
            f"checksum mismatch: {tarball.name} does not match {sums.name} (sha256 {digest})"
        )
    return digest


def server_digest(tarball: Path) -> str:
    """SHA-256 of the ``tako-server`` executable inside a release tarball."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            member = tar.extractfile("tako-server")
            if member is None:
                raise KeyError("tako-server")
            digest = hashlib.sha256()
            for chunk in iter(lambda: member.read(1 << 20), b""):
                digest.update(chunk)
            return digest.hexdigest()
    except KeyError as exc:
        raise ValidationError(f"{tarball.name} has no tako-server at its top level") from exc
    except (OSError, tarfile.TarError) as exc:
        raise ValidationError(f"{tarball.name} is not a valid .tar.gz: {exc}") from exc


# --------------------------------------------------------------------------- uploading


async def upload_release(conn: Connection, tarball: Path, remote_dir: str) -> str:
    """Verify ``tarball``, upload it and its ``.sha256`` into ``remote_dir``; the remote path."""
    read_checksum(tarball)
    remote = f"{remote_dir}/{tarball.name}"
    await conn.upload(tarball, remote)
    await conn.upload(Path(f"{tarball}.sha256"), f"{remote}.sha256")
    return remote


async def install_release(conn: Connection, info: ServerInfoData, tarball: Path) -> str:
    """Upload and install a release tarball; returns how it was installed."""
    remote = await upload_release(conn, tarball, info.incoming_dir)
    quoted = shlex.quote(remote)
    if (await conn.run(f"sudo -n -l {INSTALL_HELPER} >/dev/null 2>&1")).exit == 0:
        done = await conn.run(f"sudo -n {INSTALL_HELPER} {quoted}", timeout=600)
        if done.exit != 0:
            raise TakoError(f"{INSTALL_HELPER} failed: {(done.stderr or done.stdout).strip()}")
        return "sudo"
    binary = info.executable or await _executable_of(conn, info.pid)  # older servers
    script = _replace_script(binary, remote)
    done = await conn.run(script, timeout=300)
    if done.exit != 0:
        raise TakoError(
            f"cannot install {tarball.name} on {conn.target.display}:"
            f" {(done.stderr or done.stdout).strip()}",
            hint=f"allow `sudo -n {INSTALL_HELPER}` for tako, or run scripts/install-server.sh"
            " as root with TAKO_SERVER_ARTIFACT",
        )
    return "in place"


async def _executable_of(conn: Connection, pid: int) -> str:
    """The running executable of a server too old to say it in ``server_info``."""
    return (await conn.run(f"readlink -f /proc/{pid}/exe")).stdout.strip()


def _replace_script(binary: str, tarball: str) -> str:
    """Shell that swaps ``binary`` atomically for the tarball's tako-server (same dir)."""
    b, t = shlex.quote(binary), shlex.quote(tarball)
    d = shlex.quote(os.path.dirname(binary) or "/")
    return (
        "set -e; "
        f'case {b} in */tako-server) ;; *) echo "{binary} is not a tako-server executable"'
        " >&2; exit 1;; esac; "
        f'[ -w {d} ] || {{ echo "{os.path.dirname(binary)} is not writable by $(id -un)" >&2;'
        " exit 1; }; "
        f'cd "$(dirname {t})"; [ "$(sha256sum {t} | cut -d" " -f1)" = "$(cut -d" " -f1'
        f' {t}.sha256)" ] || {{ echo "checksum mismatch after upload" >&2; exit 1; }}; '
        "work=$(mktemp -d); trap 'rm -rf \"$work\"' EXIT; "
        f'tar -xzf {t} -C "$work" tako-server; "$work/tako-server" version >/dev/null; '
        f'cp "$work/tako-server" {d}/.tako-server.new; chmod 755 {d}/.tako-server.new; '
        f"mv -f {d}/.tako-server.new {b}; rm -f {t} {t}.sha256"
    )
