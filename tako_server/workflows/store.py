"""The job queue's storage: the :class:`QueueStore` interface and its SQLite implementation.

Rules:

- a run belongs to one ``(app, env, group)``; an optional idempotency ``key`` is unique
  per ``(app, env, group)``: enqueueing the same key again returns the existing run
  (``created`` False) and changes nothing — that is how a schedule tick is enqueued once;
- states: ``queued`` (waits until ``run_at``) -> ``running`` (claimed: ``attempts`` + 1,
  leased until ``lease_until`` to one ``worker``) -> ``done`` | back to ``queued`` (a
  failure with retries left, after :func:`~.policy.retry_delay`) | ``failed`` (no retries
  left, kept with ``last_error``); ``retry`` puts a failed run back with a fresh count;
- a lease that runs out, or whose worker process exits, counts as a failed attempt;
- only the holder of the current lease can complete, fail or heartbeat a run: an answer
  from a worker that lost its lease is refused (the run went to another worker);
- time (``now``, epoch seconds) and jitter (``rand``) are arguments; the SQLite file lives
  in the server's data dir, so runs survive restarts and upgrades (WAL mode).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tako_server.workflows.policy import is_final_attempt, retry_delay

STATES = ("queued", "running", "done", "failed")
LOST_LEASE = "lease expired: the worker stopped heart-beating or died"
WORKER_EXITED = "the worker process exited while running it"


@dataclass(frozen=True)
class Run:
    """One run of a group as stored."""

    id: int
    app: str
    env: str
    group: str
    payload: str  # JSON text
    key: str | None
    state: str
    attempts: int
    retries: int
    run_at: float
    created_at: float
    lease_until: float | None = None
    worker: str | None = None
    last_error: str | None = None
    result: str | None = None  # JSON text
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "payload": json.loads(self.payload),
            "key": self.key,
            "state": self.state,
            "attempts": self.attempts,
            "retries": self.retries,
            "run_at": self.run_at,
            "created_at": self.created_at,
            "worker": self.worker,
            "last_error": self.last_error,
            "result": json.loads(self.result) if self.result is not None else None,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True)
class NewRun:
    """What enqueue needs."""

    app: str
    env: str
    group: str
    payload: str
    key: str | None
    retries: int
    delay: float = 0.0


class QueueStore(Protocol):
    async def enqueue(self, new: NewRun, now: float) -> tuple[Run, bool]: ...
    async def claim(
        self, app: str, env: str, group: str, worker: str, now: float, lease: float
    ) -> Run | None: ...
    async def heartbeat(
        self, app: str, env: str, run_id: int, worker: str, now: float, lease: float
    ) -> bool: ...
    async def complete(
        self, app: str, env: str, run_id: int, worker: str, result: str, now: float
    ) -> bool: ...
    async def fail(
        self, app: str, env: str, run_id: int, worker: str, error: str, retry: bool, now: float,
        rand: float,
    ) -> Run | None: ...
    async def expire(self, now: float, rand: float) -> int: ...
    async def release_worker(self, worker: str, now: float, rand: float) -> int: ...
    async def renew_worker(self, worker: str, now: float, lease: float) -> int: ...
    async def get(self, app: str, env: str, run_id: int) -> Run | None: ...
    async def runs(
        self, app: str, env: str, group: str | None, state: str | None, limit: int
    ) -> list[Run]: ...
    async def counts(self, app: str, env: str) -> dict[str, dict[str, int]]: ...
    async def ready(self, app: str, env: str, group: str, now: float) -> int: ...
    async def retry(self, app: str, env: str, run_id: int, now: float) -> Run | None: ...
    async def close(self) -> None: ...


COLUMNS = (
    "id, app, env, grp, payload, key, state, attempts, retries, run_at, created_at,"
    " lease_until, worker, last_error, result, finished_at"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL, env TEXT NOT NULL, grp TEXT NOT NULL,
    payload TEXT NOT NULL, key TEXT,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL,
    run_at REAL NOT NULL, created_at REAL NOT NULL,
    lease_until REAL, worker TEXT, last_error TEXT, result TEXT, finished_at REAL,
    UNIQUE (app, env, grp, key)
);
CREATE INDEX IF NOT EXISTS runs_ready ON runs (app, env, grp, state, run_at);
CREATE INDEX IF NOT EXISTS runs_lease ON runs (state, lease_until);
"""


def run_from_row(row: Any) -> Run:
    return Run(*row)  # COLUMNS are in the dataclass's order


def failed_attempt(run: Run, error: str, retry: bool, now: float, rand: float) -> dict[str, Any]:
    """The new values of a run whose attempt failed (pure: shared by both stores)."""
    if not retry or is_final_attempt(run.attempts, run.retries):
        return {"state": "failed", "run_at": run.run_at, "finished_at": now, "last_error": error}
    delay = retry_delay(run.attempts, rand)
    return {"state": "queued", "run_at": now + delay, "finished_at": None, "last_error": error}


