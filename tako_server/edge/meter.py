"""Request metrics counted where requests are served (each edge process), summed by the
main process into Prometheus text (:mod:`tako_server.metrics`).

Rules:

- :class:`Meter` is plain counting: no I/O, no clock of its own (the caller passes
  durations). One :meth:`Meter.record` per finished request: a dict increment per
  ``(app key, status class, method)`` and one histogram bucket per app.
- Label values are bounded: methods outside :data:`METHODS` count as ``OTHER``; requests
  that matched no app count under the key ``""`` (rendered ``app="",env=""``).
- :meth:`Meter.snapshot` is cumulative (counters never go down while the process lives);
  it travels to the main process as plain JSON-able data, which adds the snapshots of
  every live process to what retired processes had counted.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

#: upper bounds of the request duration histogram (seconds); the last bucket is +Inf
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: upper bounds of the cold-start wait histogram (seconds)
COLD_START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class Histogram:
    """Bucket counts (not cumulative; the renderer accumulates), sum and count."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def as_json(self) -> list[Any]:
        return [self.counts, self.total, self.count]


class Meter:
    """What one edge process counted since it started."""

    __slots__ = ("requests", "durations", "cold_waits", "counters")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.durations: dict[str, Histogram] = {}
        self.cold_waits: dict[str, Histogram] = {}
        #: other per-app counters: (name, app key) -> count (upstream connect errors,
        #: per-client limit refusals, ...)
        self.counters: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"Meter(requests={sum(self.requests.values())})"

    def record(self, key: str | None, status: int, method: bytes, seconds: float) -> None:
        """One finished request (``key`` None: it matched no app)."""
        app = key or ""
        name = method.decode("latin-1")
        cls = _CLASSES[status // 100 - 1] if 100 <= status < 600 else "5xx"
        label = (app, cls, name if name in METHODS else "OTHER")
        requests = self.requests
        requests[label] = requests.get(label, 0) + 1
        if status == 101:  # a WebSocket's lifetime is no request duration
            return
        hist = self.durations.get(app)
        if hist is None:
            hist = self.durations[app] = Histogram(DURATION_BUCKETS)
        hist.observe(seconds)

    def cold_start(self, key: str, seconds: float) -> None:
        hist = self.cold_waits.get(key)
        if hist is None:
            hist = self.cold_waits[key] = Histogram(COLD_START_BUCKETS)
        hist.observe(seconds)

    def count(self, name: str, key: str | None, amount: int = 1) -> None:
        label = (name, key or "")
        self.counters[label] = self.counters.get(label, 0) + amount

    def snapshot(self) -> dict[str, Any]:
        """Cumulative counts as JSON-able data (see :func:`merge_snapshots`)."""
        return {
            "requests": [[*label, n] for label, n in self.requests.items()],
            "durations": {k: h.as_json() for k, h in self.durations.items()},
            "cold_waits": {k: h.as_json() for k, h in self.cold_waits.items()},
            "counters": [[*label, n] for label, n in self.counters.items()],
        }


def check_snapshot(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` if it has the shape of :meth:`Meter.snapshot`; else ValueError naming the
    part that is wrong (a worker's report is checked before it is summed)."""
    for part in ("requests", "counters"):
        rows = data.get(part)
        if not isinstance(rows, list):
            raise ValueError(f"snapshot.{part} must be a list")
        width = 4 if part == "requests" else 3
        for row in rows:
            if (
                not isinstance(row, list)
                or len(row) != width
                or not all(isinstance(x, str) for x in row[:-1])
                or type(row[-1]) is not int
            ):
                raise ValueError(f"snapshot.{part}: malformed row {row!r:.60}")
    for part, bounds in (("durations", DURATION_BUCKETS), ("cold_waits", COLD_START_BUCKETS)):
        hists = data.get(part)
        if not isinstance(hists, dict):
            raise ValueError(f"snapshot.{part} must be an object")
        for key, value in hists.items():
            if (
                not isinstance(value, list)
                or len(value) != 3
                or not isinstance(value[0], list)
                or len(value[0]) != len(bounds) + 1
                or not all(type(c) is int for c in value[0])
                or not isinstance(value[1], int | float)
                or type(value[2]) is not int
            ):
                raise ValueError(f"snapshot.{part}[{key!r}]: malformed histogram")
    return dict(data)


def empty_snapshot() -> dict[str, Any]:
    return Meter().snapshot()


def merge_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several processes' snapshots (same shape as one)."""
    requests: dict[tuple[str, ...], int] = {}
    counters: dict[tuple[str, ...], int] = {}
    hists: dict[str, dict[str, list[Any]]] = {"durations": {}, "cold_waits": {}}
    for snap in snapshots:
        for *label, n in snap.get("requests", []):
            requests[tuple(label)] = requests.get(tuple(label), 0) + int(n)
        for *label, n in snap.get("counters", []):
            counters[tuple(label)] = counters.get(tuple(label), 0) + int(n)
        for kind, into in hists.items():
            for key, (counts, total, count) in snap.get(kind, {}).items():
                have = into.get(key)
                if have is None:
                    into[key] = [list(counts), float(total), int(count)]
                else:
                    have[0] = [a + b for a, b in zip(have[0], counts, strict=True)]
                    have[1] += float(total)
                    have[2] += int(count)
    return {
        "requests": [[*label, n] for label, n in requests.items()],
        "durations": hists["durations"],
        "cold_waits": hists["cold_waits"],
        "counters": [[*label, n] for label, n in counters.items()],
    }
