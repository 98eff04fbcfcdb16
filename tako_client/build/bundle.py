"""The versioned source bundle: source hash, git facts, release version and archives.

Rules:

- ``source_hash`` = sha256 over, per file in sorted order: relpath bytes, NUL, then the
  file bytes, or ``symlink:`` + link target for a symlink (never followed);
- git facts: ``git rev-parse --short HEAD`` (None without a commit), dirty = ``git status
  --porcelain`` lists a path that is part of the source view (forced excludes such as
  ``.tako/`` never make a tree dirty), subject of HEAD;
- version = :func:`tako_common.names.release_version` (``{commit}``, ``{commit}_{hash8}``,
  ``nogit_{hash8}``);
- archives are deterministic: members sorted, mtime fixed, uid/gid 0 with empty owner
  names, file modes kept, symlinks stored as links; compressed with zstandard level 3.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from tako_client.build.plan import BuildError
from tako_client.build.sources import SourceTree, is_forced_excluded
from tako_common import archive as archive_mod
from tako_common.names import release_version

ZSTD_LEVEL = 3
FIXED_MTIME = 0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class GitInfo:
    """Facts about the source's git state; all None/False when there is no git."""

    commit: str | None = None
    dirty: bool = False
    subject: str | None = None


@dataclass(frozen=True)
class SourceBundle:
    """A written source archive and the version derived from it."""

    path: Path
    version: str
    source_hash: str
    git: GitInfo
    tree: SourceTree


def source_hash(root: Path, files: Iterable[str]) -> str:
    """sha256 hex over the sorted files' relpaths and contents (or symlink targets)."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        path = root / rel
        digest.update(rel.encode("utf-8", errors="surrogateescape"))
        digest.update(b"\0")
        if path.is_symlink():
            digest.update(b"symlink:" + os.fsencode(os.readlink(path)))
            continue
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def git_info(root: Path) -> GitInfo:
    """Commit short hash, dirty flag and HEAD subject of the repo at ``root``."""
    commit = _git(root, "rev-parse", "--short", "HEAD")
    if commit is None:
        return GitInfo()
    status = _git(root, "status", "--porcelain", "-z", "--untracked-files=all", strip=False) or ""
    dirty = any(_porcelain_path_counts(entry) for entry in status.split("\0") if entry)
    subject = _git(root, "log", "-1", "--format=%s")
    return GitInfo(commit=commit, dirty=dirty, subject=subject)


def _porcelain_path_counts(entry: str) -> bool:
    # "XY path" entries; rename sources follow as their own NUL-separated chunk.
    path = entry[3:] if len(entry) > 3 and entry[2] == " " else entry
    return not is_forced_excluded(path.rstrip("/"))


def _git(root: Path, *args: str, strip: bool = True) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    if proc.returncode != 0:
        return None
    out = proc.stdout.strip() if strip else proc.stdout
    return out or None


def write_tar_zst(dest: Path, root: Path, files: Iterable[str], *, arc_prefix: str = "") -> None:
    """Write a deterministic ``.tar.zst`` of ``files`` (relative to ``root``) atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as raw:
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
            with compressor.stream_writer(raw, closefd=False) as zst:
                with tarfile.open(fileobj=zst, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                    for rel in sorted(files):
                        _add_member(tar, root / rel, arc_prefix + rel)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _add_member(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    st = path.lstat()
    info = tarfile.TarInfo(arcname)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = st.st_mode & 0o7777
    if path.is_symlink():
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        tar.addfile(info)
        return
    info.size = st.st_size
    with path.open("rb") as fh:
        tar.addfile(info, fh)


def extract_tar_zst(archive: Path, dest: Path) -> None:
    """Extract a ``.tar.zst`` into the new directory ``dest`` with the shared safe extractor."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        archive_mod.extract_tar_zst(archive, dest)
    except archive_mod.ArchiveError as exc:
        raise BuildError(f"cannot extract archive {archive}: {exc}") from exc


def create_source_bundle(tree: SourceTree, artifacts_dir: Path) -> SourceBundle:
    """Hash the source, derive the version and write ``{version}-source.tar.zst``."""
    digest = source_hash(tree.root, tree.files)
    git = git_info(tree.root) if tree.is_git else GitInfo()
    version = release_version(git.commit, git.dirty, digest)
    path = artifacts_dir / f"{version}-source.tar.zst"
    write_tar_zst(path, tree.root, tree.files)
    return SourceBundle(path=path, version=version, source_hash=digest, git=git, tree=tree)


def list_tar_zst(archive: Path) -> list[tarfile.TarInfo]:
    """Members of a ``.tar.zst`` (for tests and diagnostics)."""
    data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive.read_bytes())).read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()
