"""Static files from a release's ``public/`` directory (resolution and headers; no sockets).

Rules:

- Only ``GET``/``HEAD`` and paths whose last segment has an extension (a ``.`` that is
  not the last character) are candidates; the request path is tried first, then the
  path with the route prefix stripped (``/app/*`` serves ``/app/x.js`` from ``x.js``).
- The path is percent-decoded once; a ``..`` segment, a NUL or a backslash (raw or
  encoded) is refused with 400. The resolved file (symlinks followed) must stay under
  the resolved public directory, else 400. Directories are never listed, missing files
  fall through to the app.
- ``ETag`` is strong, from size and ``mtime_ns``; ``If-None-Match`` (list or ``*``)
  gives ``304``. ``Cache-Control: public, no-cache`` (revalidate with the ETag: a new
  deploy is seen at once). ``HEAD`` gets the headers only.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote_to_bytes

from .compress import BR, GZIP, compressible
from .policy import Rejected

CACHE_CONTROL = "public, no-cache"
CONTENT_TYPES: dict[str, str] = {
    "html": "text/html; charset=utf-8",
    "htm": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "mjs": "text/javascript; charset=utf-8",
    "json": "application/json",
    "map": "application/json",
    "webmanifest": "application/manifest+json",
    "txt": "text/plain; charset=utf-8",
    "xml": "application/xml",
    "csv": "text/csv; charset=utf-8",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "svg": "image/svg+xml",
    "ico": "image/x-icon",
    "webp": "image/webp",
    "avif": "image/avif",
    "woff": "font/woff",
    "woff2": "font/woff2",
    "ttf": "font/ttf",
    "otf": "font/otf",
    "eot": "application/vnd.ms-fontobject",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "pdf": "application/pdf",
    "wasm": "application/wasm",
    "zip": "application/zip",
    "gz": "application/gzip",
}
DEFAULT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class StaticFile:
    """A file the edge will serve: where it is and its validators."""

    path: Path
    size: int
    etag: str
    content_type: str
    identity: tuple[int, int] = (0, 0)  # (st_dev, st_ino) checked: the file to open
    encoding: str = ""  # "br"/"gzip" for a precompressed sibling served in its place
    vary: bool = False  # the answer depends on Accept-Encoding (a compressible type)


def has_extension(path: str) -> bool:
    """Whether the last segment of ``path`` looks like a file name with an extension."""
    last = path.rsplit("/", 1)[-1]
    dot = last.rfind(".")
    return dot != -1 and dot != len(last) - 1


def content_type_for(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return CONTENT_TYPES.get(ext, DEFAULT_TYPE)


def etag_for(size: int, mtime_ns: int) -> str:
    """Strong validator from size and modification time."""
    return f'"{size:x}-{mtime_ns:x}"'


def _relative_parts(path: str) -> list[str]:
    raw = unquote_to_bytes(path)
    if b"\x00" in raw or b"\\" in raw:
        raise Rejected(400, "NUL or backslash in a static path")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(400, "static path is not UTF-8") from exc
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Rejected(400, "'..' in a static path")
    return parts


def _lookup(root: Path, path: str) -> StaticFile | None:
    parts = _relative_parts(path)
    if not parts:
        return None
    candidate = root.joinpath(*parts)
    try:
        real = Path(os.path.realpath(candidate))
        st = real.stat()
    except (OSError, ValueError):
        return None
    if real != root and root not in real.parents:
        raise Rejected(400, "static path leaves the public directory")
    if not stat.S_ISREG(st.st_mode):
        return None
    return StaticFile(
        real,
        st.st_size,
        etag_for(st.st_size, st.st_mtime_ns),
        content_type_for(real.name),
        (st.st_dev, st.st_ino),
    )


def resolve_static(public_dir: Path, path: str, prefix: str = "") -> StaticFile | None:
    """The file to serve for ``path`` (no query) under ``public_dir``, or None (-> the app).

    Raises :class:`Rejected` (400) for traversal attempts; ``prefix`` is the matched route's
    path prefix (``/app`` for ``example.com/app/*``).
    """
    if not has_extension(path):
        return None
    try:
        root = Path(os.path.realpath(public_dir))
    except (OSError, ValueError):
        return None
    found = _lookup(root, path)
    if found is None and prefix and path.startswith(prefix + "/"):
        found = _lookup(root, path[len(prefix) :])
    return found


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison of an ``If-None-Match`` list against ``etag``."""
    value = if_none_match.strip()
    if value == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in value.split(","))


def static_head(file: StaticFile, *, not_modified: bool, close: bool) -> bytes:
    """Response head for ``file`` (200 with length, or 304 with validators only)."""
    lines = [
        "HTTP/1.1 304 Not Modified" if not_modified else "HTTP/1.1 200 OK",
        f"ETag: {file.etag}",
        f"Cache-Control: {CACHE_CONTROL}",
    ]
    if file.vary:
        lines.append("Vary: Accept-Encoding")
    if not not_modified:
        lines += [f"Content-Type: {file.content_type}", f"Content-Length: {file.size}"]
        if file.encoding:
            lines.append(f"Content-Encoding: {file.encoding}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_SIBLINGS = ((BR, ".br", "br"), (GZIP, ".gz", "gzip"))


def precompressed(found: StaticFile, accept: int) -> StaticFile:
    """The ``.br``/``.gz`` sibling of ``found`` to serve instead when the client accepts
    it (brotli first), else ``found`` itself; both are marked ``vary`` for a
    compressible type. A sibling is a regular file next to ``found`` (not a link out)."""
    if not compressible(found.content_type.encode("latin-1")):
        return found
    for bit, suffix, name in _SIBLINGS:
        if not accept & bit:
            continue
        path = found.path.with_name(found.path.name + suffix)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            etag = f'"{found.etag.strip(chr(34))}-{name}"'
            return StaticFile(
                path, st.st_size, etag, found.content_type, (st.st_dev, st.st_ino), name, True
            )
    return replace(found, vary=True)
