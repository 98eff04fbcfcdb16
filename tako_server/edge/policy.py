"""Pure request/response policy of the edge proxy (sans-I/O: bytes in, decisions out).

Rules:

- Plain HTTP redirects to HTTPS with ``307`` and ``Cache-Control: no-store``; the
  ``Location`` keeps the path *and* the query (the original dropped the query). Not
  redirected: ``/.well-known/acme-challenge/*``, ``Host: tako.internal`` + ``/status`` and
  private/local hosts (they count as already HTTPS).
- Request framing is checked before anything is forwarded (request smuggling): both
  ``Content-Length`` and ``Transfer-Encoding`` -> 400; more than one ``Content-Length``
  (equal or not) -> 400; a ``Transfer-Encoding`` other than exactly ``chunked`` -> 400;
  a declared body above :data:`MAX_BODY` -> 413; HTTP/1.1 without exactly one valid
  ``Host`` -> 400; an ``Expect`` other than ``100-continue`` -> 417 (``TRACE``,
  ``TRACK`` and ``CONNECT`` get 405 from the exchange).
- Every request reaches the app with an ``X-Request-Id``: the client's own when it is 1 to
  128 safe characters (letters, digits, ``._:+/=@-``), else one the edge makes.
- Hop-by-hop headers never cross the proxy (``Connection``, ``Keep-Alive``,
  ``Proxy-Connection``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade`` except for a
  WebSocket upgrade, and every header named in ``Connection``). Incoming
  ``X-Forwarded-*``, ``Forwarded``, ``X-Real-IP`` and ``CF-Connecting-IP`` are never
  forwarded; ``X-Forwarded-For``/``-Proto`` and ``CF-Connecting-IP`` are kept on the
  head for :mod:`.clientaddr` (believed only from trusted peers), and the edge sets
  ``X-Forwarded-For/-Proto/-Host`` and ``X-Real-IP`` itself.
- Upstream requests are always HTTP/1.1 keep-alive with the edge's own body framing.
- Backends are chosen by least connections (in-flight in this process), ties rotated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from typing import TypeVar

from tako_common.hosts import (
    is_acme_challenge_path,
    is_internal_status_request,
    is_private_host,
    normalize_host,
)

from .compress import NAMES, choose, parse_accept

MAX_BODY = 128 * 1024 * 1024

# Header names the edge treats specially (lowercase). Values: what to do.
_DROP = 1  # hop-by-hop or untrusted: never forwarded
_HOST = 2
_CL = 3
_TE = 4
_CONN = 5
_UPGRADE = 6
_INM = 7  # forwarded, and remembered for static files
_EXPECT = 8  # only 100-continue is understood (forwarded); anything else -> 417
_RID = 9  # X-Request-Id: kept when safe (set again by the edge), else replaced
_AE = 10  # Accept-Encoding: forwarded, and read for compression
_RANGE = 11  # Range: forwarded; a ranged answer is never compressed
_XFF = 12  # X-Forwarded-For / -Proto, CF-Connecting-IP: kept for clientaddr, not forwarded
_XFP = 13
_CFIP = 14
_SPECIAL: dict[bytes, int] = {
    b"accept-encoding": _AE,
    b"range": _RANGE,
    b"expect": _EXPECT,
    b"x-request-id": _RID,
    b"host": _HOST,
    b"content-length": _CL,
    b"transfer-encoding": _TE,
    b"connection": _CONN,
    b"upgrade": _UPGRADE,
    b"if-none-match": _INM,
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"cf-connecting-ip": _CFIP,
    b"x-forwarded-host": _DROP,
    b"forwarded": _DROP,
    b"x-real-ip": _DROP,
}
# Response headers that never reach the client (framing is the edge's own).
_RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
_HOST_RE = re.compile(rb"(?:[A-Za-z0-9_\-.]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_DIGITS_RE = re.compile(rb"[0-9]{1,19}")
_REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._:+/=@-]{1,128}")
_CONNECTION_TOKENS_IGNORED = frozenset({b"close", b"keep-alive", b"upgrade", b""})
_PLAIN_CONNECTION = frozenset({b",keep-alive", b",close", b", keep-alive", b", close"})


class Rejected(Exception):
    """A request the edge refuses before forwarding: ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class RequestHead:
    """What the edge needs from a request's headers, plus the lines it forwards."""

    host: str = ""
    content_length: int | None = None
    chunked: bool = False
    websocket: bool = False
    if_none_match: bytes = b""
    request_id: bytes = b""  # the client's X-Request-Id when it is safe to keep
    accept: int = 0  # compress.GZIP | compress.BR the client accepts (0 with a Range)
    forward: list[bytes] = field(default_factory=list)  # b"Name: value\r\n" lines
    # what a proxy in front may have said (None: absent); believed only per clientaddr
    xff: bytes | None = None
    xfp: bytes | None = None
    cf_ip: bytes | None = None


