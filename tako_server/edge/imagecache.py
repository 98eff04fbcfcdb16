"""The image optimizer's disk cache: one directory per app, a size cap, validators.

Rules:

- One file per result, ``{key}.img``: a JSON header line (content type, ETag, expiry,
  ``Cache-Control``) then the encoded bytes. Written to a temporary name and renamed,
  so a reader (another worker process) never sees half a file.
- Synchronous file I/O: :mod:`.images` calls every method through a thread, never on the
  event loop.
- The ETag is strong, from the result's bytes (:func:`etag_of`): a new source gives a new
  tag, the same bytes keep it (across processes and restarts).
- An expired, unreadable or malformed entry is a miss (a broken file is removed).
  Sources that are the app's own ``public/`` files never expire (their validator is in
  the key); fetched ones expire after the time their response allowed (at least
  :data:`MIN_TTL`, at most :data:`MAX_TTL`, :data:`DEFAULT_TTL` without ``max-age``).
- Size cap (:data:`CACHE_CAP` per app): after a write pushes the directory past it, the
  least recently used entries (a hit touches its file) are removed down to 80 %.
  Results above :data:`MAX_ENTRY` are served but not kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

CACHE_CAP = 256 * 1024 * 1024
MAX_ENTRY = 16 * 1024 * 1024
MIN_TTL = 60
DEFAULT_TTL = 3600
MAX_TTL = 7 * 24 * 3600
_HEADER_LIMIT = 4096
SUFFIX = ".img"

__all__ = ["CachedImage", "ImageCache", "etag_of", "ttl_of"]


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def ttl_of(cache_control: str | None) -> int | None:
    """Seconds a fetched source may be kept (None: ``no-store``/``private``/``no-cache``)."""
    if cache_control is None:
        return DEFAULT_TTL
    max_age = DEFAULT_TTL
    for part in cache_control.lower().split(","):
        name, _, value = part.strip().partition("=")
        if name in ("no-store", "private", "no-cache"):
            return None
        if name in ("max-age", "s-maxage") and value.strip().isdigit():
            max_age = int(value.strip())
    return max(MIN_TTL, min(MAX_TTL, max_age))


@dataclass(frozen=True, slots=True)
class CachedImage:
    """A result as served: bytes and the headers that describe them."""

    data: bytes
    content_type: str
    etag: str
    cache_control: str
    expires: float | None = None  # unix time; None: never (a file source)


class ImageCache:
    """The cache directory of one app (see the module rules)."""

    def __init__(self, directory: Path, cap: int = CACHE_CAP) -> None:
        self.directory = directory
        self.cap = cap
        self._size: int | None = None  # this process's running estimate

    def __repr__(self) -> str:
        return f"ImageCache({str(self.directory)!r}, cap={self.cap}, size~{self._size})"

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def get(self, key: str, now: float) -> CachedImage | None:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                header = json.loads(handle.readline(_HEADER_LIMIT))
                data = handle.read()
            entry = CachedImage(
                data,
                str(header["type"]),
                str(header["etag"]),
                str(header["cache_control"]),
                None if header["expires"] is None else float(header["expires"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            return None
        if entry.expires is not None and entry.expires <= now:
            return None
        if etag_of(entry.data) != entry.etag:  # truncated or changed on disk
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # least recently *used* is what the cap removes first
        return entry

    def put(self, key: str, entry: CachedImage) -> bool:
        """Store ``entry``; False when it is too large to keep."""
        if len(entry.data) > MAX_ENTRY:
            return False
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        header = {
            "type": entry.content_type,
            "etag": entry.etag,
            "cache_control": entry.cache_control,
            "expires": entry.expires,
        }
        blob = json.dumps(header).encode() + b"\n" + entry.data
        temp = self.directory / f".{key}.{secrets.token_hex(4)}.tmp"
        try:
            temp.write_bytes(blob)
            os.replace(temp, self._path(key))
        finally:
            temp.unlink(missing_ok=True)
        if self._size is None:
            self._size = self.usage()
        else:
            self._size += len(blob)
        if self._size > self.cap:
            self._size = self.prune(int(self.cap * 0.8))
        return True

    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        try:
            scan = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        for item in scan:
            if not item.name.endswith(SUFFIX):
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            found.append((st.st_mtime, st.st_size, Path(item.path)))
        return found

    def usage(self) -> int:
        """Bytes the entries take now."""
        return sum(size for _, size, _ in self._entries())

    def prune(self, target: int) -> int:
        """Remove the least recently used entries until at most ``target`` bytes remain."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= target:
                break
            path.unlink(missing_ok=True)
            total -= size
        return total
