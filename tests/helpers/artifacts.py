"""Build ``.tar.zst`` release artifacts for tests and place them in a server's incoming dir.

``tar_zst_from_dir(src)`` packs a directory the way the client does (paths relative to
``src``); ``tar_zst_from_entries(entries)`` builds hand-made (also malicious) archives;
``place_artifact(data, incoming)`` writes ``{sha256}.tar.zst`` and returns its name and
digest.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard


@dataclass(frozen=True)
class Entry:
    """One archive member: ``kind`` is file, dir, symlink, hardlink or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def _compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(raw)


def tar_zst_from_dir(src: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(src.rglob("*")):
            if "node_modules" in path.parts or "__pycache__" in path.parts or ".venv" in path.parts:
                continue
            tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
    return _compress(buf.getvalue())


def tar_zst_from_entries(entries: list[Entry]) -> bytes:
    kinds = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
        "chr": tarfile.CHRTYPE,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = kinds[entry.kind]
            info.mode = entry.mode
            info.linkname = entry.target
            if entry.kind == "file":
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    return _compress(buf.getvalue())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def place_artifact(data: bytes, incoming: Path) -> tuple[str, str]:
    """Write ``incoming/{sha256}.tar.zst``; return ``(file name, sha256)``."""
    digest = sha256_hex(data)
    incoming.mkdir(parents=True, exist_ok=True)
    name = f"{digest}.tar.zst"
    (incoming / name).write_bytes(data)
    return name, digest