class SqliteStore:
    """The queue in one SQLite file (single-server environments)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        path.chmod(0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _one(self, sql: str, args: tuple[Any, ...]) -> Run | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM runs WHERE {sql}", args).fetchone()
        return run_from_row(row) if row is not None else None

    async def enqueue(self, new: NewRun, now: float) -> tuple[Run, bool]:
        cur = self.db.execute(
            "INSERT INTO runs (app, env, grp, payload, key, state, retries, run_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?) ON CONFLICT DO NOTHING",
            (new.app, new.env, new.group, new.payload, new.key, new.retries,
             now + new.delay, now),
        )
        if cur.rowcount == 1:
            run = self._one("id = ?", (cur.lastrowid,))
            assert run is not None
            return run, True
        existing = self._one(
            "app = ? AND env = ? AND grp = ? AND key = ?", (new.app, new.env, new.group, new.key)
        )
        assert existing is not None
        return existing, False

    async def claim(
        self, app: str, env: str, group: str, worker: str, now: float, lease: float
    ) -> Run | None:
        row = self.db.execute(
            "UPDATE runs SET state = 'running', attempts = attempts + 1, lease_until = ?,"
            " worker = ? WHERE id = (SELECT id FROM runs WHERE app = ? AND env = ? AND grp = ?"
            " AND state = 'queued' AND run_at <= ? ORDER BY run_at, id LIMIT 1)"
            f" RETURNING {COLUMNS}",
            (now + lease, worker, app, env, group, now),
        ).fetchone()
        return run_from_row(row) if row is not None else None

    async def heartbeat(
        self, app: str, env: str, run_id: int, worker: str, now: float, lease: float
    ) -> bool:
        cur = self.db.execute(
            "UPDATE runs SET lease_until = ? WHERE id = ? AND app = ? AND env = ?"
            " AND state = 'running' AND worker = ?",
            (now + lease, run_id, app, env, worker),
        )
        return cur.rowcount == 1

    async def complete(
        self, app: str, env: str, run_id: int, worker: str, result: str, now: float
    ) -> bool:
        cur = self.db.execute(
            "UPDATE runs SET state = 'done', result = ?, finished_at = ?, lease_until = NULL"
            " WHERE id = ? AND app = ? AND env = ? AND state = 'running' AND worker = ?",
            (result, now, run_id, app, env, worker),
        )
        return cur.rowcount == 1

    async def fail(
        self, app: str, env: str, run_id: int, worker: str, error: str, retry: bool, now: float,
        rand: float,
    ) -> Run | None:
        run = self._one(
            "id = ? AND app = ? AND env = ? AND state = 'running' AND worker = ?",
            (run_id, app, env, worker),
        )
        if run is None:
            return None
        self._apply_failure(run, error, retry, now, rand)
        return self._one("id = ?", (run_id,))

    def _apply_failure(self, run: Run, error: str, retry: bool, now: float, rand: float) -> None:
        values = failed_attempt(run, error, retry, now, rand)
        self.db.execute(
            "UPDATE runs SET state = ?, run_at = ?, finished_at = ?, last_error = ?,"
            " lease_until = NULL WHERE id = ? AND state = 'running'",
            (values["state"], values["run_at"], values["finished_at"], values["last_error"],
             run.id),
        )

    async def expire(self, now: float, rand: float) -> int:
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM runs WHERE state = 'running' AND lease_until < ?", (now,)
        ).fetchall()
        for row in rows:
            self._apply_failure(run_from_row(row), LOST_LEASE, True, now, rand)
        return len(rows)

    async def release_worker(self, worker: str, now: float, rand: float) -> int:
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM runs WHERE state = 'running' AND worker = ?", (worker,)
        ).fetchall()
        for row in rows:
            self._apply_failure(run_from_row(row), WORKER_EXITED, True, now, rand)
        return len(rows)

    async def renew_worker(self, worker: str, now: float, lease: float) -> int:
        cur = self.db.execute(
            "UPDATE runs SET lease_until = ? WHERE state = 'running' AND worker = ?",
            (now + lease, worker),
        )
        return cur.rowcount

    async def get(self, app: str, env: str, run_id: int) -> Run | None:
        return self._one("id = ? AND app = ? AND env = ?", (run_id, app, env))

    async def runs(
        self, app: str, env: str, group: str | None, state: str | None, limit: int
    ) -> list[Run]:
        where, args = "app = ? AND env = ?", [app, env]
        if group is not None:
            where, args = where + " AND grp = ?", [*args, group]
        if state is not None:
            where, args = where + " AND state = ?", [*args, state]
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM runs WHERE {where} ORDER BY id DESC LIMIT ?", (*args, limit)
        ).fetchall()
        return [run_from_row(row) for row in rows]

    async def counts(self, app: str, env: str) -> dict[str, dict[str, int]]:
        rows = self.db.execute(
            "SELECT grp, state, count(*) FROM runs WHERE app = ? AND env = ? GROUP BY grp, state",
            (app, env),
        ).fetchall()
        found: dict[str, dict[str, int]] = {}
        for group, state, count in rows:
            found.setdefault(group, dict.fromkeys(STATES, 0))[state] = count
        return found

    async def ready(self, app: str, env: str, group: str, now: float) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM runs WHERE app = ? AND env = ? AND grp = ?"
            " AND state = 'queued' AND run_at <= ?",
            (app, env, group, now),
        ).fetchone()
        return int(row[0])

    async def retry(self, app: str, env: str, run_id: int, now: float) -> Run | None:
        cur = self.db.execute(
            "UPDATE runs SET state = 'queued', attempts = 0, run_at = ?, finished_at = NULL,"
            " worker = NULL WHERE id = ? AND app = ? AND env = ? AND state = 'failed'",
            (now, run_id, app, env),
        )
        return await self.get(app, env, run_id) if cur.rowcount == 1 else None

    async def close(self) -> None:
        self.db.close()
