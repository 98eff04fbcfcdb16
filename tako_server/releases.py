"""Release directories: verify an uploaded artifact, extract it safely, move ``current``.

Layout (see :mod:`tako_common.layout`): ``apps/{app}/{env}/releases/{version}/`` holds the
extracted artifact; ``{app_subdir}/app.json`` the manifest; ``current`` is a symlink to
``releases/{version}``.

Rules:

- An artifact is used only after its sha256 matches the one the client sent, and only
  from the server's ``incoming/`` directory (no symlinks, no other paths).
- Extraction refuses, with the member's name: absolute paths, ``..`` components, links
  that point outside the release, hard links to outside members, device/FIFO/other
  special files. It extracts into a staging directory and moves it into place only when
  every member passed; on any refusal the staging directory is removed, so nothing
  changes on disk.
- ``current`` moves atomically (symlink to a temporary name + rename) and only after a
  successful rollout, on deploy and on rollback.
- Pruning removes releases older than 30 days while keeping at least the newest 5, and
  never the current one. Which to prune is a pure function (time is an argument).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from tako_common.errors import TakoError, ValidationError
from tako_common.layout import ServerLayout

KEEP_RELEASES = 5
MAX_RELEASE_AGE = 30 * 24 * 3600
APP_JSON = "app.json"
_CHUNK = 1024 * 1024


class ArtifactError(TakoError):
    code = "artifact"


class UnsafeArchiveError(ArtifactError):
    code = "unsafe_archive"


def artifact_path(layout: ServerLayout, name: str) -> Path:
    """The artifact ``name`` inside ``incoming/``; refuses anything else."""
    if "/" in name or "\\" in name or name in ("", ".", "..") or not name.endswith(".tar.zst"):
        raise ValidationError(
            f"invalid artifact {name!r}: must be a .tar.zst file name inside the incoming directory"
        )
    return layout.incoming_dir / name


def verify_artifact(layout: ServerLayout, name: str, sha256: str) -> Path:
    """Return the artifact's path when it exists as a regular file with the given sha256."""
    path = artifact_path(layout, name)
    if path.is_symlink() or not path.is_file():
        raise ArtifactError(
            f"artifact {name} is not in {layout.incoming_dir}",
            hint="upload it first (the deploy uploads before sending the deploy command)",
        )
    digest = file_sha256(path)
    if digest != sha256:
        raise ArtifactError(
            f"artifact {name} has sha256 {digest}, expected {sha256}",
            hint="the upload was corrupted or replaced; deploy again to re-upload",
        )
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- extraction


def check_member(member: tarfile.TarInfo, seen: set[str]) -> str:
    """Validate one archive member; return its normalised name or raise UnsafeArchiveError."""
    name = member.name
    if name.startswith("/") or "\x00" in name:
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'")
    norm = "/".join(parts)
    if member.issym():
        target = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(norm), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchiveError(
                f"archive symlink {name!r} -> {target!r} points outside the release"
            )
    elif member.islnk():
        target = posixpath.normpath(member.linkname)
        if member.linkname.startswith("/") or target.startswith("..") or target not in seen:
            raise UnsafeArchiveError(
                f"archive hard link {name!r} -> {member.linkname!r} does not point to an"
                " earlier member of the archive"
            )
    elif not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(
            f"archive member {name!r} is a device, FIFO or other special file; only files,"
            " directories and links are allowed"
        )
    return norm


