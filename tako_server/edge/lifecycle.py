"""The life of one exchange as a pure state object: events in, actions out (like h11).

Rules:

- :class:`ExchangeState` never touches a socket, a clock or a buffer. Each event method
  updates the state and returns the actions for the shell (its subclasses
  :class:`~.proxy.ProxyExchange` and :class:`~.exchange.Exchange`) as an ``int`` of
  :class:`Act` bits; the shell does the I/O. The shell reads these fields but only the
  methods here write them (``tests/unit/server/test_edge_import_graph.py`` checks).
- Events: the request head (the constructor), ``body``, ``end``,
  ``response_head``/``response_begin``, ``response_complete`` (from the upstream),
  ``response_end`` (any response), ``upstream_closed`` (lost early), ``failed``,
  ``spliced``, ``refuse_upgrade``, ``client_lost``; after ``FINISH`` the connection asks
  :meth:`ExchangeState.next_step`.
- An exchange is finished (``FINISH``, once) when its response is complete and either
  its request was read to the end or the connection will not be kept alive.
- Keep-alive ends on: the client's ``Connection: close``/HTTP/1.0 (constructor), a
  rejected head, a body over the cap, a response the client cannot get framed or the
  instance closes, a WebSocket request answered without ``101``, a response complete
  before the request body (a big or chunked rest is not read, a small one gets
  ``WAIT_REST``), and a refused upgrade.
- An upstream connection is reused only when the upstream allowed keep-alive and the
  request was read to its end before the response completed.
- Retry: only when the upstream connection came from the pool, sent no byte of the
  response and no request body byte was received (nothing can have been consumed).
- The flags are :class:`Act` members; the module binds them as plain ``int`` constants
  because ``IntFlag`` arithmetic is slow on the hot path.
"""

from __future__ import annotations

import enum

from .policy import RequestHead, client_response, upgrade_response


class Act(enum.IntFlag):
    """What the shell must do after an event."""

    FINISH = 1  # the exchange is over; ask next_step() what the connection does
    WAIT_REST = 2  # answered; a small request body rest gets the header deadline
    REUSE = 4  # the upstream connection goes back to the pool (else: close it)
    TOO_LARGE = 8  # the body broke the cap: drop the upstream, 413 if unanswered, close
    DISCARD = 16  # drop this body chunk (the response is complete)
    RETRY = 32  # the pooled connection was stale: connect again with the same request
    COMPLETE = 64  # a close-delimited response body ended with its connection
    FAIL = 128  # the upstream failed: answer with an error
    ABORT = 256  # the response was cut short: abort the client connection
    SPLICE_END = 512  # a spliced connection lost its upstream: close the client
    KEEP_ALIVE = 1024  # next_step: read the next request on this connection
    CLOSE = 2048  # next_step: close the connection
    LINGER = 4096  # next_step: close after reading and discarding the unread body


FINISH = Act.FINISH.value
WAIT_REST = Act.WAIT_REST.value
REUSE = Act.REUSE.value
TOO_LARGE = Act.TOO_LARGE.value
DISCARD = Act.DISCARD.value
RETRY = Act.RETRY.value
COMPLETE = Act.COMPLETE.value
FAIL = Act.FAIL.value
ABORT = Act.ABORT.value
SPLICE_END = Act.SPLICE_END.value
KEEP_ALIVE = Act.KEEP_ALIVE.value
CLOSE = Act.CLOSE.value
LINGER = Act.LINGER.value


