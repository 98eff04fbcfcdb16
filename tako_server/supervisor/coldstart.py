"""Cold-start waiter accounting for one scaled-to-zero app (pure, no awaits, no clock).

Requests that find no routable instance join ONE start: the queue only counts and times
them; the state machine decides when to start an instance. Rules:

- at most ``limit`` waiters; the next one is refused at once (the edge answers 503);
- each waiter has its own deadline ``joined + timeout`` (504 when it passes);
- an instance becoming routable settles every waiter as ready, a failed start settles
  every waiter as failed (502);
- a waiter that goes away (client disconnected) leaves without touching the others.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ColdStartOutcome(enum.Enum):
    READY = "ready"
    FAILED = "failed"
    TIMEOUT = "timeout"
    REJECTED = "rejected"


@dataclass
class ColdStartQueue:
    """Waiter tokens (ints chosen by the caller) with their deadlines."""

    limit: int
    timeout: float
    _deadlines: dict[int, float] = field(default_factory=dict)
    starts: int = 0

    def join(self, token: int, now: float) -> bool:
        """Queue a waiter; ``False`` when the queue is full (the waiter is rejected)."""
        if len(self._deadlines) >= self.limit:
            return False
        if not self._deadlines:
            self.starts += 1
        self._deadlines[token] = now + self.timeout
        return True

    def leave(self, token: int) -> None:
        self._deadlines.pop(token, None)

    def expire(self, now: float) -> list[int]:
        """Remove and return the waiters whose deadline has passed."""
        late = [t for t, deadline in self._deadlines.items() if deadline <= now]
        for token in late:
            del self._deadlines[token]
        return late

    def settle(self) -> list[int]:
        """Remove and return every waiter (the start succeeded or failed)."""
        tokens = list(self._deadlines)
        self._deadlines.clear()
        return tokens

    @property
    def waiting(self) -> int:
        return len(self._deadlines)

    def __repr__(self) -> str:
        return f"ColdStartQueue(waiting={self.waiting}/{self.limit}, starts={self.starts})"
