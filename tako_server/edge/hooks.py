"""The one interface between the edge and the rest of the server, and its cold-start errors.

Rules:

- :class:`EdgeHooks` is everything the edge asks of the rest of the server: start an
  app's instance for waiting requests, answer an ACME challenge, write a line to an
  app's log, take in-flight reports. Three implementations satisfy it: the daemon's
  (:mod:`tako_server.provider`, over the supervisor and the challenge store), a worker's
  (:class:`~.workers.WorkerHooks`, over the channel to its main process) and the tests'.
  What the edge routes with is not asked for: it is pushed
  (:meth:`~.server.Edge.update`).
- A cold start that gives no backends raises :class:`ColdStartError` with one of the
  :class:`ColdStartKind` members; the edge answers 503 + ``Retry-After`` (rejected),
  502 (failed) or 504 (timeout). Implementations translate their own errors into it
  (the edge never imports the supervisor); any other exception answers 502.
- ``report`` gets, per app key, instance id -> requests in flight, from the edge process
  named ``reporter`` (``edge`` in-process, ``edge-{index}`` for a worker); it must be
  cheap and must not raise (the edge logs and drops a failure).
- Nothing here does I/O; a worker imports this module (no server-side imports).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol

from tako_common.errors import TakoError

from .snapshot import Backend

__all__ = ["ColdStartError", "ColdStartKind", "EdgeHooks"]


class ColdStartKind(enum.Enum):
    """Why a cold start gave no backends (the value is the wire name)."""

    REJECTED = "rejected"  # the app's queue of waiting requests is full: 503, Retry-After
    FAILED = "failed"  # the instance started for the waiting requests failed: 502
    TIMEOUT = "timeout"  # no instance became ready in time: 504


class ColdStartError(TakoError):
    """A cold start that did not give backends (code ``cold_start_{kind}``)."""

    code = "cold_start"

    def __init__(self, kind: ColdStartKind, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, code=f"cold_start_{kind.value}")
        self.kind = kind


class EdgeHooks(Protocol):
    """What an edge process asks of the rest of the server."""

    async def cold_start(self, key: str) -> Sequence[Backend]:
        """Backends of ``key`` once one is ready; raises :class:`ColdStartError`."""
        ...

    async def challenge(self, token: str) -> str | None:
        """The key authorization of an ACME HTTP-01 ``token`` (None: unknown, 404)."""
        ...

    def app_log(self, key: str, line: str) -> None:
        """Append an edge line (``edge: 502 for /x: ...``) to the app's log."""
        ...

    def report(self, reporter: str, in_flight: Mapping[str, Mapping[int, int]]) -> None:
        """In-flight requests per app key and instance id, seen by ``reporter``."""
        ...