def inspect_request(headers: Sequence[tuple[bytes, bytes]], http11: bool) -> RequestHead:
    """Validate framing and split ``headers`` into facts and forwardable lines.

    Raises :class:`Rejected` for every smuggling/limit rule in the module docstring.
    """
    head = RequestHead()
    forward = head.forward
    hosts = 0
    lengths: list[bytes] = []
    te: list[bytes] = []
    connection: list[bytes] = []
    upgrade = b""
    accept, ranged = 0, False
    named: list[bytes] = []  # lowercase names of forwarded lines, only if Connection lists any
    special = _SPECIAL
    for name, value in headers:
        lname = name.lower()
        kind = special.get(lname)
        if kind is None:
            if b"_" in name:
                continue  # X_Forwarded_For would reach CGI-style apps as X-Forwarded-For
            forward.append(name + b": " + value + b"\r\n")
            named.append(lname)
        elif kind == _HOST:
            hosts += 1
            if not _HOST_RE.fullmatch(value):
                raise Rejected(400, "invalid Host header")
            head.host = value.decode("ascii")
        elif kind == _CL:
            lengths.append(value.strip())
        elif kind == _TE:
            te.append(value.strip().lower())
        elif kind == _CONN:
            connection.extend(t.strip().lower() for t in value.split(b","))
        elif kind == _UPGRADE:
            upgrade = value.strip().lower()
        elif kind == _INM:
            head.if_none_match = value
            forward.append(name + b": " + value + b"\r\n")
            named.append(lname)
        elif kind == _EXPECT:
            if value.strip().lower() != b"100-continue":
                raise Rejected(417, "only 'Expect: 100-continue' is supported")
            forward.append(name + b": " + value + b"\r\n")
            named.append(lname)
        elif kind == _RID:
            if _REQUEST_ID_RE.fullmatch(value):
                head.request_id = value
        elif kind == _AE or kind == _RANGE:
            forward.append(name + b": " + value + b"\r\n")
            named.append(lname)
            if kind == _AE:
                accept = parse_accept(value)
            else:
                ranged = True
        elif kind == _XFF:
            head.xff = value if head.xff is None else head.xff + b", " + value
        elif kind == _XFP:
            head.xfp = value
        elif kind == _CFIP:
            head.cf_ip = value.strip()
    if hosts > 1 or (http11 and hosts == 0):
        raise Rejected(400, "a request needs exactly one Host header")
    if accept and not ranged:
        head.accept = accept
    _check_framing(head, lengths, te)
    if upgrade == b"websocket" and b"upgrade" in connection:
        head.websocket = True
    extra = [t for t in connection if t not in _CONNECTION_TOKENS_IGNORED]
    if extra:
        head.forward = [line for line, n in zip(forward, named, strict=True) if n not in extra]
    return head


def _check_framing(head: RequestHead, lengths: list[bytes], te: list[bytes]) -> None:
    if lengths and te:
        raise Rejected(400, "both Content-Length and Transfer-Encoding")
    if len(lengths) > 1:
        raise Rejected(400, "more than one Content-Length")
    if len(te) > 1 or (te and te[0] != b"chunked"):
        raise Rejected(400, "only 'Transfer-Encoding: chunked' is accepted")
    if lengths:
        if not _DIGITS_RE.fullmatch(lengths[0]):
            raise Rejected(400, "invalid Content-Length")
        size = int(lengths[0])
        if size > MAX_BODY:
            raise Rejected(413, f"request body above {MAX_BODY} bytes")
        head.content_length = size
    head.chunked = bool(te)


