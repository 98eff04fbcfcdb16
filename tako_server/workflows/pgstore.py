"""The job queue in PostgreSQL (multi-server environments), through asyncpg.

Same rules as :mod:`.store` (whose :class:`~.store.Run` and :func:`~.store.failed_attempt`
it shares). Every server of the environment talks to the same database, so:

- a claim takes the oldest ready run with ``SELECT ... FOR UPDATE SKIP LOCKED`` inside
  the ``UPDATE``: two servers never get the same run, and neither waits for the other;
- the unique key on ``(app, env, grp, key)`` makes a schedule tick that every server
  enqueues land once (``ON CONFLICT DO NOTHING``);
- expiring leases locks the rows it changes (``SKIP LOCKED``): concurrent reapers on two
  servers never count one lost lease twice.
"""

from __future__ import annotations

from typing import Any

from tako_common.errors import TakoError
from tako_server.workflows.store import (
    COLUMNS,
    LOST_LEASE,
    STATES,
    WORKER_EXITED,
    NewRun,
    Run,
    failed_attempt,
    run_from_row,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tako_runs (
    id BIGSERIAL PRIMARY KEY,
    app TEXT NOT NULL, env TEXT NOT NULL, grp TEXT NOT NULL,
    payload TEXT NOT NULL, key TEXT,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL,
    run_at DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION, worker TEXT, last_error TEXT, result TEXT,
    finished_at DOUBLE PRECISION,
    UNIQUE (app, env, grp, key)
);
CREATE INDEX IF NOT EXISTS tako_runs_ready ON tako_runs (app, env, grp, state, run_at);
CREATE INDEX IF NOT EXISTS tako_runs_lease ON tako_runs (state, lease_until);
"""


class QueueUnavailable(TakoError):
    code = "queue_unavailable"


class PgStore:
    """The queue in a PostgreSQL database shared by the environment's servers."""

    def __init__(self, pool: Any, label: str) -> None:
        self.pool = pool
        self.label = label

    def __repr__(self) -> str:
        return f"PgStore({self.label})"

    @classmethod
    async def connect(cls, url: str) -> PgStore:
        import asyncpg  # type: ignore[import-untyped]

        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=8, timeout=10)
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock(7331)")
                try:
                    await conn.execute(SCHEMA)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(7331)")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise QueueUnavailable(
                f"cannot reach the workflows PostgreSQL database: {exc}",
                hint="check postgres_url (tako credentials set postgres_url --env ENV)",
            ) from exc
        except ValueError:  # the URL itself (its text may hold the password: not shown)
            raise QueueUnavailable(
                "postgres_url is not a valid PostgreSQL URL",
                hint="use postgresql://user:password@host:5432/database",
            ) from None
        host = url.rpartition("@")[2]  # never the password
        return cls(pool, host)

    async def _one(self, sql: str, *args: Any) -> Run | None:
        row = await self.pool.fetchrow(f"SELECT {COLUMNS} FROM tako_runs WHERE {sql}", *args)
        return run_from_row(tuple(row)) if row is not None else None

    async def enqueue(self, new: NewRun, now: float) -> tuple[Run, bool]:
        row = await self.pool.fetchrow(
            "INSERT INTO tako_runs (app, env, grp, payload, key, state, retries, run_at,"
            " created_at) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8)"
            f" ON CONFLICT DO NOTHING RETURNING {COLUMNS}",
            new.app, new.env, new.group, new.payload, new.key, new.retries,
            now + new.delay, now,
        )
        if row is not None:
            return run_from_row(tuple(row)), True
        existing = await self._one(
            "app = $1 AND env = $2 AND grp = $3 AND key = $4", new.app, new.env, new.group, new.key
        )
        assert existing is not None
        return existing, False

    async def claim(
        self, app: str, env: str, group: str, worker: str, now: float, lease: float
    ) -> Run | None:
        row = await self.pool.fetchrow(
            "UPDATE tako_runs SET state = 'running', attempts = attempts + 1,"
            " lease_until = $1, worker = $2 WHERE id = (SELECT id FROM tako_runs"
            " WHERE app = $3 AND env = $4 AND grp = $5 AND state = 'queued' AND run_at <= $6"
            " ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {COLUMNS}",
            now + lease, worker, app, env, group, now,
        )
        return run_from_row(tuple(row)) if row is not None else None

    async def heartbeat(
        self, app: str, env: str, run_id: int, worker: str, now: float, lease: float
    ) -> bool:
        status = await self.pool.execute(
            "UPDATE tako_runs SET lease_until = $1 WHERE id = $2 AND app = $3 AND env = $4"
            " AND state = 'running' AND worker = $5",
            now + lease, run_id, app, env, worker,
        )
        return bool(status == "UPDATE 1")

    async def complete(
        self, app: str, env: str, run_id: int, worker: str, result: str, now: float
    ) -> bool:
        status = await self.pool.execute(
            "UPDATE tako_runs SET state = 'done', result = $1, finished_at = $2,"
            " lease_until = NULL WHERE id = $3 AND app = $4 AND env = $5"
            " AND state = 'running' AND worker = $6",
            result, now, run_id, app, env, worker,
        )
        return bool(status == "UPDATE 1")

    async def _fail_locked(self, where: str, args: tuple[Any, ...], error: str, retry: bool,
                           now: float, rand: float) -> list[Run]:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM tako_runs WHERE state = 'running' AND {where}"
                " FOR UPDATE SKIP LOCKED",
                *args,
            )
            for row in rows:
                values = failed_attempt(run_from_row(tuple(row)), error, retry, now, rand)
                await conn.execute(
                    "UPDATE tako_runs SET state = $1, run_at = $2, finished_at = $3,"
                    " last_error = $4, lease_until = NULL WHERE id = $5",
                    values["state"], values["run_at"], values["finished_at"],
                    values["last_error"], row["id"],
                )
            return [run_from_row(tuple(row)) for row in rows]

    async def fail(
        self, app: str, env: str, run_id: int, worker: str, error: str, retry: bool, now: float,
        rand: float,
    ) -> Run | None:
        done = await self._fail_locked(
            "id = $1 AND app = $2 AND env = $3 AND worker = $4", (run_id, app, env, worker),
            error, retry, now, rand,
        )
        return await self.get(app, env, run_id) if done else None

    async def expire(self, now: float, rand: float) -> int:
        return len(await self._fail_locked("lease_until < $1", (now,), LOST_LEASE, True, now, rand))

    async def renew_worker(self, worker: str, now: float, lease: float) -> int:
        status = await self.pool.execute(
            "UPDATE tako_runs SET lease_until = $1 WHERE state = 'running' AND worker = $2",
            now + lease, worker,
        )
        return int(str(status).rsplit(" ", 1)[-1])

    async def release_worker(self, worker: str, now: float, rand: float) -> int:
        done = await self._fail_locked("worker = $1", (worker,), WORKER_EXITED, True, now, rand)
        return len(done)

    async def get(self, app: str, env: str, run_id: int) -> Run | None:
        return await self._one("id = $1 AND app = $2 AND env = $3", run_id, app, env)

    async def runs(
        self, app: str, env: str, group: str | None, state: str | None, limit: int
    ) -> list[Run]:
        rows = await self.pool.fetch(
            f"SELECT {COLUMNS} FROM tako_runs WHERE app = $1 AND env = $2"
            " AND ($3::text IS NULL OR grp = $3) AND ($4::text IS NULL OR state = $4)"
            " ORDER BY id DESC LIMIT $5",
            app, env, group, state, limit,
        )
        return [run_from_row(tuple(row)) for row in rows]

    async def counts(self, app: str, env: str) -> dict[str, dict[str, int]]:
        rows = await self.pool.fetch(
            "SELECT grp, state, count(*) FROM tako_runs WHERE app = $1 AND env = $2"
            " GROUP BY grp, state",
            app, env,
        )
        found: dict[str, dict[str, int]] = {}
        for group, state, count in rows:
            found.setdefault(group, dict.fromkeys(STATES, 0))[state] = int(count)
        return found

    async def ready(self, app: str, env: str, group: str, now: float) -> int:
        value = await self.pool.fetchval(
            "SELECT count(*) FROM tako_runs WHERE app = $1 AND env = $2 AND grp = $3"
            " AND state = 'queued' AND run_at <= $4",
            app, env, group, now,
        )
        return int(value)

    async def retry(self, app: str, env: str, run_id: int, now: float) -> Run | None:
        status = await self.pool.execute(
            "UPDATE tako_runs SET state = 'queued', attempts = 0, run_at = $1,"
            " finished_at = NULL, worker = NULL WHERE id = $2 AND app = $3 AND env = $4"
            " AND state = 'failed'",
            now, run_id, app, env,
        )
        return await self.get(app, env, run_id) if status == "UPDATE 1" else None

    async def close(self) -> None:
        await self.pool.close()
