"""The image optimizer's allow-lists (``[images]`` in tako.toml): pattern syntax and matching.

Pure and shared: the config model and the protocol validate patterns with it, the edge
matches image sources with it. Standard library only (an edge worker imports it).

Rules (001 "Images"):

- A local pattern is an absolute path pattern (``/images/**``); it must start with ``/``
  (not ``//``) and may not contain ``?``, ``#``, ``\\`` or a ``.``/``..`` segment. Local
  image paths default to ``["/**"]``.
- A remote pattern is a URL pattern ``[scheme://]host[:port][/path]``: the scheme, when
  written, is ``http`` or ``https`` (without one, both match); the host is a name, an IP
  address or ``*.suffix`` (any host below ``suffix``, not ``suffix`` itself); no user
  info, query or fragment. Without a path it matches every path (``/**``).
- Path matching is by segments: ``*`` matches exactly one segment, ``**`` any number of
  segments (also none), anything else matches itself (case-sensitive). Hosts compare
  case-insensitively, without a trailing dot.
- Remote images never come from private, loopback, link-local or otherwise non-public
  addresses (a request must not reach inside the server's network), unless the pattern
  that allows them names that address literally (``http://10.0.0.5/**``):
  :func:`is_public_ip` is the test, applied to literal hosts here and to every address a
  name resolves to when the edge connects.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_LOCAL_PATTERNS: tuple[str, ...] = ("/**",)
DEFAULT_SIZES: tuple[int, ...] = (320, 640, 960, 1200, 1920)
DEFAULT_QUALITIES: tuple[int, ...] = (75,)
DEFAULT_FORMATS: tuple[str, ...] = ("webp",)
FORMATS: tuple[str, ...] = ("webp", "avif", "jpeg", "png")
MAX_SIZE = 16384
MAX_PATTERN = 2048

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_LOCAL_PATTERNS",
    "DEFAULT_QUALITIES",
    "DEFAULT_SIZES",
    "FORMATS",
    "RemotePattern",
    "check_local_pattern",
    "has_dot_segment",
    "is_public_ip",
    "parse_ip",
    "parse_remote_pattern",
    "path_matches",
]


def has_dot_segment(path: str) -> bool:
    """Whether ``path`` has a ``.`` or ``..`` segment."""
    return any(segment in (".", "..") for segment in path.split("/"))


def check_local_pattern(text: str) -> str:
    """``text`` if it is a valid local pattern, else ``ValueError`` naming the rule."""
    if not text.startswith("/") or text.startswith("//"):
        raise ValueError(f"local image pattern {text!r} must start with '/' (a path on the app)")
    bad = [c for c in "?#\\\x00" if c in text]
    if bad or len(text) > MAX_PATTERN or has_dot_segment(text):
        raise ValueError(
            f"local image pattern {text!r} must be a plain path pattern"
            " (no '?', '#', '\\', '.' or '..' segments)"
        )
    return text


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _match(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, path[i:]) for i in range(len(path) + 1))
    if not path:
        return False
    return (head == "*" or head == path[0]) and _match(rest, path[1:])


def path_matches(pattern: str, path: str) -> bool:
    """Whether ``path`` matches the path ``pattern`` (``*`` one segment, ``**`` any)."""
    if pattern == "/**":
        return path.startswith("/")
    return _match(_segments(pattern), _segments(path))


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address (brackets of an IPv6 literal allowed), or None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` is a public unicast address (see the module rules)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast:
        return False
    if ip.is_reserved or ip.is_unspecified:
        return False
    shared = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, overlay networks
    return not (isinstance(ip, ipaddress.IPv4Address) and ip in shared)


@dataclass(frozen=True, slots=True)
class RemotePattern:
    """A parsed remote pattern (see the module rules)."""

    text: str
    scheme: str | None  # None: http and https
    host: str  # lowercase; "*.example.com" for a wildcard
    port: int | None  # None: the scheme's default port
    path: str

    @property
    def names_ip(self) -> bool:
        """Whether the host is an IP address literal (then it may be a private one)."""
        return parse_ip(self.host) is not None

    def matches(self, scheme: str, host: str, port: int | None, path: str) -> bool:
        """Whether the URL ``scheme://host[:port]path`` is allowed by this pattern."""
        if self.scheme is not None and scheme != self.scheme:
            return False
        default = 443 if scheme == "https" else 80
        if (self.port or default) != (port or default):
            return False
        host = host.lower().rstrip(".")
        if self.host.startswith("*."):
            suffix = self.host[1:]
            if not host.endswith(suffix) or host == suffix[1:]:
                return False
        elif host != self.host:
            return False
        return path_matches(self.path, path or "/")


def parse_remote_pattern(text: str) -> RemotePattern:
    """Parse a remote pattern; ``ValueError`` naming the rule it broke."""
    rule = "use [http(s)://]host[:port][/path] with an optional *. host wildcard"
    if not text or text != text.strip() or len(text) > MAX_PATTERN or "\\" in text:
        raise ValueError(f"invalid remote image pattern {text!r}: {rule}")
    scheme: str | None = None
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"remote image pattern {text!r}: the scheme must be http or https")
    try:
        parts = urlsplit(text if scheme else f"https://{text}")
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid remote image pattern {text!r}: {rule}") from None
    host = (parts.hostname or "").rstrip(".")
    if parts.username is not None or parts.query or parts.fragment or "?" in text:
        raise ValueError(f"remote image pattern {text!r} may not have a user, query or fragment")
    if not host or ("*" in host and not (host.startswith("*.") and "*" not in host[2:])):
        raise ValueError(f"invalid remote image pattern {text!r}: {rule}")
    path = parts.path or "/**"
    if has_dot_segment(path):
        raise ValueError(f"remote image pattern {text!r} may not have '.' or '..' segments")
    return RemotePattern(text, scheme, host, port, path)
