"""ExchangeState playbooks: events in, actions out; no sockets, no clock, no buffers.

Each test plays what the shells would report (request head, body, end, upstream head /
complete / lost, client lost) and checks the actions (keep alive, finish, retry, close,
...) the state hands back.
"""

from __future__ import annotations

import pytest

from tako_server.edge.lifecycle import Act, ExchangeState
from tako_server.edge.policy import inspect_request

LIMIT = 1024  # buffer_limit
MAX_BODY = 4096
HOST = (b"Host", b"app.test")
LENGTH_2 = [(b"Content-Length", b"2")]
NOTHING = Act(0)


def exchange(
    method: bytes = b"GET",
    *headers: tuple[bytes, bytes],
    keep_alive: bool = True,
    http11: bool = True,
) -> ExchangeState:
    """The state right after a request head (``keep_alive`` as httptools reports it)."""
    head = inspect_request([HOST, *headers], http11)
    return ExchangeState(head, False, keep_alive, http11, method == b"HEAD")


def act(value: int) -> Act:
    return Act(value)


def proxied_ok(ex: ExchangeState, *, upstream_keep_alive: bool = True) -> Act:
    """A complete ``200`` with a length from the upstream: the final actions."""
    ex.response_head(200, b"OK", LENGTH_2)
    return act(ex.response_complete(upstream_keep_alive, LIMIT))


# --- keep-alive and close -------------------------------------------------------------------
def test_keep_alive_after_a_complete_response() -> None:
    ex = exchange()
    assert act(ex.end()) == NOTHING  # GET: the request ends at its head
    head = ex.response_head(200, b"OK", LENGTH_2)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" not in head
    assert act(ex.response_complete(True, LIMIT)) == Act.REUSE | Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.KEEP_ALIVE


def test_request_ending_after_the_response_finishes_then() -> None:
    ex = exchange(b"POST", (b"Content-Length", b"3"))
    assert act(ex.body(3, MAX_BODY)) == NOTHING
    ex.response_head(201, b"Created", LENGTH_2)
    # the upstream answered before the edge read the request's end: not pooled (the
    # end is still due: it gets the header deadline, on a connection that will close)
    assert act(ex.response_complete(True, LIMIT)) == Act.WAIT_REST | Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.CLOSE  # whole body read: no linger


def test_client_connection_close_closes_after_the_response() -> None:
    ex = exchange(b"GET", (b"Connection", b"close"), keep_alive=False)
    ex.end()
    head = ex.response_head(200, b"OK", LENGTH_2)
    assert head.endswith(b"Connection: close\r\n\r\n")
    # the upstream connection is still good for the pool
    assert act(ex.response_complete(True, LIMIT)) == Act.REUSE | Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.CLOSE


def test_http10_without_keep_alive_closes() -> None:
    ex = exchange(b"GET", keep_alive=False, http11=False)
    ex.end()
    head = ex.response_head(200, b"OK", [])  # no length: close-delimited for HTTP/1.0
    assert head.endswith(b"Connection: close\r\n\r\n") and b"chunked" not in head
    assert ex.until_close
    assert act(ex.response_complete(False, LIMIT)) == Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.CLOSE


def test_http10_keep_alive_is_lost_when_the_body_has_no_length() -> None:
    ex = exchange(b"GET", (b"Connection", b"keep-alive"), http11=False)
    ex.end()
    ex.response_head(200, b"OK", [(b"Transfer-Encoding", b"chunked")])
    assert not ex.keep_alive and not ex.chunked  # HTTP/1.0 cannot take chunks
    ex.response_complete(True, LIMIT)
    assert act(ex.next_step(draining=False)) == Act.CLOSE


def test_http11_response_without_length_is_rechunked_and_kept_alive() -> None:
    ex = exchange()
    ex.end()
    head = ex.response_head(200, b"OK", [(b"Transfer-Encoding", b"chunked")])
    assert b"Transfer-Encoding: chunked" in head and ex.chunked and not ex.until_close
    assert act(ex.response_complete(True, LIMIT)) == Act.REUSE | Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.KEEP_ALIVE


