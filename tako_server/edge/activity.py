"""In-flight request accounting of one edge process (pure; the caller sends the reports).

Rules:

- :meth:`Activity.begin` / :meth:`Activity.end` count open proxied requests per app and
  instance; the counts also drive least-connections balancing.
- A report lists every app touched since the previous report with its current
  in-flight counts per instance (zeros omitted). It is *urgent* (sent at once) when an
  app goes from 0 to non-zero in-flight; otherwise reports are batched
  (~250 ms). Apps still busy are repeated every :data:`HEARTBEAT` seconds so the
  supervisor never sees a long request as idle. Only the first 0 -> non-zero transition since
  the app was last reported idle is urgent, so a busy app does not flood the channel.
"""

from __future__ import annotations

HEARTBEAT = 5.0


class Activity:
    """Open requests per app key and instance id."""

    __slots__ = ("_counts", "_totals", "_dirty", "urgent", "_last_full", "_reported_busy")

    def __init__(self) -> None:
        self._counts: dict[str, dict[int, int]] = {}
        self._totals: dict[str, int] = {}
        self._dirty: set[str] = set()
        self.urgent = False
        self._last_full = 0.0
        self._reported_busy: set[str] = set()

    def __repr__(self) -> str:
        return f"Activity(in_flight={self._totals}, dirty={sorted(self._dirty)})"

    def in_flight(self, key: str) -> dict[int, int]:
        """Live counts per instance for ``key`` (read by the balancer; do not mutate)."""
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = {}
        return counts

    def begin(self, key: str, instance_id: int) -> None:
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = {}
        counts[instance_id] = counts.get(instance_id, 0) + 1
        total = self._totals.get(key, 0) + 1
        self._totals[key] = total
        self._dirty.add(key)
        if total == 1 and key not in self._reported_busy:
            self.urgent = True

    def end(self, key: str, instance_id: int) -> None:
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = {}
        left = counts.get(instance_id, 0) - 1
        if left > 0:
            counts[instance_id] = left
        else:
            counts.pop(instance_id, None)
        total = max(0, self._totals.get(key, 0) - 1)
        self._totals[key] = total
        self._dirty.add(key)

    def touch(self, key: str) -> None:
        """Mark ``key`` active without an upstream request (static files, cold starts)."""
        self._dirty.add(key)

    def total(self, key: str) -> int:
        return self._totals.get(key, 0)

    def has_pending(self) -> bool:
        return bool(self._dirty)

    def take_report(self, now: float) -> dict[str, dict[int, int]]:
        """Counts for every app to report now; clears the dirty set and urgency."""
        keys = set(self._dirty)
        if now - self._last_full >= HEARTBEAT:
            keys.update(k for k, total in self._totals.items() if total > 0)
            self._last_full = now
        self._dirty.clear()
        self.urgent = False
        report = {key: dict(self._counts.get(key, {})) for key in keys}
        for key, counts in report.items():
            if counts:
                self._reported_busy.add(key)
            else:
                self._reported_busy.discard(key)
        return report
