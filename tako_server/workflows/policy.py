"""Pure decisions of the job queue: retry backoff, leases, scale to zero.

Rules:

- a failed attempt ``n`` (1-based) is retried after ``base * 2**(n-1)`` seconds, capped at
  ``cap``, times a jitter factor in ``[0.5, 1.0)`` drawn from the ``rand`` argument
  (``0 <= rand < 1``), so retries of many runs spread out;
- a run may be retried ``retries`` times: attempt ``retries + 1`` is the last, and its
  failure keeps the run as ``failed`` with its last error;
- a claimed run is leased for :data:`LEASE_SECONDS`; a heartbeat extends the lease; a run
  whose lease ran out (its worker died or hung) counts as a failed attempt;
- a group scaled to zero wants its workers when runs are ready, and lets them go after
  ``idle_timeout`` seconds without any run ready or running.

No clock and no randomness here: both are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_BASE = 1.0
RETRY_CAP = 300.0
LEASE_SECONDS = 30.0
#: the largest payload (bytes of JSON) a run may carry; bigger is 413
MAX_PAYLOAD_BYTES = 256 * 1024


def retry_delay(
    attempt: int, rand: float, base: float = RETRY_BASE, cap: float = RETRY_CAP
) -> float:
    """Seconds before the retry of failed attempt ``attempt`` (1-based)."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if not 0.0 <= rand < 1.0:
        raise ValueError("rand is in [0, 1)")
    exponential = min(cap, base * 2.0 ** min(attempt - 1, 30))
    return exponential * (0.5 + rand / 2.0)


def is_final_attempt(attempt: int, retries: int) -> bool:
    """True when a failure of ``attempt`` (1-based) leaves the run failed for good."""
    return attempt > retries


@dataclass(frozen=True)
class IdleState:
    """What the scale-to-zero decision looks at for one group."""

    workers_running: int
    ready_runs: int
    running_runs: int
    #: monotonic seconds of the last ready/running run or API call of the group
    last_active: float


def scale_to_zero(state: IdleState, now: float, idle_timeout: float) -> int | None:
    """How many workers a ``workers = 0`` group should run now (None: leave as is)."""
    if state.ready_runs > 0 and state.workers_running == 0:
        return 1
    busy = state.ready_runs > 0 or state.running_runs > 0
    if state.workers_running > 0 and not busy and now - state.last_active >= idle_timeout:
        return 0
    return None