def test_draining_closes_a_kept_alive_connection() -> None:
    ex = exchange()
    ex.end()
    proxied_ok(ex)
    assert act(ex.next_step(draining=True)) == Act.CLOSE


def test_head_response_has_no_body() -> None:
    ex = exchange(b"HEAD")
    ex.end()
    ex.response_head(200, b"OK", [(b"Content-Length", b"1000")])
    assert ex.no_body
    assert act(ex.response_complete(True, LIMIT)) == Act.REUSE | Act.FINISH


def test_finish_is_reported_once() -> None:
    ex = exchange()
    ex.end()
    assert act(proxied_ok(ex)) == Act.REUSE | Act.FINISH
    assert act(ex.end()) == NOTHING
    assert act(ex.response_end(LIMIT)) == NOTHING


# --- responses before the request body ended ------------------------------------------
def test_early_answer_waits_for_a_small_body_rest_then_keeps_alive() -> None:
    ex = exchange(b"POST", (b"Content-Length", b"100"))
    ex.body(10, MAX_BODY)
    ex.response_begin()  # an edge answer (say 404) before the body ended
    assert act(ex.response_end(LIMIT)) == Act.WAIT_REST
    assert act(ex.body(90, MAX_BODY)) == Act.DISCARD
    assert act(ex.end()) == Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.KEEP_ALIVE


@pytest.mark.parametrize(
    "framing",
    [(b"Content-Length", b"5000"), (b"Transfer-Encoding", b"chunked")],
    ids=["large rest", "chunked rest"],
)
def test_early_answer_does_not_read_a_large_or_chunked_rest(
    framing: tuple[bytes, bytes],
) -> None:
    ex = exchange(b"POST", framing)
    ex.body(10, MAX_BODY)
    ex.response_begin()
    assert act(ex.response_end(LIMIT)) == Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.LINGER


def test_upstream_answering_before_the_body_ended_is_not_pooled() -> None:
    ex = exchange(b"POST", (b"Content-Length", b"100"))
    ex.body(10, MAX_BODY)
    ex.response_head(413, b"Too Large", LENGTH_2)
    assert act(ex.response_complete(True, LIMIT)) == Act.WAIT_REST | Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.LINGER


def test_body_over_the_cap_is_too_large_and_closes() -> None:
    ex = exchange(b"POST", (b"Transfer-Encoding", b"chunked"))
    assert act(ex.body(MAX_BODY, MAX_BODY)) == NOTHING
    assert act(ex.body(1, MAX_BODY)) == Act.TOO_LARGE
    ex.response_begin()  # the shell answers 413
    assert act(ex.response_end(LIMIT)) == Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.LINGER


# --- stale upstream connections and failures ------------------------------------------
def test_retry_idempotent_request_on_a_stale_pooled_connection() -> None:
    ex = exchange()
    ex.end()
    assert act(ex.upstream_closed(reused=True, got_bytes=False)) == Act.RETRY
    assert proxied_ok(ex) == Act.REUSE | Act.FINISH  # the second connection answers
    assert act(ex.next_step(draining=False)) == Act.KEEP_ALIVE


def test_no_retry_on_a_fresh_connection() -> None:
    ex = exchange()
    ex.end()
    assert act(ex.upstream_closed(reused=False, got_bytes=False)) == Act.FAIL


def test_no_retry_after_response_bytes() -> None:
    ex = exchange()
    ex.end()
    assert act(ex.upstream_closed(reused=True, got_bytes=True)) == Act.FAIL  # partial head
    ex.response_head(200, b"OK", [(b"Content-Length", b"10")])
    assert act(ex.upstream_closed(reused=True, got_bytes=False)) == Act.FAIL


def test_no_retry_for_a_post_whose_body_was_sent() -> None:
    ex = exchange(b"POST", (b"Content-Length", b"3"))
    ex.body(3, MAX_BODY)
    ex.end()
    assert act(ex.upstream_closed(reused=True, got_bytes=False)) == Act.FAIL


