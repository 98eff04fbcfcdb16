"""What an image request asks for, checked against the app's ``[images]`` (pure).

Rules (``GET /_tako/image?url=...&w=...[&q=...][&f=...]``, docs/images.md):

- Parameters: ``url`` (or ``src``, the original Tako's name; exactly one of them), ``w``
  (required), ``q`` and ``f`` (optional). An unknown or repeated parameter, a value that
  is not plain digits, or a query that is not UTF-8 -> 400 naming the rule.
- ``w`` must be one of the app's ``sizes``, ``q`` one of its ``qualities`` (default 75
  when listed, else the first), ``f`` one of its ``formats``; anything else -> 400.
- ``url`` is a local path (``/images/a.png``, optionally with a query) or an absolute
  ``http(s)`` URL; at most 2048 characters, no control characters, ``\\`` or ``#``, no
  ``.``/``..`` segment (raw or percent-encoded), no user info; a local path may not be
  ``//...`` or under ``/_tako/`` -> 400.
- A local path must match one of ``local_patterns`` (its path, percent-decoded), a
  remote URL one of ``remote_patterns``; else 403. A remote URL whose host is a
  non-public IP address is 403 unless the pattern that allowed it names that address
  (:mod:`tako_common.images`); names are checked when the edge connects.
- The output format (:func:`negotiate`): ``f`` when given; else the best of the app's
  ``formats`` the client lists in ``Accept`` (AVIF, then WebP: only when named
  explicitly, as browsers do); else the first of JPEG/PNG in ``formats``; else
  ``auto`` (JPEG, or PNG for images with transparency: every client decodes those).
- Responses vary by ``Accept``; cache keys (:func:`cache_key`) name the app, the source
  (and, for files, their validator), the width, the quality and the chosen format.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, unquote, urlsplit

from tako_common.images import (
    RemotePattern,
    has_dot_segment,
    is_public_ip,
    parse_ip,
    parse_remote_pattern,
    path_matches,
)

from .policy import Rejected
from .snapshot import ImageRules

MAX_SOURCE = 2048
DEFAULT_QUALITY = 75
MIME = {"webp": "image/webp", "avif": "image/avif", "jpeg": "image/jpeg", "png": "image/png"}
_PARAMS = ("url", "src", "w", "q", "f")

__all__ = ["ImageRequest", "accepted_types", "cache_key", "negotiate", "parse_image_query"]


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """A checked image request: where the source is and what to make of it."""

    source: str  # the local path (with its query) or the absolute URL
    remote: bool
    width: int
    quality: int
    format: str | None  # ``f``; None: negotiated from Accept

    @property
    def local_path(self) -> str:
        """A local source's path, without its query."""
        return self.source.partition("?")[0]


def parse_image_query(query: bytes, rules: ImageRules) -> ImageRequest:
    """The request in ``query`` (``?...``); raises :class:`Rejected` (400/403)."""
    params = _params(query)
    names = [n for n in ("url", "src") if n in params]
    if len(names) != 1:
        raise Rejected(400, "give the image as exactly one of url= or src=")
    if "w" not in params:
        raise Rejected(400, "w= (the width) is required")
    width = _number(params["w"], "w")
    if width not in rules.sizes:
        raise Rejected(400, f"w={width} is not one of the sizes {_listed(rules.sizes)}")
    quality = _quality(params.get("q"), rules.qualities)
    fmt = params.get("f")
    if fmt is not None and fmt not in rules.formats:
        raise Rejected(400, f"f={fmt[:16]!r} is not one of the formats {_listed(rules.formats)}")
    source = params[names[0]]
    remote = _check_source(source, rules)
    return ImageRequest(source, remote, width, quality, fmt)


def _params(query: bytes) -> dict[str, str]:
    text = query.removeprefix(b"?").decode("latin-1")
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, max_num_fields=8, encoding="utf-8", errors="strict"
        )
    except (ValueError, UnicodeDecodeError):
        raise Rejected(400, "the image query is not valid (UTF-8, at most 8 parameters)") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PARAMS:
            raise Rejected(400, f"unknown parameter {name[:32]!r}: use url, w, q and f")
        if name in params:
            raise Rejected(400, f"parameter {name!r} is given twice")
        params[name] = value
    return params


