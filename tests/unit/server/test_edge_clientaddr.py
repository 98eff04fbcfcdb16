"""Client address resolution (source_ip modes) and PROXY protocol parsing: tables."""

from __future__ import annotations

import ipaddress

import pytest

from tako_server.edge.clientaddr import (
    AUTO,
    CLOUDFLARE_PROXY,
    DIRECT,
    TRUSTED_PROXY,
    V2_SIGNATURE,
    ProxyHeaderError,
    Ranges,
    load_cloudflare_ranges,
    looks_like_proxy,
    parse_proxy_header,
    parse_ranges,
    resolve,
)

TRUSTED = Ranges(["10.0.0.0/8", "fd00::/8"])
CF = Ranges(["173.245.48.0/20", "2400:cb00::/32"])
PROXY_IP, CF_IP, STRANGER = b"10.1.2.3", b"173.245.48.7", b"203.0.113.9"

RESOLVE_CASES = [
    # (name, mode, peer, xff, xfp, cf, expected ip, expected proto)
    ("direct ignores every header", DIRECT, PROXY_IP, b"1.1.1.1", b"https", b"2.2.2.2",
     PROXY_IP, None),
    ("trusted proxy: its XFF client", TRUSTED_PROXY, PROXY_IP, b"198.51.100.4", b"https", None,
     b"198.51.100.4", b"https"),
    ("trusted proxy: forged left entries skipped", TRUSTED_PROXY, PROXY_IP,
     b"6.6.6.6, 198.51.100.4, 10.9.9.9", b"http", None, b"198.51.100.4", b"http"),
    ("trusted proxy: all trusted -> left-most", TRUSTED_PROXY, PROXY_IP, b"10.0.0.5, 10.0.0.6",
     None, None, b"10.0.0.5", None),
    ("trusted proxy: garbage stops the walk", TRUSTED_PROXY, PROXY_IP, b"1.1.1.1, nonsense",
     None, None, PROXY_IP, None),
    ("trusted proxy: no XFF -> peer, proto believed", TRUSTED_PROXY, PROXY_IP, None, b"https",
     None, PROXY_IP, b"https"),
    ("trusted proxy: bad proto ignored", TRUSTED_PROXY, PROXY_IP, None, b"gopher", None,
     PROXY_IP, None),
    ("trusted proxy: proto list -> last", TRUSTED_PROXY, PROXY_IP, None, b"http, https", None,
     PROXY_IP, b"https"),
    ("trusted proxy mode, untrusted peer: forged", TRUSTED_PROXY, STRANGER, b"1.1.1.1", b"https",
     None, STRANGER, None),
    ("cloudflare from its range", CLOUDFLARE_PROXY, CF_IP, b"9.9.9.9", b"https", b"198.51.100.4",
     b"198.51.100.4", b"https"),
    ("cloudflare mode, forged from elsewhere", CLOUDFLARE_PROXY, STRANGER, None, b"https",
     b"198.51.100.4", STRANGER, None),
    ("cloudflare: bad header -> peer", CLOUDFLARE_PROXY, CF_IP, None, None, b"not-an-ip",
     CF_IP, None),
    ("cloudflare: IPv6 client canonical", CLOUDFLARE_PROXY, CF_IP, None, None,
     b"2001:DB8:0::1", b"2001:db8::1", None),
    ("auto: cloudflare", AUTO, CF_IP, None, b"https", b"198.51.100.4", b"198.51.100.4",
     b"https"),
    ("auto: trusted proxy", AUTO, PROXY_IP, b"198.51.100.4", b"https", None, b"198.51.100.4",
     b"https"),
    ("auto: CF header from a trusted proxy is not believed", AUTO, PROXY_IP, None, None,
     b"1.1.1.1", PROXY_IP, None),
    ("auto: stranger -> direct", AUTO, STRANGER, b"1.1.1.1", b"https", b"2.2.2.2", STRANGER,
     None),
    ("auto: IPv4-mapped trusted peer", AUTO, b"::ffff:10.0.0.1", b"198.51.100.4", None, None,
     b"198.51.100.4", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "peer", "xff", "xfp", "cf", "ip", "proto"),
    [case[1:] for case in RESOLVE_CASES],
    ids=[case[0] for case in RESOLVE_CASES],
)
def test_resolve(
    mode: int, peer: bytes, xff: bytes | None, xfp: bytes | None, cf: bytes | None, ip: bytes,
    proto: bytes | None,
) -> None:  # fmt: skip
    assert resolve(mode, peer, xff, xfp, cf, TRUSTED, CF) == (ip, proto)