def upstream_request(
    method: bytes,
    target: bytes,
    head: RequestHead,
    client_ip: bytes,
    proto: bytes,
    request_id: bytes = b"",
) -> bytes:
    """The request head sent to an instance (HTTP/1.1, keep-alive, edge framing)."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    parts.extend(head.forward)
    if head.host:
        parts += [b"Host: ", head.host.encode("ascii"), b"\r\n"]
        parts += [b"X-Forwarded-Host: ", head.host.encode("ascii"), b"\r\n"]
    parts += [b"X-Forwarded-For: ", client_ip, b"\r\nX-Real-IP: ", client_ip]
    parts += [b"\r\nX-Forwarded-Proto: ", proto, b"\r\n"]
    if request_id:
        parts += [b"X-Request-Id: ", request_id, b"\r\n"]
    if head.websocket:
        parts.append(b"Connection: upgrade\r\nUpgrade: websocket\r\n")
    if head.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length is not None:
        parts += [b"Content-Length: ", b"%d" % head.content_length, b"\r\n"]
    parts.append(b"\r\n")
    return b"".join(parts)


@dataclass(slots=True)
class ResponseFraming:
    """How the edge frames a proxied response to the client."""

    head: bytes
    chunked: bool  # re-chunk the body
    close: bool  # close the client connection after the body
    no_body: bool  # HEAD, 1xx, 204, 304
    until_close: bool = False  # the upstream body ends when the upstream closes
    encoding: int = 0  # compress.GZIP / compress.BR: the edge compresses the body


def client_response(
    status: int,
    reason: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    head_request: bool,
    client_http11: bool,
    keep_alive: bool,
    accept: int = 0,
) -> ResponseFraming:
    """Turn an upstream response head into the client's response head and framing
    (compressed when ``accept`` allows it and :func:`.compress.choose` agrees)."""
    length: bytes | None = None
    connection: bytes = b""
    upstream_chunked = False
    parts = [_status_line(status, reason)]
    drop = _RESPONSE_DROP
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            if lname == b"content-length":
                length = value.strip()
            elif lname == b"connection":
                connection += b"," + value.lower()
            elif lname == b"transfer-encoding":
                upstream_chunked = True
            continue
        parts += (name, b": ", value, b"\r\n")
    extra: set[bytes] = set()
    if connection and connection not in _PLAIN_CONNECTION:
        extra = {t.strip() for t in connection.split(b",")} - _CONNECTION_TOKENS_IGNORED
        if extra:
            parts = [parts[0], *_without(headers, extra | drop)]
    no_body = head_request or status < 200 or status == 204 or status == 304
    chunked = False
    close = not keep_alive
    until_close = length is None and not upstream_chunked and not no_body
    encoding = choose(accept, status, headers, length) if accept and not no_body else 0
    if encoding:
        length = None
        parts = [parts[0], *_compressed(headers, extra | drop)]
        parts += (b"Content-Encoding: ", NAMES[encoding], b"\r\nVary: Accept-Encoding\r\n")
    if length is not None:
        parts += (b"Content-Length: ", length, b"\r\n")
    elif not no_body:
        if client_http11:
            chunked = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            close = True
    parts.append(b"Connection: close\r\n\r\n" if close else b"\r\n")
    return ResponseFraming(b"".join(parts), chunked, close, no_body, until_close, encoding)


def _compressed(headers: Sequence[tuple[bytes, bytes]], names: set[bytes]) -> list[bytes]:
    """Header lines of a response the edge compresses: no ``Accept-Ranges``, a weak
    ``ETag`` (see :mod:`.compress`)."""
    lines = []
    for name, value in headers:
        lname = name.lower()
        if lname in names or lname == b"accept-ranges":
            continue
        if lname == b"etag" and not value.startswith(b"W/"):
            value = b"W/" + value
        lines.append(name + b": " + value + b"\r\n")
    return lines


def _without(headers: Sequence[tuple[bytes, bytes]], names: set[bytes]) -> list[bytes]:
    return [name + b": " + value + b"\r\n" for name, value in headers if name.lower() not in names]


_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def _status_line(status: int, reason: bytes) -> bytes:
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason or _reason(status))
        if len(_STATUS_LINES) < 1024:
            _STATUS_LINES[(status, reason)] = line
    return line


def upgrade_response(status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A ``101 Switching Protocols`` head passed through verbatim (Upgrade kept)."""
    parts = [b"HTTP/1.1 %d " % status, reason or _reason(status), b"\r\n"]
    parts.extend(name + b": " + value + b"\r\n" for name, value in headers)
    parts.append(b"\r\n")
    return b"".join(parts)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


