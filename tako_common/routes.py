"""Route parsing, matching and conflict detection (pure; see docs/routes.md).

A route is ``host[/path]``:

- host: an exact DNS name (``example.com``, ``localhost``, ``myapp``), an IPv4 literal, or
  a wildcard ``*.suffix`` that matches every deeper subdomain and never the bare suffix;
  lowercased, one trailing dot dropped. ``*.tld`` (one label after the star) is refused,
  except ``*.localhost``.
- path: none or ``/*`` = any path; ``/p`` = exactly ``/p`` (a trailing ``/`` is ignored,
  ``/`` stays ``/``); ``/p/*`` = ``/p`` and everything under ``/p/`` (not ``/pology``).

Rules: bad routes raise :class:`ValidationError` naming the rule (never silently fixed);
the most specific matching route wins (:attr:`Route.specificity`); two different targets
may not own the same normalised route. :class:`RouteTable` is an immutable value indexed
by exact host and wildcard suffix, so a lookup costs O(labels + routes on that host).
Paths are compared as given (the caller passes the path without the query string).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tako_common.errors import ValidationError
from tako_common.hosts import normalize_host

T = TypeVar("T")

MAX_HOST_LENGTH = 253
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SEGMENT_RE = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()+,;=:@]|%[0-9A-Fa-f]{2})+")
_WHITESPACE_RE = re.compile(r"\s")
LABEL_RULE = "labels are 1-63 characters of [a-z0-9-] and do not start or end with '-'"


class PathKind(enum.Enum):
    """How a route's path is matched; the value is its rank in :attr:`Route.specificity`."""

    ANY = 0
    PREFIX = 1
    EXACT = 2


@dataclass(frozen=True)
class Route:
    """One parsed route. ``host`` is the suffix (without ``*.``) when ``wildcard``."""

    text: str
    host: str
    wildcard: bool
    path: str | None
    path_kind: PathKind

    def __str__(self) -> str:
        return self.text

    @property
    def host_pattern(self) -> str:
        """The host as written in a route: ``*.example.com`` or ``example.com``."""
        return f"*.{self.host}" if self.wildcard else self.host

    @property
    def key(self) -> tuple[str, bool, str | None, PathKind]:
        """Identity after normalisation: equal keys = the same route."""
        return (self.host, self.wildcard, self.path, self.path_kind)

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        """Higher sorts first: (exact host, host labels, path length, path kind rank)."""
        labels = self.host.count(".") + 1
        path_len = len(self.path) if self.path is not None else 0
        return (0 if self.wildcard else 1, labels, path_len, self.path_kind.value)

    @property
    def prefix(self) -> str:
        """The path prefix to strip for static files: the base of a ``/p/*`` route, else ''."""
        if self.path_kind is PathKind.PREFIX and self.path is not None:
            return self.path
        return ""

    def matches_host(self, host: str) -> bool:
        name = normalize_host(host)
        if self.wildcard:
            return name.endswith("." + self.host) and len(name) > len(self.host) + 1
        return name == self.host

    def matches_path(self, path: str) -> bool:
        """Whether ``path`` (no query string; '' counts as '/') is covered by this route."""
        request = path or "/"
        if self.path is None:
            return True
        if self.path_kind is PathKind.EXACT:
            return request == self.path or (request.endswith("/") and request[:-1] == self.path)
        return request == self.path or request.startswith(self.path + "/")

    def matches(self, host: str, path: str) -> bool:
        return self.matches_host(host) and self.matches_path(path)


def _invalid(text: str, rule: str, hint: str | None = None) -> ValidationError:
    return ValidationError(f"invalid route {text!r}: {rule}", hint=hint)


def _check_shape(text: str) -> None:
    if not text:
        raise _invalid(text, "a route cannot be empty", "write a host, e.g. example.com")
    if _WHITESPACE_RE.search(text):
        raise _invalid(text, "a route cannot contain whitespace")
    if "://" in text:
        bare = text.split("://", 1)[1]
        raise _invalid(text, "a route takes no scheme", f"write {bare!r}")
    if text.startswith("/"):
        raise _invalid(
            text, "path-only routes are invalid: a route needs a host, e.g. example.com/api/*"
        )
    if "?" in text or "#" in text:
        raise _invalid(text, "a route cannot contain a query '?' or fragment '#'")