def test_failure_before_the_response_answers_and_closes() -> None:
    ex = exchange()
    ex.end()
    assert act(ex.failed()) == Act.FAIL
    ex.response_begin()  # the shell writes 502
    assert act(ex.response_end(LIMIT)) == Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.CLOSE


def test_failure_after_the_response_started_aborts() -> None:
    ex = exchange()
    ex.end()
    ex.response_head(200, b"OK", [(b"Content-Length", b"10")])
    assert act(ex.failed()) == Act.ABORT


def test_close_delimited_body_completes_when_the_upstream_closes() -> None:
    ex = exchange()
    ex.end()
    ex.response_head(200, b"OK", [])
    assert ex.until_close and ex.chunked  # re-chunked for the HTTP/1.1 client
    assert act(ex.upstream_closed(reused=True, got_bytes=True)) == Act.COMPLETE
    assert act(ex.response_complete(False, LIMIT)) == Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.KEEP_ALIVE


# --- the client side going away -------------------------------------------------------
def test_lost_client_mid_body_finishes_without_an_answer() -> None:
    ex = exchange(b"POST", (b"Content-Length", b"100"))
    assert act(ex.body(40, MAX_BODY)) == NOTHING
    ex.client_lost()
    assert ex.finished and not ex.response_done
    # a late upstream answer cannot finish it a second time
    ex.response_head(200, b"OK", LENGTH_2)
    assert Act.FINISH not in act(ex.response_complete(True, LIMIT))


def test_rejected_head_is_answered_and_closed() -> None:
    ex = ExchangeState(None, True, True, True, False)
    assert not ex.keep_alive
    ex.response_begin()  # the shell writes 400
    assert act(ex.response_end(LIMIT)) == Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.LINGER  # framing unknown: drain reads


# --- upgrades and interim responses ---------------------------------------------------
WEBSOCKET = ((b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"))


def test_websocket_upgrade_is_spliced_and_ends_with_its_upstream() -> None:
    ex = exchange(b"GET", *WEBSOCKET)
    ex.end()
    head = ex.response_head(101, b"Switching Protocols", [(b"Upgrade", b"websocket")])
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Upgrade: websocket\r\n" in head
    ex.spliced()
    assert act(ex.upstream_closed(reused=False, got_bytes=True)) == Act.SPLICE_END


def test_websocket_request_answered_without_101_is_not_kept_alive() -> None:
    ex = exchange(b"GET", *WEBSOCKET)
    ex.end()
    head = ex.response_head(400, b"Bad Request", LENGTH_2)
    assert head.endswith(b"Connection: close\r\n\r\n")
    assert act(ex.response_complete(True, LIMIT)) == Act.REUSE | Act.FINISH
    assert act(ex.next_step(draining=False)) == Act.CLOSE


def test_refused_upgrade_is_answered_then_closed() -> None:
    ex = exchange(b"GET", (b"Connection", b"Upgrade"), (b"Upgrade", b"h2c"))
    ex.refuse_upgrade()
    ex.end()
    proxied_ok(ex)
    assert act(ex.next_step(draining=False)) == Act.CLOSE


@pytest.mark.parametrize(
    ("http11", "status", "forwarded"),
    [(True, 100, True), (False, 100, False), (True, 103, False)],
)
def test_interim_responses_reach_only_http11_clients_as_100(
    http11: bool, status: int, forwarded: bool
) -> None:
    ex = exchange(keep_alive=http11, http11=http11)
    assert ex.forwards_interim(status) is forwarded


def test_actions_are_a_named_flag_set() -> None:
    assert repr(Act.REUSE | Act.FINISH) in ("<Act.FINISH|REUSE: 5>", "<Act.REUSE|FINISH: 5>")
    assert Act.KEEP_ALIVE & (Act.CLOSE | Act.LINGER) == NOTHING
