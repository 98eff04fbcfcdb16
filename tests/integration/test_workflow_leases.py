"""Adopting a worker renews the leases of the runs it holds (both queue stores): a run
claimed before a daemon restart is neither expired nor claimable by another worker until
the renewed lease runs out, then it expires as usual."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tako_server.workflows.pgstore import PgStore
from tako_server.workflows.store import NewRun, QueueStore, SqliteStore
from tests.helpers import postgres

pytestmark = pytest.mark.timeout(60)
LEASE = 30.0


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueStore]:
    if request.param == "sqlite":
        local = SqliteStore(tmp_path / "workflows.db")
        yield local
        await local.close()
        return
    reason = postgres.available()
    if reason is not None:
        pytest.skip(reason)
    server = postgres.PostgresServer(["127.0.0.1"]).start()
    try:
        shared = await PgStore.connect(server.url())
        yield shared
        await shared.close()
    finally:
        server.stop()


async def test_renewing_a_workers_leases_keeps_its_runs_its_own(store: QueueStore) -> None:
    run, _ = await store.enqueue(NewRun("web", "production", "jobs", "{}", None, 2), 0.0)
    claimed = await store.claim("web", "production", "jobs", "w-1", 1.0, LEASE)
    assert claimed is not None and claimed.id == run.id
    other, _ = await store.enqueue(NewRun("web", "production", "jobs", "{}", None, 2), 1.0)
    assert await store.claim("web", "production", "jobs", "w-2", 1.0, LEASE) is not None

    assert await store.renew_worker("w-1", 25.0, LEASE) == 1  # the adoption, at t=25
    assert await store.renew_worker("nobody", 25.0, LEASE) == 0
    assert await store.expire(40.0, 0.5) == 1  # w-2's run (leased until 31) only
    assert await store.claim("web", "production", "jobs", "w-3", 40.0, LEASE) is None
    kept = await store.get("web", "production", run.id)
    assert kept is not None and (kept.state, kept.worker) == ("running", "w-1")
    assert await store.complete("web", "production", run.id, "w-1", "{}", 41.0)
    again = await store.get("web", "production", other.id)
    assert again is not None and again.state == "queued"
