"""Safe extraction of ``.tar.zst`` archives, the one helper both programs use.

The client extracts its own source bundles into a build workspace; the server extracts
uploaded artifacts into release directories. Both go through :func:`extract_tar_zst`.

Rules (those of tarfile's ``data`` filter, applied by hand so they hold on every Python
from 3.11.2 on, where 3.11.0–3.11.3 have no extraction filters at all):

- refused, naming the member: absolute paths, NUL bytes, ``..`` components, symlinks whose
  target leaves the tree, hard links that do not point to an earlier member, devices,
  FIFOs and other special files, and a member written through a link leading outside;
- modes lose setuid, setgid, sticky and group/other write bits; files stay readable and
  writable by the owner, directories traversable; owners become the extracting user;
- a final walk checks that every symlink under ``dest`` resolves inside it (chains too).

``dest`` must not exist: on any refusal or error it is removed again, so a refused archive
leaves nothing behind. Where tarfile has the ``data`` filter it is applied as well.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
from pathlib import Path
from typing import BinaryIO

import zstandard

from tako_common.errors import TakoError


class ArchiveError(TakoError):
    """An archive could not be read (not a .tar.zst, truncated, corrupt)."""

    code = "artifact"


class UnsafeArchiveError(ArchiveError):
    """An archive member broke an extraction rule; nothing was extracted."""

    code = "unsafe_archive"


_HAS_FILTER = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
)


def check_member(member: tarfile.TarInfo, seen: set[str]) -> str:
    """Validate one archive member; return its normalised name or raise UnsafeArchiveError.

    ``seen`` holds the normalised names of earlier members (hard links may only point
    to those).
    """
    name = member.name
    if name.startswith("/") or "\x00" in name:
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path or a NUL byte")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'")
    norm = "/".join(parts)
    if member.issym():
        target = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(norm), target))
        if target.startswith("/") or "\x00" in target or resolved == ".." or (
            resolved.startswith("../")
        ):
            raise UnsafeArchiveError(
                f"archive symlink {name!r} -> {target!r} points outside the extracted tree"
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


def sanitise(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the ``data`` filter does to modes and owners (in place; returned for chaining)."""
    member.mode &= 0o755
    if member.isreg() or member.islnk():
        member.mode |= 0o600
    elif member.isdir():
        member.mode |= 0o700
    member.uid, member.gid = os.getuid(), os.getgid()
    member.uname = member.gname = ""
    return member


def extract_tar_zst(archive: Path, dest: Path) -> int:
    """Extract ``archive`` into the new directory ``dest``; return the member count.

    Raises :class:`UnsafeArchiveError` for a refused member and :class:`ArchiveError` for
    an unreadable archive; either way ``dest`` does not exist afterwards.
    """
    dest.mkdir(mode=0o755)
    try:
        count = _extract_members(archive, dest)
        check_links_inside(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return count


def extract_tar_stream(raw: BinaryIO, dest: Path, label: str) -> int:
    """Extract an uncompressed tar stream (same rules) into the new directory ``dest``.

    ``label`` names the archive in errors; on any refusal or error ``dest`` is removed.
    """
    dest.mkdir(mode=0o700)
    try:
        try:
            count = _extract_from(raw, dest)
        except _FILTER_ERRORS as exc:
            raise UnsafeArchiveError(f"archive refused: {exc}") from exc
        except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as exc:
            if isinstance(exc, UnsafeArchiveError):
                raise
            raise ArchiveError(f"{label} is not a valid archive: {exc}") from exc
        check_links_inside(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return count


def _extract_members(archive: Path, dest: Path) -> int:
    try:
        with archive.open("rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as raw:
            return _extract_from(raw, dest)
    except _FILTER_ERRORS as exc:
        raise UnsafeArchiveError(f"archive refused: {exc}") from exc
    except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as exc:
        if isinstance(exc, UnsafeArchiveError):
            raise
        raise ArchiveError(f"{archive.name} is not a valid .tar.zst archive: {exc}") from exc


def _extract_from(raw: BinaryIO, dest: Path) -> int:
    seen: set[str] = set()
    count = 0
    with tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            norm = check_member(member, seen)
            if norm:
                _check_parent_inside(dest, norm)
                _extract_one(tar, member, dest)
            seen.add(norm)
            count += 1
    return count


def _extract_one(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    if _HAS_FILTER:
        tar.extract(member, dest, filter="data")
    else:
        tar.extract(sanitise(member), dest, set_attrs=not member.issym())


def _check_parent_inside(dest: Path, norm: str) -> None:
    """A member must not be written through a symlink that leads outside ``dest``."""
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(root, norm))
    parent = os.path.realpath(os.path.join(root, posixpath.dirname(norm)))
    for path in (parent, target):
        if path != root and not path.startswith(root + os.sep):
            raise UnsafeArchiveError(
                f"archive member {norm!r} would be written through a link outside the tree"
            )


def check_links_inside(dest: Path) -> None:
    """Every symlink under ``dest`` resolves inside it (chains included)."""
    root = dest.resolve()
    for dirpath, dirnames, filenames in os.walk(dest):
        for entry in [*dirnames, *filenames]:
            path = Path(dirpath) / entry
            if path.is_symlink():
                target = path.resolve()
                if target != root and root not in target.parents:
                    rel = path.relative_to(dest)
                    raise UnsafeArchiveError(
                        f"archive symlink {str(rel)!r} resolves outside the extracted tree"
                    )