def _parse_host(text: str, raw: str) -> tuple[str, bool]:
    host = raw.lower()
    if host.startswith("[") or host.count(":") > 1:
        raise _invalid(text, "IPv6 literals are not supported as route hosts", "use a host name")
    if ":" in host:
        raise _invalid(text, "a route cannot name a port", "Tako serves ports 80 and 443")
    if host.endswith(".") and host != ".":
        host = host[:-1]
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if host == "*":
        raise _invalid(text, "a wildcard needs a domain after it, e.g. *.example.com")
    if "*" in name:
        raise _invalid(
            text, "a wildcard '*' is allowed only as the whole first label, e.g. *.example.com"
        )
    labels = name.split(".")
    for label in labels:
        if not _LABEL_RE.fullmatch(label):
            hint = (
                "write internationalised names in punycode (xn--...)"
                if not label.isascii()
                else None
            )
            raise _invalid(text, f"invalid host label {label!r}: {LABEL_RULE}", hint)
    if len(host) > MAX_HOST_LENGTH:
        raise _invalid(text, f"a host is at most {MAX_HOST_LENGTH} characters")
    if labels[-1].isdigit():
        if wildcard or not _is_ipv4(name):
            raise _invalid(text, "a host ending in a numeric label must be an IPv4 address")
    if wildcard and len(labels) == 1 and name != "localhost":
        raise _invalid(
            text,
            f"a wildcard over a top-level domain ('*.{name}') is not allowed",
            "use at least two labels after '*.', e.g. *.example.com (or *.localhost)",
        )
    return name, wildcard