def extract_archive(archive: Path, dest: Path) -> int:
    """Extract a ``.tar.zst`` into the new directory ``dest``; return the member count.

    ``dest`` must not exist. On any refusal or error ``dest`` is removed and the error
    re-raised, so a refused archive leaves nothing behind.
    """
    dest.mkdir(mode=0o755)
    try:
        count = _extract_members(archive, dest)
        _check_links_inside(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return count


def _extract_members(archive: Path, dest: Path) -> int:
    seen: set[str] = set()
    count = 0
    try:
        with archive.open("rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as raw:
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                for member in tar:
                    norm = check_member(member, seen)
                    if norm:
                        _check_parent_inside(dest, norm)
                        _extract_one(tar, member, dest)
                    seen.add(norm)
                    count += 1
    except _FILTER_ERRORS as exc:
        raise UnsafeArchiveError(f"archive refused: {exc}") from exc
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise ArtifactError(f"artifact {archive.name} is not a valid .tar.zst: {exc}") from exc
    return count


# Python < 3.11.4 (e.g. Debian 12's 3.11.2) has no extraction filters: the same rules are
# applied by hand (check_member, _check_parent_inside, and _sanitise for modes/owners).
_HAS_FILTER = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
)


def _extract_one(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    if _HAS_FILTER:
        tar.extract(member, dest, filter="data")
    else:
        tar.extract(_sanitise(member), dest, set_attrs=not member.issym())


def _sanitise(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the ``data`` filter does to modes and owners: no setuid/setgid/sticky, no
    group/other write, owned by the extracting user."""
    member.mode &= 0o755
    if member.isreg():
        member.mode |= 0o600
    elif member.isdir():
        member.mode |= 0o700
    member.uid, member.gid = os.getuid(), os.getgid()
    member.uname = member.gname = ""
    return member


def _check_parent_inside(dest: Path, norm: str) -> None:
    """A member must not be written through a symlink that leads outside ``dest``."""
    root = os.path.realpath(dest)
    parent = os.path.realpath(os.path.join(root, posixpath.dirname(norm)))
    if parent != root and not parent.startswith(root + os.sep):
        raise UnsafeArchiveError(
            f"archive member {norm!r} would be written through a link outside the release"
        )


def _check_links_inside(dest: Path) -> None:
    """Final guard: every symlink under ``dest`` resolves inside it (chains included)."""
    root = dest.resolve()
    for dirpath, dirnames, filenames in os.walk(dest):
        for entry in [*dirnames, *filenames]:
            path = Path(dirpath) / entry
            if path.is_symlink():
                target = path.resolve()
                if target != root and root not in target.parents:
                    rel = path.relative_to(dest)
                    raise UnsafeArchiveError(
                        f"archive symlink {str(rel)!r} resolves outside the release"
                    )


def install_release(archive: Path, staging: Path, release_dir: Path) -> None:
    """Extract into ``staging`` then rename it to ``release_dir`` (which must not exist)."""
    extract_archive(archive, staging)
    try:
        release_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, release_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- manifest


def workdir_of(release_dir: Path, app_subdir: str) -> Path:
    """The instances' working directory; must stay inside the release."""
    workdir = (release_dir / app_subdir) if app_subdir not in ("", ".") else release_dir
    root = release_dir.resolve()
    resolved = workdir.resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafeArchiveError(f"app_subdir {app_subdir!r} points outside the release")
    if not workdir.is_dir():
        raise ArtifactError(f"app_subdir {app_subdir!r} is not a directory in the release")
    return workdir


def write_app_json(workdir: Path, manifest: dict[str, Any], extra: dict[str, Any]) -> Path:
    """Write ``app.json`` (manifest + release facts; never secrets) atomically."""
    path = workdir / APP_JSON
    tmp = workdir / f".{APP_JSON}.tmp"
    tmp.write_text(json.dumps({**manifest, **extra}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_app_json(workdir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((workdir / APP_JSON).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------- current


def switch_current(link: Path, version: str) -> None:
    """Point ``link`` at ``releases/{version}`` atomically (symlink + rename)."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(f"releases/{version}", tmp)
    os.replace(tmp, link)


def current_version(link: Path) -> str | None:
    try:
        return posixpath.basename(os.readlink(link))
    except OSError:
        return None


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class ReleaseDir:
    version: str
    mtime: float


def release_dirs(releases_dir: Path) -> list[ReleaseDir]:
    """Release directories, newest first (mtime, then version); staging dirs excluded."""
    try:
        entries = list(os.scandir(releases_dir))
    except FileNotFoundError:
        return []
    found = [
        ReleaseDir(e.name, e.stat(follow_symlinks=False).st_mtime)
        for e in entries
        if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
    ]
    return sorted(found, key=lambda r: (r.mtime, r.version), reverse=True)


def releases_to_prune(
    releases: Iterable[ReleaseDir],
    current: str | None,
    now: float,
    keep: int = KEEP_RELEASES,
    max_age: float = MAX_RELEASE_AGE,
) -> list[str]:
    """Versions to delete: older than ``max_age``, beyond the newest ``keep``, not current."""
    ordered = sorted(releases, key=lambda r: (r.mtime, r.version), reverse=True)
    return [r.version for r in ordered[keep:] if r.version != current and now - r.mtime > max_age]


def prune_releases(releases_dir: Path, current: str | None, now: float) -> list[str]:
    doomed = releases_to_prune(release_dirs(releases_dir), current, now)
    for version in doomed:
        shutil.rmtree(releases_dir / version, ignore_errors=True)
    return doomed