class ExchangeState:
    """Where one request/response exchange stands (see the module rules)."""

    __slots__ = (
        "head",
        "keep_alive",
        "http11",
        "is_head",
        "request_done",
        "body_size",
        "response_started",
        "response_done",
        "chunked",
        "no_body",
        "until_close",
        "upgraded",
        "finished",
        "encoding",
    )

    def __init__(
        self,
        head: RequestHead | None,
        rejected: bool,
        keep_alive: bool,
        http11: bool,
        is_head: bool,
    ) -> None:
        """The request head arrived; ``head`` is None when its headers were refused,
        ``rejected`` when anything in it was (the edge answers it and closes)."""
        self.head = head
        self.keep_alive = keep_alive and not rejected
        self.http11 = http11
        self.is_head = is_head
        self.request_done = self.response_started = self.response_done = False
        self.finished = self.upgraded = False
        self.chunked = self.no_body = self.until_close = False
        self.body_size = self.encoding = 0

    # --- request side -------------------------------------------------------------------
    def body(self, size: int, max_body: int) -> int:
        """``size`` body bytes arrived: 0 (forward them), ``TOO_LARGE`` or ``DISCARD``."""
        self.body_size = total = self.body_size + size
        if total > max_body:
            self.keep_alive = False
            return TOO_LARGE
        return DISCARD if self.response_done else 0

    def end(self) -> int:
        """The request was read to its end."""
        self.request_done = True
        return self._finish() if self.response_done else 0

    def refuse_upgrade(self) -> None:
        """The client asked for an upgrade the edge does not pass on: answer, then close."""
        self.keep_alive = False

    def close_after(self) -> None:
        """Answer this request, then close (draining, or a client over its connection cap)."""
        self.keep_alive = False

    def has_unread_body(self) -> bool:
        """Whether request body bytes may still arrive on the connection."""
        if self.request_done:
            return False
        head = self.head
        if head is None or head.chunked:
            return True
        return (head.content_length or 0) > self.body_size

    # --- response side ------------------------------------------------------------------
    def forwards_interim(self, status: int) -> bool:
        """Whether an interim upstream response goes to the client (``100`` to HTTP/1.1)."""
        return self.http11 and status == 100

    def response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes:
        """The upstream's response head arrived: the head to write to the client."""
        self.response_started = True
        if status == 101:
            return upgrade_response(status, reason, headers)
        head = self.head
        if head is not None and head.websocket:
            self.keep_alive = False  # the client expected a switch; do not reuse
        framing = client_response(
            status,
            reason,
            headers,
            head_request=self.is_head,
            client_http11=self.http11,
            keep_alive=self.keep_alive,
            accept=head.accept if head is not None else 0,
        )
        self.chunked, self.no_body = framing.chunked, framing.no_body
        self.encoding = framing.encoding
        self.until_close = framing.until_close
        if framing.close:
            self.keep_alive = False
        return framing.head

    def response_begin(self) -> None:
        """The edge started writing its own response (an answer or a static file)."""
        self.response_started = True

    def spliced(self) -> None:
        """The upstream switched protocols: raw bytes both ways from now on."""
        self.upgraded = True

    def response_complete(self, upstream_keep_alive: bool, buffer_limit: int) -> int:
        """The upstream response ended: ``REUSE`` if its connection may be pooled (the
        upstream allows it and it got the whole request: a request read to its end was
        sent whole, since the shell forwards every body byte it reads once connected)."""
        act = REUSE if upstream_keep_alive and self.request_done else 0
        if self.request_done and not self.finished:  # the common case, without a call
            self.response_done = self.finished = True
            return act | FINISH
        if not self.request_done:
            self.keep_alive = False
        return act | self.response_end(buffer_limit)

    def response_end(self, buffer_limit: int) -> int:
        """The last byte of the response was written."""
        self.response_done = True
        act = 0
        if not self.request_done:
            head = self.head
            left = (head.content_length or 0) - self.body_size if head is not None else 0
            if head is None or head.chunked or left > buffer_limit:
                self.keep_alive = False  # do not read a large unwanted body: close instead
            else:  # a small rest may still come, but not forever (slowloris on bodies)
                act = WAIT_REST
        if self.request_done or not self.keep_alive:
            act |= self._finish()
        return act

    # --- failures -----------------------------------------------------------------------
    def upstream_closed(self, reused: bool, got_bytes: bool) -> int:
        """The upstream connection closed before the response ended."""
        if self.upgraded:
            return SPLICE_END
        if self.until_close and self.response_started:
            return COMPLETE
        if reused and not got_bytes and not self.response_started and not self.body_size:
            return RETRY
        return FAIL

    def failed(self) -> int:
        """The upstream failed or timed out: ``ABORT`` if the response started, else
        ``FAIL`` (answer with an error and close)."""
        if self.response_started:
            return ABORT
        self.keep_alive = False
        return FAIL

    def client_lost(self) -> None:
        """The client connection is gone: nothing more happens to this exchange."""
        self.finished = True

    # --- completion ---------------------------------------------------------------------
    def _finish(self) -> int:
        if self.finished:
            return 0
        self.finished = True
        return FINISH

    def next_step(self, draining: bool) -> int:
        """After ``FINISH``: ``KEEP_ALIVE``, ``CLOSE`` or ``LINGER`` for the connection."""
        if self.keep_alive and not draining:
            return KEEP_ALIVE
        return LINGER if self.has_unread_body() else CLOSE
