"""The narrow interfaces between the edge's I/O shells, and the read-pause reasons.

Rules:

- The shells (:mod:`.http1` = the client connection, :mod:`.exchange` = one request on
  it, :mod:`.upstream` = one connection to an instance, :mod:`.runtime` = the process)
  know each other only through the :class:`typing.Protocol` classes below: a shell calls
  another's methods, never writes its fields or its transport. Type hints name these
  interfaces, so no edge module imports another shell just for typing and the module
  graph stays acyclic (``tests/unit/server/test_edge_import_graph.py``).
- :class:`Pause` names why a client connection stopped reading; the connection keeps a
  set of them (an ``int`` on the hot path) and reads again when the set is empty.
- This module holds no logic and imports nothing from the edge.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol


class Pause(enum.IntFlag):
    """Why a client connection does not read (any set bit pauses it)."""

    UPSTREAM_FULL = 1  # the upstream socket's write buffer is full
    BODY_BUFFERED = 2  # request body buffered past the limit, no upstream yet
    PIPELINE_FULL = 4  # too many pipelined requests wait for their turn
    CLIENT_NOT_READING = 8  # answers wait until the client reads what was written


class Sink(Protocol):
    """Where response bytes go: the client connection, as an upstream or a static stream
    sees it (writes, batching per upstream read, and pausing the client's reading)."""

    closed: bool
    write_paused: bool

    def write(self, data: bytes) -> None: ...

    def cork(self) -> None: ...

    def flush(self) -> None: ...

    def block_reading(self, reason: int) -> None: ...

    def unblock_reading(self, reason: int) -> None: ...


class ClientLink(Sink, Protocol):
    """What an exchange may do with its client connection."""

    is_tls: bool
    proto: bytes
    peer_ip: bytes
    over_limit: bool

    def set_deadline(self, when: float) -> None: ...

    def abort(self) -> None: ...

    def abort_after_write(self) -> None: ...

    def exchange_done(self, ex: Any) -> None: ...  # the exchange that finished (by identity)

    def start_splice(self, conn: UpstreamLink, early: bytes) -> None: ...


class UpstreamLink(Protocol):
    """What an exchange may do with the upstream connection serving it."""

    reused: bool
    got_bytes: bool

    def start(self, ex: ExchangeLink, out: Sink, head: bytes, head_request: bool) -> None: ...

    def write(self, data: bytes) -> None: ...

    def set_reading(self, on: bool) -> None: ...

    def release(self) -> None: ...  # back to the pool: the exchange is done with it

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def address(self) -> tuple[str, int]: ...  # the backend's (host, port)


class ExchangeLink(Protocol):
    """The events an upstream connection hands to the exchange it serves."""

    def upstream_interim(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None: ...

    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None: ...

    def upstream_body(self, data: bytes) -> None: ...

    def upstream_complete(self, conn: UpstreamLink, keep_alive: bool) -> None: ...

    def upstream_spliced(self, rest: bytes) -> None: ...

    def upstream_failed(self, conn: UpstreamLink, detail: str) -> None: ...

    def upstream_lost(self, conn: UpstreamLink, exc: Exception | None) -> None: ...


class PoolWaiter(Protocol):
    """A request in line for an upstream connection: the pool calls back, in the same
    event-loop callback that released or opened the connection."""

    def upstream_ready(self, conn: UpstreamLink) -> bool: ...  # False: no longer wanted
    def upstream_unavailable(self, exc: Exception) -> None: ...  # connect failed / timed out


class Connection(Protocol):
    """What the runtime's sweeper and drain do with a client connection."""

    deadline: float

    def on_deadline(self) -> None: ...

    def set_deadline(self, when: float) -> None: ...

    def close_if_idle(self, fresh: bool = False) -> None: ...

    def in_flight(self) -> bool: ...

    def upgraded_to(self) -> tuple[str, int] | None: ...

    def end_upgraded(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class FinishedExchange(Protocol):
    """What the runtime reads of an exchange it counts (metrics, access log)."""

    key: str | None
    method: bytes
    path: str
    query: bytes
    status: int
    started: float
    sent: int
    upstream_at: float
    cold_wait: float
    request_id: bytes
    head: Any  # policy.RequestHead | None
    client: ClientLink
    client_ip: bytes  # the client address as resolved by the app's source_ip