@lru_cache(maxsize=256)
def simple_response(
    status: int,
    body: bytes = b"",
    *,
    close: bool = False,
    extra: tuple[tuple[str, str], ...] = (),
    content_type: str = "text/plain; charset=utf-8",
    head_only: bool = False,
) -> bytes:
    """A complete edge-generated response (pre-encoded and cached)."""
    if not body and status not in (204, 304):
        body = _reason(status) + b"\n"
    parts = [b"HTTP/1.1 %d " % status, _reason(status), b"\r\n"]
    if status not in (204, 304):
        parts.append(f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode())
    parts.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in extra)
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only and status not in (204, 304):
        parts.append(body)
    return b"".join(parts)


def split_target(target: bytes, host: str | None = None) -> tuple[str, bytes]:
    """``(path, query-with-?)`` of a request target.

    Absolute-form (``http://authority/path?q``) is reduced to its path and query, and its
    authority must name the same host as the ``Host`` header: the instance only ever sees
    origin-form, so it can never be told about a host the edge did not route on.
    """
    if not target.startswith(b"/"):
        if not target.lower().startswith((b"http://", b"https://")):
            raise Rejected(400, "request target must be a path")
        start = target.find(b"//") + 2
        ends = [i for i in (target.find(c, start) for c in (b"/", b"?", b"#")) if i != -1]
        end = min(ends) if ends else len(target)
        authority = target[start:end].decode("latin-1")
        if "@" in authority or not host or normalize_host(authority) != normalize_host(host):
            raise Rejected(400, "absolute request target names another host than Host")
        rest = target[end:]
        target = rest if rest.startswith(b"/") else b"/" + rest
    if b"#" in target:
        target = target[: target.find(b"#")]
    q = target.find(b"?")
    if q == -1:
        return target.decode("latin-1"), b""
    return target[:q].decode("latin-1"), target[q:]


def should_redirect(is_tls: bool, host: str, path: str) -> bool:
    """Whether a request must be redirected to HTTPS (see module rules)."""
    if is_tls or not host or is_acme_challenge_path(path):
        return False  # no Host (HTTP/1.0): nowhere to redirect to; routing answers 404
    if is_internal_status_request(host, path):
        return False
    return not _is_private(host)


@lru_cache(maxsize=4096)
def _is_private(host: str) -> bool:
    return is_private_host(host)


def redirect_location(host: str, path: str, query: bytes, https_port: int) -> bytes:
    """``https://host[:port]/path?query``: the Host's own port is replaced by ``https_port``."""
    name = normalize_host(host)
    if ":" in name:
        name = f"[{name}]"
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{name}{port}{path}".encode("latin-1") + query


def redirect_response(location: bytes, *, head_only: bool = False, close: bool = False) -> bytes:
    """The ``307`` answer on plain HTTP (never cached by browsers)."""
    body = b"Redirecting to HTTPS\n"
    parts = [
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: ",
        location,
        b"\r\nCache-Control: no-store\r\nContent-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Connection: close\r\n" if close else b"",
        b"\r\n",
        b"" if head_only else body,
    ]
    return b"".join(parts)


B = TypeVar("B")


def choose_backend(backends: Sequence[B], in_flight: Mapping[int, int], turn: int) -> B:
    """Least in-flight requests wins; ties are broken by rotating from ``turn``.

    ``in_flight`` maps ``instance_id`` to this process's open requests on it.
    """
    count = len(backends)
    if count == 1:
        return backends[0]
    best = backends[turn % count]
    best_load = in_flight.get(best.instance_id, 0)  # type: ignore[attr-defined]
    for step in range(1, count):
        candidate = backends[(turn + step) % count]
        load = in_flight.get(candidate.instance_id, 0)  # type: ignore[attr-defined]
        if load < best_load:
            best, best_load = candidate, load
    return best
