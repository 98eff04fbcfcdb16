"""CertManager: keeps a certificate for every routed host, in the background.

Rules:

- :meth:`CertManager.ensure_hosts` never waits for the network (a deploy never waits for
  a certificate): private hosts get a self-signed certificate at once, a valid stored
  certificate is reused (no new order after a restart), public exact hosts without one
  are queued for ACME, public wildcards without DNS-01 are marked ``needs_dns01``.
- Each host is issued by its app's :class:`~.policy.CertPlan` (given to ``ensure_hosts``):
  HTTP-01, DNS-01 through the Cloudflare DNS API (the ``ssl.cloudflare`` token), or the
  Cloudflare Origin CA; renewal and failures (backoff, old certificate kept, the API's
  reason in ``status``) are the same for all three.
- One background worker issues queued hosts one at a time; one scheduler re-checks
  every 12 h (renew within 30 days of expiry) and wakes early for retries. Failures back
  off per host (:func:`.policy.next_attempt`); a failed renewal keeps the old cert.
- State is in memory only (the daemon persists the host list and calls ``ensure_hosts``
  again at start); certificates live in the :class:`CertStore`. ``on_change(domain)``
  is called after a certificate is written so the daemon can tell edge workers to
  ``refresh()``.
- Background tasks are named and referenced; :meth:`close` cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tako_common.errors import TakoError
from tako_common.tasks import spawn

if TYPE_CHECKING:  # the ACME client (acme, josepy, requests) loads only when enabled
    from .acme_issuer import AcmeIssuer
    from .cloudflare import CloudflareApi
    from .origin_ca import OriginCaIssuer
from .certinfo import CertInfo, validate_domain
from .policy import (
    CHECK_INTERVAL,
    MISSING_CLOUDFLARE,
    Action,
    CertPlan,
    CertState,
    HostCertStatus,
    Method,
    can_use_acme,
    decide,
    dns01_reason,
    is_due,
    next_attempt,
)
from .store import CertStore, ensure_self_signed

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Host:
    state: CertState
    not_after: datetime | None = None
    reason: str | None = None
    failures: int = 0
    retry_at: datetime | None = None


class CertManager:
    """One per daemon: decides, issues, renews and reports certificates per host."""

    def __init__(
        self,
        store: CertStore,
        issuer: AcmeIssuer | None,
        *,
        dns01_available: bool = False,
        clock: Callable[[], datetime] = utc_now,
        check_interval: timedelta = CHECK_INTERVAL,
        on_change: Callable[[str], None] | None = None,
        origin_ca: OriginCaIssuer | None = None,
        cloudflare: Callable[[str], CloudflareApi] | None = None,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.origin_ca = origin_ca
        self.cloudflare = cloudflare  # token -> API client (None: no Cloudflare here)
        self._plans: dict[str, CertPlan] = {}
        self.dns01_available = dns01_available
        self.clock = clock
        self.check_interval = check_interval
        self.on_change = on_change
        self._hosts: dict[str, _Host] = {}
        self._queued: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        states = {h: s.state.value for h, s in sorted(self._hosts.items())}
        return f"CertManager(hosts={states}, queued={sorted(self._queued)})"

    def start(self) -> None:
        """Start the issuing worker and the renewal scheduler (idempotent)."""
        if self._tasks:
            return
        self._tasks = [
            spawn(self._worker(), name="tako-cert-issuer"),
            spawn(self._scheduler(), name="tako-cert-scheduler"),
        ]

    async def close(self) -> None:
        """Cancel background tasks (an issuance running in a thread finishes on its own)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def ensure_hosts(
        self, hosts: Iterable[str], plan: CertPlan | None = None
    ) -> list[HostCertStatus]:
        """Manage ``hosts`` (added to the managed set) issued by ``plan`` (None: keep the
        plan they have, HTTP-01 for a new host); returns their status right now."""
        now = self.clock()
        result: list[HostCertStatus] = []
        names = [validate_domain(raw) for raw in hosts]  # reject bad input before acting
        for host in names:
            entry = self._hosts.get(host)
            if plan is not None and self._plans.get(host) != plan:
                self._plans[host] = plan
                if entry is not None:  # a new credential or setting is tried at once
                    entry.retry_at = None
            waiting = entry is not None and entry.retry_at is not None and entry.retry_at > now
            if host not in self._queued and not waiting:
                self._apply(host, now)
            result.append(self._status_of(host))
        return result

    def forget(self, hosts: Iterable[str]) -> None:
        """Stop managing ``hosts`` (their files stay; nothing is renewed any more)."""
        for raw in hosts:
            name = validate_domain(raw)
            self._hosts.pop(name, None)
            self._plans.pop(name, None)

    def status(self, host: str) -> HostCertStatus | None:
        """The certificate status of a managed ``host``, or None if it is not managed."""
        name = validate_domain(host)
        return self._status_of(name) if name in self._hosts else None

    def statuses(self) -> list[HostCertStatus]:
        return [self._status_of(h) for h in sorted(self._hosts)]

    def check(self, now: datetime | None = None) -> list[str]:
        """Re-decide every host not waiting for a retry; returns the hosts queued."""
        when = now or self.clock()
        for domain in sorted(self.store.refresh()):  # e.g. a certificate put in by hand
            self._changed(domain)
        before = set(self._queued)
        for host, entry in list(self._hosts.items()):
            if host in self._queued or (entry.retry_at is not None and entry.retry_at > when):
                continue
            self._apply(host, when)
        return sorted(self._queued - before)

    async def wait_idle(self, timeout: float) -> None:
        """Wait until the issuing queue is empty and nothing is in flight."""
        async with asyncio.timeout(timeout):
            await self._queue.join()

    def _status_of(self, host: str) -> HostCertStatus:
        e = self._hosts[host]
        return HostCertStatus(host, e.state, e.not_after, e.reason, e.retry_at)

    def _apply(self, host: str, now: datetime) -> None:
        entry = self._hosts.setdefault(host, _Host(CertState.PENDING))
        cert = self.store.info(host)
        enabled, dns01 = self._abilities(self._plan(host))
        action = decide(host, cert, now, acme_enabled=enabled, dns01_available=dns01)
        if action is Action.REUSE and cert is not None:
            entry.state = CertState.SELF_SIGNED if cert.self_signed else CertState.ISSUED
            entry.not_after = cert.not_after
            if entry.state is CertState.ISSUED and self._renewable(host, cert.not_after, now):
                self._enqueue(host)
            elif entry.failures == 0:
                entry.reason = None
        elif action is Action.SELF_SIGN:
            self._self_sign(host, entry, now)
        elif action is Action.NEEDS_DNS01:
            entry.state, entry.reason = CertState.NEEDS_DNS01, dns01_reason(host)
        else:
            entry.state = CertState.PENDING
            self._enqueue(host)

    def _plan(self, host: str) -> CertPlan:
        return self._plans.get(host) or CertPlan()

    def _abilities(self, plan: CertPlan) -> tuple[bool, bool]:
        """``(can issue, can validate wildcards)`` for hosts under ``plan``."""
        method = plan.method
        if method is Method.ORIGIN_CA:
            ready = self.origin_ca is not None and self.cloudflare is not None
            return ready and plan.cloudflare_token is not None, True
        if method is Method.DNS01 and self.cloudflare is not None:
            return self.issuer is not None, True
        return self.issuer is not None, self.dns01_available

    def _renewable(self, host: str, not_after: datetime, now: datetime) -> bool:
        enabled, dns01 = self._abilities(self._plan(host))
        return enabled and is_due(not_after, now) and can_use_acme(host, dns01_available=dns01)

    def _self_sign(self, host: str, entry: _Host, now: datetime) -> None:
        before = self.store.info(host)
        try:
            info = ensure_self_signed(self.store, host, now)
        except TakoError as exc:
            entry.state, entry.reason = CertState.FAILED, str(exc)
            return
        entry.state, entry.not_after = CertState.SELF_SIGNED, info.not_after
        entry.reason = self._self_signed_reason(host)
        if info != before:
            self._changed(host)

    def _self_signed_reason(self, host: str) -> str | None:
        plan = self._plan(host)
        if plan.ssl == "cloudflare" and not self._abilities(plan)[0]:
            return MISSING_CLOUDFLARE if plan.cloudflare_token is None else (
                "the Cloudflare Origin CA is not available on this server"
            )  # fmt: skip
        return None if self.issuer is not None else "ACME is disabled on this server"

    def _enqueue(self, host: str) -> None:
        if host not in self._queued:
            self._queued.add(host)
            self._queue.put_nowait(host)

    def _changed(self, host: str) -> None:
        if self.on_change is not None:
            try:
                self.on_change(host)
            except Exception:
                log.exception("on_change callback failed for %s", host)

    async def _worker(self) -> None:
        while True:
            host = await self._queue.get()
            try:
                if host in self._hosts and self._abilities(self._plan(host))[0]:
                    await self._issue(host)
            finally:
                self._queued.discard(host)
                self._queue.task_done()
                self._wakeup.set()

    async def _obtain(self, host: str) -> CertInfo:
        """One certificate for ``host`` by its plan (the API client is closed after)."""
        plan = self._plan(host)
        method = plan.method
        if method is Method.HTTP01 or self.cloudflare is None or plan.cloudflare_token is None:
            assert self.issuer is not None
            return await self.issuer.issue(host)
        api = self.cloudflare(plan.cloudflare_token)
        try:
            if method is Method.ORIGIN_CA:
                assert self.origin_ca is not None
                return await self.origin_ca.issue(host, api)
            assert self.issuer is not None
            return await self.issuer.issue(host, api)
        finally:
            api.close()

    async def _issue(self, host: str) -> None:
        try:
            info = await self._obtain(host)
        except Exception as exc:
            if not isinstance(exc, TakoError):
                log.exception("certificate issuance for %s crashed", host)
            self._record_failure(host, str(exc))
            return
        entry = self._hosts.get(host)
        if entry is not None:
            entry.state, entry.not_after, entry.reason = CertState.ISSUED, info.not_after, None
            entry.failures, entry.retry_at = 0, None
        log.info("certificate for %s issued, valid until %s", host, info.not_after)
        self._changed(host)

    def _record_failure(self, host: str, reason: str) -> None:
        entry = self._hosts.get(host)
        if entry is None:
            return
        now = self.clock()
        entry.failures += 1
        entry.retry_at = next_attempt(entry.failures, now)
        cert = self.store.info(host)
        if cert is not None and not cert.self_signed and not cert.is_expired(now):
            entry.state, entry.not_after = CertState.ISSUED, cert.not_after
            entry.reason = f"renewal failed (old certificate kept): {reason}"
        else:
            entry.state, entry.reason = CertState.FAILED, reason
        log.warning("%s; retry at %s", reason, entry.retry_at.isoformat())

    async def _scheduler(self) -> None:
        next_check = self.clock()
        while True:
            now = self.clock()
            if now >= next_check:
                self.check(now)
                next_check = now + self.check_interval
            else:
                self._retry_due(now)
            wake = min([next_check] + [e.retry_at for e in self._hosts.values() if e.retry_at])
            delay = max((wake - self.clock()).total_seconds(), 1.0)
            self._wakeup.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel (close()).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    def _retry_due(self, now: datetime) -> None:
        for host, entry in list(self._hosts.items()):
            if entry.retry_at is not None and entry.retry_at <= now and host not in self._queued:
                self._apply(host, now)
