"""Who the client is: ``source_ip`` modes, trusted ranges and the PROXY protocol (pure).

Rules (docs/source-ip.md):

- ``direct``: the TCP peer (after a PROXY header from a trusted proxy: its source).
- ``trusted-proxy``: only when the peer is in the server's ``trusted_proxies`` ranges,
  ``X-Forwarded-For`` is walked from the right, skipping trusted addresses; the first
  untrusted one is the client (the left-most address of the trusted chain; anything to
  its left was written by the client and cannot be believed). ``X-Forwarded-Proto``
  (last value, ``http``/``https`` only) is believed from such a peer too.
- ``cloudflare-proxy``: ``CF-Connecting-IP`` (one valid address) is believed only from
  Cloudflare's published ranges (:data:`CLOUDFLARE_RANGES_FILE`, shipped with the
  package; a server setting points at an updated copy); its ``X-Forwarded-Proto`` too.
- ``auto``: ``cloudflare-proxy`` when the peer is a Cloudflare address that sent
  ``CF-Connecting-IP``, else ``trusted-proxy`` when it is a configured trusted proxy,
  else ``direct``. With no trusted proxies configured and no Cloudflare, that is
  ``direct``.
- Anything not believed is ignored (the peer stays the client); the edge drops the
  incoming headers and writes its own, so forged ones never reach the app.
- :func:`parse_proxy_header`: PROXY protocol v1 (text) and v2 (binary), ``LOCAL``/
  ``UNKNOWN`` keep the peer; malformed input raises :class:`ProxyHeaderError`. The
  scheme comes from the v2 ``PP2_TYPE_SSL`` TLV (HAProxy ``send-proxy-v2-ssl``): a proxy
  in TCP mode passes the client's own ``X-Forwarded-Proto`` through, so on a PROXY
  connection that header is believed only if the PROXY source itself is trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path

DIRECT, TRUSTED_PROXY, CLOUDFLARE_PROXY, AUTO = 0, 1, 2, 3
MODES = {"direct": DIRECT, "trusted-proxy": TRUSTED_PROXY, "cloudflare-proxy": CLOUDFLARE_PROXY,
         "auto": AUTO}  # fmt: skip
CLOUDFLARE_RANGES_FILE = Path(__file__).with_name("cloudflare-ranges.txt")
_CACHE_MAX = 4096
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ranges(lines: Iterable[str]) -> tuple[Network, ...]:
    """CIDR ranges, one per item (``#`` comments and blank lines skipped); raises
    ValueError naming the bad entry."""
    nets = []
    for raw in lines:
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR range") from None
    return tuple(nets)


def load_cloudflare_ranges(path: Path | None = None) -> tuple[str, ...]:
    """The Cloudflare ranges file (the shipped one by default) as CIDR texts."""
    text = (path or CLOUDFLARE_RANGES_FILE).read_text(encoding="utf-8")
    return tuple(str(net) for net in parse_ranges(text.splitlines()))


class Ranges:
    """A set of networks with a bounded cache of the addresses asked about."""

    __slots__ = ("nets", "_cache")

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.nets = parse_ranges(cidrs)
        self._cache: dict[bytes, bool] = {}

    def __repr__(self) -> str:
        return f"Ranges({len(self.nets)} networks)"

    def __bool__(self) -> bool:
        return bool(self.nets)

    def __contains__(self, ip: bytes) -> bool:
        found = self._cache.get(ip)
        if found is None:
            addr = _address(ip)
            found = addr is not None and any(addr in net for net in self.nets)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[ip] = found
        return found


def _address(ip: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(ip.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _clean_ip(raw: bytes) -> bytes | None:
    """``raw`` as a canonical address (a port or brackets are not accepted), or None."""
    addr = _address(raw)
    return None if addr is None else str(addr).encode("ascii")


def forwarded_proto(xfp: bytes | None) -> bytes | None:
    """The last `X-Forwarded-Proto` value when it is http or https, else None."""
    if not xfp:
        return None
    last = xfp.rsplit(b",", 1)[-1].strip().lower()
    return last if last in (b"http", b"https") else None


def resolve(
    mode: int,
    peer: bytes,
    xff: bytes | None,
    xfp: bytes | None,
    cf_ip: bytes | None,
    trusted: Ranges,
    cloudflare: Ranges,
) -> tuple[bytes, bytes | None]:
    """``(client address, scheme or None)`` for one request (module rules)."""
    if mode == DIRECT:
        return peer, None
    if mode == AUTO:
        if cf_ip is not None and peer in cloudflare:
            mode = CLOUDFLARE_PROXY
        elif peer in trusted:
            mode = TRUSTED_PROXY
        else:
            return peer, None
    if mode == CLOUDFLARE_PROXY:
        if peer not in cloudflare:
            return peer, None
        client = _clean_ip(cf_ip) if cf_ip is not None else None
        return (client or peer), forwarded_proto(xfp)
    if peer not in trusted:
        return peer, None
    return _walk_xff(xff, trusted) or peer, forwarded_proto(xfp)


def _walk_xff(xff: bytes | None, trusted: Ranges) -> bytes | None:
    if not xff:
        return None
    found = None
    for item in reversed(xff.split(b",")):
        ip = _clean_ip(item)
        if ip is None:
            return found  # garbage: nothing to its left can be believed
        found = ip
        if ip not in trusted:
            return ip
    return found


# --- PROXY protocol ------------------------------------------------------------------------
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the spec's longest v1 line, CRLF included
V2_MAX_BODY = 4096  # addresses + TLVs we accept (the spec allows up to 65535)


class ProxyHeaderError(Exception):
    """A malformed PROXY protocol header (the connection is closed)."""


def looks_like_proxy(data: bytes) -> bool:
    """Whether ``data`` (a connection's first bytes) starts like a PROXY header."""
    n = min(len(data), 12)
    return data[:6] == b"PROXY "[: min(n, 6)] or data[:n] == V2_SIGNATURE[:n]


ProxyInfo = tuple[int, bytes | None, bool]  # bytes used, source (None: LOCAL), client TLS


def parse_proxy_header(data: bytes) -> ProxyInfo | None:
    """``(bytes used, source address or None for LOCAL/UNKNOWN, client used TLS)``; None:
    more bytes are needed."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if len(data) < 16:
        if V2_SIGNATURE.startswith(data[:12]):
            return None
        raise ProxyHeaderError("not a PROXY protocol header")
    if data[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("not a PROXY protocol header")
    return _parse_v2(data)


def _parse_v1(data: bytes) -> ProxyInfo | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or not b"PROXY ".startswith(data[:6]):
            raise ProxyHeaderError("PROXY v1 line too long or not PROXY")
        return None
    parts = data[:end].split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyHeaderError("not a PROXY v1 line")
    if parts[1] == b"UNKNOWN":
        return end + 2, None, False
    if parts[1] not in (b"TCP4", b"TCP6") or len(parts) != 6:
        raise ProxyHeaderError(f"bad PROXY v1 line {data[:end]!r:.80}")
    src = _address(parts[2])
    dst = _address(parts[3])
    if src is None or dst is None or src.version != (4 if parts[1] == b"TCP4" else 6):
        raise ProxyHeaderError("bad address in PROXY v1 line")
    for port in parts[4:6]:
        if not port.isdigit() or int(port) > 65535 or (len(port) > 1 and port[:1] == b"0"):
            raise ProxyHeaderError("bad port in PROXY v1 line")
    return end + 2, str(src).encode("ascii"), False


def _parse_v2(data: bytes) -> ProxyInfo | None:
    ver_cmd, family = data[12], data[13]
    length = int.from_bytes(data[14:16], "big")
    if ver_cmd >> 4 != 2 or ver_cmd & 0x0F not in (0, 1):
        raise ProxyHeaderError("bad PROXY v2 version or command")
    if length > V2_MAX_BODY:
        raise ProxyHeaderError("PROXY v2 header too long")
    total = 16 + length
    if len(data) < total:
        return None
    if ver_cmd & 0x0F == 0:  # LOCAL: the proxy's own connection (health check)
        return total, None, False
    body = data[16:total]
    if family == 0x11:  # TCP over IPv4
        if length < 12:
            raise ProxyHeaderError("PROXY v2 IPv4 addresses truncated")
        src = str(ipaddress.IPv4Address(body[:4]))
        return total, src.encode("ascii"), _client_tls(body[12:])
    if family == 0x21:  # TCP over IPv6
        if length < 36:
            raise ProxyHeaderError("PROXY v2 IPv6 addresses truncated")
        addr = ipaddress.IPv6Address(body[:16])
        mapped = addr.ipv4_mapped
        src = str(mapped if mapped is not None else addr)
        return total, src.encode("ascii"), _client_tls(body[36:])
    if family == 0x00:  # UNSPEC
        return total, None, False
    raise ProxyHeaderError(f"PROXY v2 family 0x{family:02x} is not TCP")


PP2_TYPE_SSL, PP2_CLIENT_SSL = 0x20, 0x01


def _client_tls(tlvs: bytes) -> bool:
    """Whether the TLVs say the client spoke TLS to the proxy (``PP2_TYPE_SSL``)."""
    i = 0
    while i + 3 <= len(tlvs):
        kind, size = tlvs[i], int.from_bytes(tlvs[i + 1 : i + 3], "big")
        value = tlvs[i + 3 : i + 3 + size]
        if len(value) != size:
            raise ProxyHeaderError("PROXY v2 TLV truncated")
        if kind == PP2_TYPE_SSL:
            return bool(value) and bool(value[0] & PP2_CLIENT_SSL)
        i += 3 + size
    if i != len(tlvs):
        raise ProxyHeaderError("PROXY v2 TLV truncated")
    return False
