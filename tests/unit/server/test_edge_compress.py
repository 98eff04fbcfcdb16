"""Compression choices (tables) and the streaming encoders; request-head rules that came
with them (Expect, X-Request-Id, Range, hostless HTTP/1.0)."""

from __future__ import annotations

import gzip

import brotli
import pytest

from tako_server.edge.compress import BR, GZIP, Encoder, choose, compressible, parse_accept
from tako_server.edge.policy import (
    Rejected,
    client_response,
    inspect_request,
    should_redirect,
    upstream_request,
)


@pytest.mark.parametrize(
    ("value", "bits"),
    [
        (b"gzip", GZIP),
        (b"br", BR),
        (b"gzip, deflate, br", GZIP | BR),
        (b"BR;q=0.5, GZIP;q=1", GZIP | BR),
        (b"br;q=0, gzip", GZIP),
        (b"br;q=0.0, gzip;q=0", 0),
        (b"*", GZIP | BR),
        (b"identity", 0),
        (b"deflate", 0),
        (b"gzip;q=nonsense", 0),
        (b"", 0),
    ],
)
def test_accept_encoding(value: bytes, bits: int) -> None:
    assert parse_accept(value) == bits


CT_TEXT = [(b"Content-Type", b"text/html; charset=utf-8")]


@pytest.mark.parametrize(
    ("accept", "status", "headers", "length", "expected"),
    [
        (GZIP | BR, 200, CT_TEXT, None, BR),
        (GZIP, 200, CT_TEXT, b"5000", GZIP),
        (0, 200, CT_TEXT, None, 0),
        (GZIP, 206, CT_TEXT, None, 0),
        (GZIP, 404, CT_TEXT, None, 0),
        (GZIP, 200, CT_TEXT, b"1024", 0),  # not above the minimum
        (GZIP, 200, CT_TEXT, b"1025", GZIP),
        (GZIP, 200, [(b"content-type", b"application/json")], None, GZIP),
        (GZIP, 200, [(b"Content-Type", b"application/problem+json")], None, GZIP),
        (GZIP, 200, [(b"Content-Type", b"image/svg+xml")], None, GZIP),
        (GZIP, 200, [(b"Content-Type", b"image/png")], None, 0),
        (GZIP, 200, [(b"Content-Type", b"text/event-stream")], None, 0),
        (GZIP, 200, [], None, 0),  # no type: unknown bytes
        (GZIP, 200, [*CT_TEXT, (b"Content-Encoding", b"gzip")], None, 0),  # already
        (GZIP, 200, [*CT_TEXT, (b"Cache-Control", b"public, no-transform")], None, 0),
    ],
)
def test_choose(
    accept: int,
    status: int,
    headers: list[tuple[bytes, bytes]],
    length: bytes | None,
    expected: int,
) -> None:
    assert choose(accept, status, headers, length) == expected


def test_compressible_types() -> None:
    assert compressible(b"text/css") and compressible(b"application/javascript")
    assert not compressible(b"video/mp4") and not compressible(b"application/octet-stream")


@pytest.mark.parametrize(("kind", "decode"), [(BR, brotli.decompress), (GZIP, gzip.decompress)])
def test_encoders_stream_and_decode_to_the_original(kind: int, decode: object) -> None:
    pieces = [b"<p>hello %d</p>\n" % i * 50 for i in range(20)]
    encoder = Encoder(kind)
    out = [encoder.chunk(piece) for piece in pieces]
    assert all(out), "every piece is flushed at once (streamed responses are not held)"
    body = b"".join(out) + encoder.finish()
    assert decode(body) == b"".join(pieces)  # type: ignore[operator]
    assert len(body) < len(b"".join(pieces)) // 4


def test_a_compressed_response_head_is_reframed() -> None:
    headers = [*CT_TEXT, (b"Content-Length", b"50000"), (b"Vary", b"Cookie")]
    framing = client_response(
        200, b"OK", headers, head_request=False, client_http11=True, keep_alive=True, accept=BR
    )
    head = framing.head
    assert framing.encoding == BR and framing.chunked and not framing.until_close
    assert b"Content-Encoding: br\r\n" in head and b"Vary: Accept-Encoding\r\n" in head
    assert b"Content-Length" not in head and b"Transfer-Encoding: chunked\r\n" in head
    ranged = [*headers, (b"ETag", b'"v1"'), (b"Accept-Ranges", b"bytes")]
    weak = client_response(
        200, b"OK", ranged, head_request=False, client_http11=True, keep_alive=True, accept=BR
    ).head
    assert b'ETag: W/"v1"\r\n' in weak and b"Accept-Ranges" not in weak
    plain = client_response(
        200, b"OK", ranged, head_request=False, client_http11=True, keep_alive=True
    ).head
    assert b'ETag: "v1"\r\n' in plain and b"Accept-Ranges: bytes\r\n" in plain
    old = client_response(
        200, b"OK", headers, head_request=False, client_http11=False, keep_alive=True, accept=GZIP
    )
    assert old.encoding == GZIP and old.close and not old.chunked  # HTTP/1.0: ends at close
    head_only = client_response(
        200, b"OK", headers, head_request=True, client_http11=True, keep_alive=True, accept=GZIP
    )
    assert head_only.encoding == 0 and b"Content-Length: 50000" in head_only.head


def test_request_head_rules() -> None:
    assert inspect_request([(b"Host", b"a"), (b"Accept-Encoding", b"br")], True).accept == BR
    ranged = inspect_request(
        [(b"Host", b"a"), (b"Accept-Encoding", b"br"), (b"Range", b"bytes=0-1")], True
    )
    assert ranged.accept == 0 and b"Range: bytes=0-1\r\n" in ranged.forward
    assert inspect_request([(b"Host", b"a"), (b"Expect", b"100-Continue")], True).forward
    with pytest.raises(Rejected) as caught:
        inspect_request([(b"Host", b"a"), (b"Expect", b"fancy")], True)
    assert caught.value.status == 417
    kept = inspect_request([(b"Host", b"a"), (b"X-Request-Id", b"abc-123")], True)
    assert kept.request_id == b"abc-123" and not any(b"Request-Id" in x for x in kept.forward)
    for bad in (b"has space", b"x" * 129, b'quote"', b""):
        assert inspect_request([(b"Host", b"a"), (b"X-Request-Id", bad)], True).request_id == b""
    head = inspect_request([(b"Host", b"a")], True)
    sent = upstream_request(b"GET", b"/", head, b"10.0.0.1", b"https", b"id-1")
    assert sent.count(b"X-Request-Id") == 1 and b"X-Request-Id: id-1\r\n" in sent


def test_hostless_http10_is_not_redirected_to_an_empty_host() -> None:
    assert not should_redirect(False, "", "/")
    assert should_redirect(False, "example.com", "/")