def _is_ipv4(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def _parse_path(text: str, raw: str) -> tuple[str | None, PathKind]:
    if raw in ("", "/*"):
        return None, PathKind.ANY
    if "//" in raw:
        raise _invalid(text, "a path cannot contain an empty segment '//'")
    if raw.endswith("/*"):
        base, kind = raw[:-2], PathKind.PREFIX
    else:
        base, kind = (raw[:-1] if raw.endswith("/") and raw != "/" else raw), PathKind.EXACT
    if "*" in base:
        raise _invalid(text, "'*' is allowed in a path only as a trailing '/*'")
    if base == "/":
        return base, kind
    for segment in base[1:].split("/"):
        if segment in (".", ".."):
            raise _invalid(text, "a path cannot contain '.' or '..' segments")
        if not _SEGMENT_RE.fullmatch(segment):
            raise _invalid(
                text, f"invalid path segment {segment!r}: use URL path characters or %XX escapes"
            )
    return base, kind


def _render(host: str, wildcard: bool, path: str | None, kind: PathKind) -> str:
    host_text = f"*.{host}" if wildcard else host
    if path is None:
        return host_text
    return f"{host_text}{path}/*" if kind is PathKind.PREFIX else f"{host_text}{path}"


def parse_route(text: str) -> Route:
    """Parse and normalise one route; raise :class:`ValidationError` naming the broken rule."""
    if not isinstance(text, str):
        raise ValidationError(f"invalid route {text!r}: a route must be a string")
    _check_shape(text)
    slash = text.find("/")
    host_raw, path_raw = (text, "") if slash == -1 else (text[:slash], text[slash:])
    host, wildcard = _parse_host(text, host_raw)
    path, kind = _parse_path(text, path_raw)
    return Route(_render(host, wildcard, path, kind), host, wildcard, path, kind)


def route_hosts(routes: Iterable[str | Route]) -> list[str]:
    """Distinct host patterns of ``routes`` in first-seen order (wildcards as ``*.x``)."""
    seen: dict[str, None] = {}
    for item in routes:
        route = item if isinstance(item, Route) else parse_route(item)
        seen.setdefault(route.host_pattern, None)
    return list(seen)


@dataclass(frozen=True)
class RouteConflict(Generic[T]):
    """``route`` of ``target`` is the same route as ``other_route`` of ``other_target``."""

    route: Route
    target: T
    other_route: Route
    other_target: T

    def __str__(self) -> str:
        return (
            f"route '{self.route}' of '{self.target}' conflicts with "
            f"route '{self.other_route}' of '{self.other_target}'"
        )


class RouteConflictError(ValidationError):
    """Two targets claim the same route; ``conflicts`` lists every clash."""

    code = "route_conflict"

    def __init__(self, conflicts: Sequence[RouteConflict[Any]]) -> None:
        self.conflicts = list(conflicts)
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        super().__init__(
            f"{conflicts[0]}{more}",
            hint="each route may belong to one app; change or remove one of them",
        )


def find_conflicts(
    existing: Mapping[T, Iterable[str]], new_target: T, new_routes: Iterable[str]
) -> list[RouteConflict[T]]:
    """Routes of ``new_target`` identical (after normalisation) to another target's routes.

    Overlapping routes of different specificity are not conflicts, and a target's own
    routes (a redeploy) never conflict with themselves.
    """
    owners: dict[tuple[str, bool, str | None, PathKind], tuple[Route, T]] = {}
    for target, texts in existing.items():
        if target == new_target:
            continue
        for text in texts:
            route = parse_route(text)
            owners.setdefault(route.key, (route, target))
    conflicts: list[RouteConflict[T]] = []
    seen: set[tuple[str, bool, str | None, PathKind]] = set()
    for text in new_routes:
        route = parse_route(text)
        if route.key in seen or route.key not in owners:
            continue
        seen.add(route.key)
        other_route, other_target = owners[route.key]
        conflicts.append(RouteConflict(route, new_target, other_route, other_target))
    return conflicts


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    """The winning route for a request, its target and the static-file prefix to strip."""

    route: Route
    target: T
    prefix: str


def _entry_order(entry: tuple[Route, object]) -> tuple[tuple[int, ...], str]:
    route = entry[0]
    return (tuple(-part for part in route.specificity), route.text)


class RouteTable(Generic[T]):
    """Immutable route index: exact hosts and wildcard suffixes, each most-specific first.

    Build it whole with :meth:`build` and swap it whole; it is never edited in place.
    """

    __slots__ = ("_exact", "_wildcard", "_size")

    def __init__(
        self,
        exact: Mapping[str, tuple[tuple[Route, T], ...]] | None = None,
        wildcard: Mapping[str, tuple[tuple[Route, T], ...]] | None = None,
    ) -> None:
        self._exact: Mapping[str, tuple[tuple[Route, T], ...]] = dict(exact or {})
        self._wildcard: Mapping[str, tuple[tuple[Route, T], ...]] = dict(wildcard or {})
        groups = [*self._exact.values(), *self._wildcard.values()]
        self._size = sum(len(group) for group in groups)

    @classmethod
    def build(cls, entries: Iterable[tuple[str | Route, T]]) -> RouteTable[T]:
        """Index ``(route, target)`` pairs; raise :class:`RouteConflictError` on clashes.

        The same route listed twice for the same target is kept once.
        """
        owners: dict[tuple[str, bool, str | None, PathKind], tuple[Route, T]] = {}
        conflicts: list[RouteConflict[Any]] = []
        for item, target in entries:
            route = item if isinstance(item, Route) else parse_route(item)
            if route.key not in owners:
                owners[route.key] = (route, target)
            elif owners[route.key][1] != target:
                other_route, other_target = owners[route.key]
                conflicts.append(RouteConflict(route, target, other_route, other_target))
        if conflicts:
            raise RouteConflictError(conflicts)
        exact: dict[str, list[tuple[Route, T]]] = {}
        wildcard: dict[str, list[tuple[Route, T]]] = {}
        for route, target in owners.values():
            index = wildcard if route.wildcard else exact
            index.setdefault(route.host, []).append((route, target))
        return cls(
            {host: tuple(sorted(group, key=_entry_order)) for host, group in exact.items()},
            {host: tuple(sorted(group, key=_entry_order)) for host, group in wildcard.items()},
        )

    def match(self, host: str, path: str) -> RouteMatch[T] | None:
        """The most specific route for ``host`` and ``path`` (no query string), or None."""
        name = normalize_host(host)
        found = self._first(self._exact.get(name, ()), path)
        if found is not None:
            return found
        labels = name.split(".")
        for start in range(1, len(labels)):
            group = self._wildcard.get(".".join(labels[start:]))
            if group:
                found = self._first(group, path)
                if found is not None:
                    return found
        return None

    @staticmethod
    def _first(group: Iterable[tuple[Route, T]], path: str) -> RouteMatch[T] | None:
        for route, target in group:
            if route.matches_path(path):
                return RouteMatch(route, target, route.prefix)
        return None

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[tuple[Route, T]]:
        """Every ``(route, target)`` pair, ordered by route text."""
        groups = [*self._exact.values(), *self._wildcard.values()]
        yield from sorted((entry for group in groups for entry in group), key=lambda e: e[0].text)

    def __repr__(self) -> str:
        return (
            f"RouteTable(routes={self._size}, exact_hosts={len(self._exact)}, "
            f"wildcard_suffixes={len(self._wildcard)})"
        )
