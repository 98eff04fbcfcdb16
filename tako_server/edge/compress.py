"""Response compression: which responses, which encoding, and the streaming encoders.

Rules:

- A proxied response is compressed when the client accepts ``br`` or ``gzip`` (q > 0;
  ``br`` preferred), its status is ``200``, it has a body, its ``Content-Type`` is
  compressible (:func:`compressible`: text, JSON, JavaScript, XML, SVG, ...), it is not
  an event stream, it carries no ``Content-Encoding`` and no ``Cache-Control:
  no-transform``, its declared length (if any) is above :data:`MIN_SIZE`, and the
  request had no ``Range``. The edge then drops ``Content-Length``, re-frames the body
  (chunked for HTTP/1.1), adds ``Content-Encoding`` and ``Vary: Accept-Encoding``, makes
  a strong ``ETag`` weak (the bytes differ from the identity response's) and drops
  ``Accept-Ranges`` (a range of the identity body must never be spliced onto these).
- Encoders stream: each upstream read is compressed and flushed at once (a streamed
  response is never held back), the tail is written when the upstream response ends.
  Levels favour speed (brotli quality 4, gzip level 5), as for any on-the-fly proxy.
- Static files are not compressed on the fly; a ``.br``/``.gz`` sibling is served
  instead when the client accepts it (:func:`.static.precompressed`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import brotli  # type: ignore[import-untyped]

GZIP = 1
BR = 2
MIN_SIZE = 1024
NAMES = {GZIP: b"gzip", BR: b"br"}
_TEXTUAL = (
    b"text/",
    b"application/json",
    b"application/javascript",
    b"application/xml",
    b"application/xhtml+xml",
    b"application/rss+xml",
    b"application/atom+xml",
    b"application/manifest+json",
    b"application/ld+json",
    b"application/wasm",
    b"image/svg+xml",
    b"font/ttf",
    b"font/otf",
    b"application/vnd.ms-fontobject",
)


def parse_accept(value: bytes) -> int:
    """The encodings (``GZIP | BR`` bits) an ``Accept-Encoding`` value allows."""
    allowed = 0
    for item in value.lower().split(b","):
        name, _, params = item.partition(b";")
        name = name.strip()
        bit = BR if name == b"br" else GZIP if name in (b"gzip", b"x-gzip") else 0
        if not bit and name == b"*":
            bit = BR | GZIP
        if bit and not _q_zero(params):
            allowed |= bit
    return allowed


def _q_zero(params: bytes) -> bool:
    for param in params.split(b";"):
        key, _, q = param.strip().partition(b"=")
        if key == b"q":
            try:
                return float(q) <= 0.0
            except ValueError:
                return True  # a malformed weight: do not guess
    return False


def compressible(content_type: bytes) -> bool:
    ctype = content_type.split(b";", 1)[0].strip().lower()
    if ctype == b"text/event-stream":
        return False
    return ctype.startswith(_TEXTUAL) or ctype.endswith((b"+json", b"+xml"))


def choose(
    accept: int, status: int, headers: Sequence[tuple[bytes, bytes]], length: bytes | None
) -> int:
    """The encoding for a response (0: none); see the module rules."""
    if not accept or status != 200:
        return 0
    if length is not None and (not length.isdigit() or int(length) <= MIN_SIZE):
        return 0
    ctype = b""
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-type":
            ctype = value
        elif lname == b"content-encoding":
            return 0
        elif lname == b"cache-control" and b"no-transform" in value.lower():
            return 0
    if not compressible(ctype):
        return 0
    return BR if accept & BR else GZIP


class Encoder:
    """A streaming encoder: :meth:`chunk` per body piece (flushed), :meth:`finish` once."""

    __slots__ = ("_br", "_gz")

    def __init__(self, kind: int) -> None:
        # lgwin 18 (256 KiB window): ~1.5 MB per live encoder instead of ~5 MB at 22
        self._br = brotli.Compressor(quality=4, lgwin=18) if kind == BR else None
        self._gz = zlib.compressobj(5, zlib.DEFLATED, 31) if kind != BR else None

    def __repr__(self) -> str:
        return f"Encoder({'br' if self._br is not None else 'gzip'})"

    def chunk(self, data: bytes) -> bytes:
        if self._br is not None:
            return bytes(self._br.process(data) + self._br.flush())
        assert self._gz is not None
        return self._gz.compress(data) + self._gz.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        if self._br is not None:
            return bytes(self._br.finish())
        assert self._gz is not None
        return self._gz.flush(zlib.Z_FINISH)
