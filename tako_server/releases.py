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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tako_common.archive import ArchiveError, UnsafeArchiveError, extract_tar_zst
from tako_common.errors import ValidationError
from tako_common.layout import ServerLayout

KEEP_RELEASES = 5
MAX_RELEASE_AGE = 30 * 24 * 3600
APP_JSON = "app.json"
_CHUNK = 1024 * 1024


# One error tree for archives on both sides: an unreadable artifact, a refused member.
ArtifactError = ArchiveError


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


def extract_archive(archive: Path, dest: Path) -> int:
    """Extract a ``.tar.zst`` into the new directory ``dest`` (see :mod:`tako_common.archive`)."""
    return extract_tar_zst(archive, dest)


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
