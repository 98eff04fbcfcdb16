"""Writing a static file to a client connection with backpressure.

Rules: small files (<= :data:`INLINE_LIMIT`) go out in one write with their head; larger
ones are read in :data:`CHUNK` pieces only while the client's write buffer has room
(the connection calls :meth:`StaticStream.pump` again when it drains), so memory stays
bounded whatever the file size. A file that shrinks while being sent aborts the
connection (the announced length cannot be honoured).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .static import StaticFile, etag_matches, resolve_static, static_head

if TYPE_CHECKING:
    from .exchange import Exchange

INLINE_LIMIT = 64 * 1024
CHUNK = 256 * 1024


def serve_static(ex: Exchange, public_dir: Path, path: str, prefix: str) -> bool:
    """Answer ``ex`` from ``public_dir`` if a file matches; False means "ask the app".

    Raises :class:`~.policy.Rejected` (400) for traversal attempts.
    """
    found = resolve_static(public_dir, path, prefix)
    if found is None:
        return False
    close = not ex.keep_alive
    inm = ex.head.if_none_match if ex.head is not None else b""
    if inm and etag_matches(inm.decode("latin-1"), found.etag):
        ex.respond(static_head(found, not_modified=True, close=close))
        return True
    head = static_head(found, not_modified=False, close=close)
    if ex.is_head:
        ex.respond(head)
        return True
    try:
        handle = open(found.path, "rb")  # noqa: SIM115 - closed by StaticStream
    except OSError:
        return False
    if found.size <= INLINE_LIMIT:
        with handle:
            body = handle.read(found.size + 1)
        if len(body) != found.size:
            return False  # changed under us: let the app answer
        ex.respond(head + body)
        return True
    ex.response_started = True
    ex.client.set_deadline(0.0)
    ex.client.write(head)
    ex.stream = StaticStream(ex, found, handle)
    ex.stream.pump()
    return True


class StaticStream:
    """The rest of a large file, pumped while the client can take it."""

    __slots__ = ("ex", "file", "handle", "left")

    def __init__(self, ex: Exchange, file: StaticFile, handle: BinaryIO) -> None:
        self.ex = ex
        self.file = file
        self.handle = handle
        self.left = file.size

    def __repr__(self) -> str:
        return f"StaticStream({self.file.path}, left={self.left})"

    def pump(self) -> None:
        client = self.ex.client
        while self.left > 0 and not client.write_paused and not client.closed:
            chunk = self.handle.read(min(CHUNK, self.left))
            if not chunk:
                self.close()
                client.abort()
                return
            self.left -= len(chunk)
            client.write(chunk)
        if self.left == 0:
            self.close()
            self.ex.respond_done()

    def close(self) -> None:
        self.handle.close()