def _number(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        raise Rejected(400, f"{name}= must be a whole number")
    return int(text)


def _quality(text: str | None, qualities: tuple[int, ...]) -> int:
    if text is None:
        return DEFAULT_QUALITY if DEFAULT_QUALITY in qualities else qualities[0]
    quality = _number(text, "q")
    if quality not in qualities:
        raise Rejected(400, f"q={quality} is not one of the qualities {_listed(qualities)}")
    return quality


def _listed(values: tuple[int, ...] | tuple[str, ...]) -> str:
    return ", ".join(str(v) for v in values)


def _check_source(source: str, rules: ImageRules) -> bool:
    """Whether ``source`` is remote; raises :class:`Rejected` (400 shape, 403 not allowed)."""
    if not source or len(source) > MAX_SOURCE:
        raise Rejected(400, f"url= must be 1-{MAX_SOURCE} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in source) or "\\" in source or "#" in source:
        raise Rejected(400, "url= may not contain control characters, '\\' or '#'")
    if source.startswith("/") and not source.startswith("//"):
        _check_local(source, rules)
        return False
    if source[:8].lower().startswith(("http://", "https://")):
        _check_remote(source, rules)
        return True
    raise Rejected(400, "url= must be a path on the app (/...) or an http(s) URL")


def _clean_path(path: str) -> str:
    decoded = unquote(path)
    if has_dot_segment(path) or has_dot_segment(decoded) or "\\" in decoded or "\x00" in decoded:
        raise Rejected(400, "the image path may not have '.' or '..' segments")
    return decoded


def _check_local(source: str, rules: ImageRules) -> None:
    path = _clean_path(source.partition("?")[0])
    if path.startswith("/_tako/"):
        raise Rejected(400, "the image may not come from /_tako/")
    if not any(path_matches(pattern, path) for pattern in rules.local_patterns):
        raise Rejected(403, "this image path is not allowed by [images].local_patterns")


def _check_remote(source: str, rules: ImageRules) -> None:
    try:
        parts = urlsplit(source)
        port = parts.port
    except ValueError:
        raise Rejected(400, "url= is not a valid URL") from None
    host = (parts.hostname or "").rstrip(".")
    if not host or parts.username is not None or parts.password is not None:
        raise Rejected(400, "url= must name a host and no user")
    path = _clean_path(parts.path or "/")
    scheme = parts.scheme.lower()
    allowed = [p for p in compiled(rules.remote_patterns) if p.matches(scheme, host, port, path)]
    if not allowed:
        raise Rejected(403, "this image URL is not allowed by [images].remote_patterns")
    ip = parse_ip(host)
    if ip is not None and not is_public_ip(ip) and not any(p.names_ip for p in allowed):
        raise Rejected(403, "remote images may not come from a private address")


@lru_cache(maxsize=256)
def compiled(patterns: tuple[str, ...]) -> tuple[RemotePattern, ...]:
    """The parsed remote patterns (checked at deploy; one parse per distinct list)."""
    return tuple(parse_remote_pattern(text) for text in patterns)


def accepted_types(accept: str) -> set[str]:
    """Media types ``accept`` names with a quality above zero (lowercase)."""
    found = set()
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if media and weight > 0:
            found.add(media.lower())
    return found


def negotiate(accept: str, formats: tuple[str, ...], explicit: str | None) -> str:
    """The output format (see the module rules): a name of :data:`MIME` or ``auto``."""
    if explicit is not None:
        return explicit
    accepted = accepted_types(accept)
    for fmt in ("avif", "webp"):
        if fmt in formats and MIME[fmt] in accepted:
            return fmt
    for fmt in formats:
        if fmt in ("jpeg", "png"):
            return fmt
    return "auto"


def cache_key(app: str, identity: str, width: int, quality: int, fmt: str) -> str:
    """The file name stem of a result in the app's image cache."""
    text = "\0".join(("v1", app, identity, str(width), str(quality), fmt))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
