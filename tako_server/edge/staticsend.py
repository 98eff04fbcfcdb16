"""The bytes of a static file response, and writing a large one with backpressure.

Rules: :func:`static_response` turns a resolved file into what to write; it knows nothing
of exchanges. Small files (<= :data:`INLINE_LIMIT`) go out in one write with their head;
larger ones are read in :data:`CHUNK` pieces only while the client's write buffer has
room (:meth:`StaticStream.pump` writes to a :class:`~.links.Sink` and is called again
when it drains), so memory stays bounded whatever the file size. A file that shrinks
while being sent is reported (``-1``): the caller aborts the connection, since the
announced length cannot be honoured. A file that cannot be opened, is not the file that
was checked (a path swapped, e.g. to a symlink, between the check and the open: the
opened descriptor's device and inode must match), or changed before its inline read,
falls back to the app (``None``).
"""

from __future__ import annotations

import os
from typing import BinaryIO

from .links import Sink
from .static import StaticFile, etag_matches, static_head

INLINE_LIMIT = 64 * 1024
CHUNK = 256 * 1024


def static_response(
    found: StaticFile, if_none_match: bytes, *, close: bool, head_only: bool
) -> tuple[bytes, StaticStream | None] | None:
    """``(bytes, None)`` for a complete answer, ``(head, stream)`` when the body is
    streamed, ``None`` when the app should answer instead."""
    if if_none_match and etag_matches(if_none_match.decode("latin-1"), found.etag):
        return static_head(found, not_modified=True, close=close), None
    head = static_head(found, not_modified=False, close=close)
    if head_only:
        return head, None
    try:
        handle = open(found.path, "rb")  # noqa: SIM115 - closed by StaticStream
    except OSError:
        return None
    st = os.fstat(handle.fileno())
    if (st.st_dev, st.st_ino) != found.identity:  # swapped since it was checked
        handle.close()
        return None
    if found.size <= INLINE_LIMIT:
        with handle:
            body = handle.read(found.size + 1)
        if len(body) != found.size:
            return None  # changed under us: let the app answer
        return head + body, None
    return head, StaticStream(found, handle)


class StaticStream:
    """The rest of a large file, pumped while the client can take it."""

    __slots__ = ("file", "handle", "left")

    def __init__(self, file: StaticFile, handle: BinaryIO) -> None:
        self.file = file
        self.handle = handle
        self.left = file.size

    def __repr__(self) -> str:
        return f"StaticStream({self.file.path}, left={self.left})"

    def pump(self, out: Sink) -> int:
        """Write while ``out`` takes it: 1 = all sent, 0 = wait for room, -1 = shrank."""
        while self.left > 0 and not out.write_paused and not out.closed:
            chunk = self.handle.read(min(CHUNK, self.left))
            if not chunk:
                self.close()
                return -1
            self.left -= len(chunk)
            out.write(chunk)
        if self.left == 0:
            self.close()
            return 1
        return 0

    def close(self) -> None:
        self.handle.close()