def test_no_trusted_ranges_means_auto_is_direct() -> None:
    assert resolve(AUTO, PROXY_IP, b"1.1.1.1", b"https", None, Ranges([]), CF) == (PROXY_IP, None)


def v2(cmd: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | cmd, family]) + len(body).to_bytes(2, "big") + body


V4_BODY = bytes([198, 51, 100, 4, 10, 0, 0, 1]) + (51000).to_bytes(2, "big") + b"\x01\xbb"
V6_BODY = ipaddress.IPv6Address("2001:db8::7").packed + bytes(16) + b"\x00\x50\x01\xbb"

SSL_TLV = b"\x20\x00\x05\x01\x00\x00\x00\x00"  # PP2_TYPE_SSL, client: PP2_CLIENT_SSL
SSL_TLV_NO = b"\x20\x00\x05\x00\x00\x00\x00\x00"

PROXY_CASES = [
    ("v1 tcp4", b"PROXY TCP4 198.51.100.4 10.0.0.1 51000 443\r\nGET", (44, b"198.51.100.4", False)),
    ("v1 tcp6", b"PROXY TCP6 2001:db8::7 2001:db8::1 1 80\r\n", (41, b"2001:db8::7", False)),
    ("v1 unknown", b"PROXY UNKNOWN\r\nGET /", (15, None, False)),
    ("v1 partial", b"PROXY TCP4 198.51", None),
    ("v2 tcp4", v2(1, 0x11, V4_BODY) + b"GET", (28, b"198.51.100.4", False)),
    ("v2 tcp6", v2(1, 0x21, V6_BODY), (52, b"2001:db8::7", False)),
    ("v2 local", v2(0, 0x00, b""), (16, None, False)),
    ("v2 with TLVs", v2(1, 0x11, V4_BODY + b"\x04\x00\x01x"), (32, b"198.51.100.4", False)),
    ("v2 client TLS", v2(1, 0x11, V4_BODY + SSL_TLV), (36, b"198.51.100.4", True)),
    ("v2 TLS TLV, not TLS", v2(1, 0x11, V4_BODY + SSL_TLV_NO), (36, b"198.51.100.4", False)),
    ("v2 partial signature", V2_SIGNATURE[:7], None),
    ("v2 partial body", v2(1, 0x11, V4_BODY)[:20], None),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in PROXY_CASES], ids=[c[0] for c in PROXY_CASES]
)
def test_parse_proxy_header(data: bytes, expected: tuple[int, bytes | None, bool] | None) -> None:
    assert parse_proxy_header(data) == expected


BAD_PROXY = [
    ("v1 not proxy", b"PROXX TCP4 1.2.3.4 1.2.3.4 1 2\r\n"),
    ("v1 bad family", b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n"),
    ("v1 bad address", b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n"),
    ("v1 family mismatch", b"PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n"),
    ("v1 bad port", b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n"),
    ("v1 too long", b"PROXY TCP4 " + b"1" * 120),
    ("v1 missing fields", b"PROXY TCP4 1.2.3.4\r\n"),
    ("v2 bad version", V2_SIGNATURE + b"\x11\x11\x00\x0c" + V4_BODY),
    ("v2 bad command", V2_SIGNATURE + b"\x22\x11\x00\x0c" + V4_BODY),
    ("v2 truncated ipv4", v2(1, 0x11, V4_BODY[:6])),
    ("v2 udp", v2(1, 0x12, V4_BODY)),
    ("v2 too long", V2_SIGNATURE + b"\x21\x11\xff\xff"),
    ("v2 truncated TLV", v2(1, 0x11, V4_BODY + b"\x20\x00\x09\x01")),
    ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
]


@pytest.mark.parametrize("data", [c[1] for c in BAD_PROXY], ids=[c[0] for c in BAD_PROXY])
def test_malformed_proxy_header_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"PROXY TCP4", True), (b"PRO", True), (V2_SIGNATURE[:5], True), (b"GET / HTTP/1.1", False),
     (b"\x16\x03\x01", False)],
)  # fmt: skip
def test_looks_like_proxy(data: bytes, expected: bool) -> None:
    assert looks_like_proxy(data) is expected


def test_shipped_cloudflare_ranges_parse_and_match() -> None:
    ranges = Ranges(load_cloudflare_ranges())
    assert len(ranges.nets) >= 15
    assert b"173.245.48.1" in ranges and b"2606:4700::1" in ranges
    assert b"203.0.113.9" not in ranges


def test_bad_range_names_the_entry() -> None:
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        parse_ranges(["10.0.0.0/8", "10.0.0.0/33"])
