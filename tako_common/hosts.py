"""Host-name classification shared by the proxy, the TLS code and the CLI.

Rules:

- :func:`normalize_host` turns a ``Host`` header (or a route host) into the form every
  comparison uses: surrounding whitespace removed, lowercased, port removed (also from a
  bracketed IPv6 literal ``[::1]:443`` -> ``::1``), trailing dots removed. It never raises.
- :func:`is_private_host` says whether a host is a local/private name that can never get
  a public certificate: ``localhost`` and ``*.localhost``, single-label names, the
  reserved suffixes in :data:`PRIVATE_SUFFIXES`, and loopback/private/link-local IP
  literals. Such hosts get self-signed certificates and count as already HTTPS when a
  local proxy forwards them.
- :func:`is_internal_status_request` recognises the health probe (``Host: tako.internal``
  and path ``/status``); :func:`is_acme_challenge_path` the HTTP-01 challenge prefix.

Everything here is pure: no DNS look-ups, no I/O.
"""

from __future__ import annotations

import ipaddress
import re

INTERNAL_HOST = "tako.internal"
STATUS_PATH = "/status"
ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"

# Reserved or conventionally local suffixes (RFC 2606, RFC 6761, RFC 6762, RFC 8375, ...).
PRIVATE_SUFFIXES: tuple[str, ...] = (
    "localhost",
    "local",
    "test",
    "invalid",
    "example",
    "home.arpa",
    "internal",
    "lan",
)

_ACME_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
_PORT_RE = re.compile(r"[0-9]*")


def normalize_host(value: str) -> str:
    """Return ``value`` lowercased, without port, IPv6 brackets or trailing dots."""
    host = value.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            rest = host[end + 1 :]
            if rest == "" or (rest.startswith(":") and _PORT_RE.fullmatch(rest[1:])):
                return host[1:end]
        return host.rstrip(".")
    if host.count(":") == 1:
        name, port = host.split(":")
        if _PORT_RE.fullmatch(port):
            host = name
    return host.rstrip(".")


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` spells (after normalisation), or None for a name."""
    try:
        return ipaddress.ip_address(normalize_host(host))
    except ValueError:
        return None


def _is_private_ip(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return _is_private_ip(addr.ipv4_mapped)
    return addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_unspecified


def is_private_host(host: str) -> bool:
    """True for local/private names and IP literals that public ACME cannot certify.

    ``host`` may be a raw ``Host`` header or a route host pattern such as ``*.localhost``
    (a wildcard is private when its suffix is). An empty host is not private.
    """
    name = normalize_host(host)
    if not name:
        return False
    addr = ip_literal(name)
    if addr is not None:
        return _is_private_ip(addr)
    if "." not in name:
        return name != "*"
    return any(name == suffix or name.endswith("." + suffix) for suffix in PRIVATE_SUFFIXES)


def is_internal_status_request(host: str, path: str) -> bool:
    """True for Tako's own health probe: ``Host: tako.internal`` and path ``/status``.

    ``path`` is the request path without the query string.
    """
    return path == STATUS_PATH and normalize_host(host) == INTERNAL_HOST


def is_acme_challenge_path(path: str) -> bool:
    """True when ``path`` is under ``/.well-known/acme-challenge/`` (served by Tako itself)."""
    return path.startswith(ACME_CHALLENGE_PREFIX)


def acme_challenge_token(path: str) -> str | None:
    """The HTTP-01 token a challenge path asks for, or None when it is not a valid token.

    Tokens are base64url (``[A-Za-z0-9_-]+``); anything else (``/``, ``..``, ``%``) is None.
    """
    if not is_acme_challenge_path(path):
        return None
    token = path[len(ACME_CHALLENGE_PREFIX) :]
    return token if _ACME_TOKEN_RE.fullmatch(token) else None
