"""Durable server state in SQLite (``runtime-state.sqlite3``): apps, routes, releases, mode,
maintenance.

Rules:

- The schema is a list of ordered migrations; ``PRAGMA user_version`` records how many
  ran. Opening a database written by a newer tako-server (higher ``user_version``) is
  refused with a clear message instead of guessing.
- WAL journal, foreign keys on; every write is one transaction (``with self._db``), so a
  crash never leaves half a deploy behind.
- Secrets are stored only as encrypted blobs (see :mod:`tako_server.secrets_store`).
- Plain synchronous sqlite3: statements are tiny and local; callers need no thread hop.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tako_common.errors import TakoError

DesiredState = Literal["running", "stopped"]
Mode = Literal["normal", "upgrading"]

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE apps (
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        version TEXT NOT NULL,
        desired_instances INTEGER NOT NULL,
        idle_timeout INTEGER NOT NULL,
        manifest TEXT NOT NULL,
        vars TEXT NOT NULL,
        deployed_at TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (app, env)
    );
    CREATE TABLE app_routes (
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        position INTEGER NOT NULL,
        route TEXT NOT NULL,
        PRIMARY KEY (app, env, route),
        FOREIGN KEY (app, env) REFERENCES apps (app, env) ON DELETE CASCADE
    );
    CREATE TABLE releases (
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        version TEXT NOT NULL,
        deployed_at TEXT NOT NULL,
        PRIMARY KEY (app, env, version)
    );
    CREATE TABLE secrets (
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        blob BLOB NOT NULL,
        PRIMARY KEY (app, env)
    );
    CREATE TABLE server_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        mode TEXT NOT NULL,
        upgrade_owner TEXT,
        upgrade_since TEXT
    );
    INSERT INTO server_state (id, mode) VALUES (1, 'normal');
    """,
    """
    CREATE TABLE app_storage (
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        blob BLOB NOT NULL,
        PRIMARY KEY (app, env)
    );
    CREATE TABLE backup_runs (
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        ok INTEGER NOT NULL,
        reason TEXT,
        size INTEGER,
        sha256 TEXT,
        pruned TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (app, env, id)
    );
    """,
    # maintenance mode per app (kept across deploys; removed with the app)
    """
    CREATE TABLE app_maintenance (
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        message TEXT NOT NULL,
        since TEXT NOT NULL,
        PRIMARY KEY (app, env)
    );
    """,    # provider credentials per app (tako credentials), sealed with the secrets key
    """
    CREATE TABLE app_credentials (
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        blob BLOB NOT NULL,
        PRIMARY KEY (app, env)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNewError(TakoError):
    code = "schema_too_new"


@dataclass(frozen=True)
class AppRecord:
    """One deployed app/env as persisted; ``manifest`` is the release manifest (no secrets)."""

    app: str
    env: str
    version: str
    desired_instances: int
    idle_timeout: int
    manifest: dict[str, Any]
    vars: dict[str, str]
    deployed_at: str
    state: DesiredState = "running"
    routes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.app}/{self.env}"


@dataclass(frozen=True)
class BackupRunRow:
    """One backup attempt as stored (``ok`` False with a ``reason`` when it failed)."""

    id: str
    trigger: str
    started_at: str
    finished_at: str | None
    ok: bool
    reason: str | None = None
    size: int | None = None
    sha256: str | None = None
    pruned: list[str] = field(default_factory=list)

    def row(self) -> tuple[Any, ...]:
        return (
            self.id, self.trigger, self.started_at, self.finished_at, int(self.ok),
            self.reason, self.size, self.sha256, json.dumps(self.pruned),
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> BackupRunRow:
        return cls(
            id=row[0], trigger=row[1], started_at=row[2], finished_at=row[3], ok=bool(row[4]),
            reason=row[5], size=row[6], sha256=row[7], pruned=list(json.loads(row[8])),
        )


@dataclass(frozen=True)
class Maintenance:
    """An app's maintenance mode: the page's message (``""``: the default) and since when."""

    message: str
    since: str


@dataclass(frozen=True)
class ServerMode:
    mode: Mode
    owner: str | None
    since: str | None


class StateStore:
    """The open database; build with :meth:`open` (migrates) and :meth:`close` at exit."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, path: Path) -> StateStore:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            migrate(db, path)
        except BaseException:
            db.close()
            raise
        db.isolation_level = "DEFERRED"
        return cls(db, path)

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"StateStore({str(self.path)!r})"

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db:
            yield self._db

    # ------------------------------------------------------------------ apps

    def save_app(self, record: AppRecord) -> None:
        """Insert or replace an app with its routes and add its release to the history."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO apps (app, env, version, desired_instances, idle_timeout,"
                " manifest, vars, deployed_at, state) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    record.app,
                    record.env,
                    record.version,
                    record.desired_instances,
                    record.idle_timeout,
                    json.dumps(record.manifest),
                    json.dumps(record.vars),
                    record.deployed_at,
                    record.state,
                ),
            )
            db.execute("DELETE FROM app_routes WHERE app=? AND env=?", (record.app, record.env))
            db.executemany(
                "INSERT OR IGNORE INTO app_routes (app, env, position, route) VALUES (?,?,?,?)",
                [(record.app, record.env, i, r) for i, r in enumerate(record.routes)],
            )
            db.execute(
                "INSERT OR REPLACE INTO releases (app, env, version, deployed_at) VALUES (?,?,?,?)",
                (record.app, record.env, record.version, record.deployed_at),
            )

    def get_app(self, app: str, env: str) -> AppRecord | None:
        rows = self._select_apps("WHERE app=? AND env=?", (app, env))
        return rows[0] if rows else None

    def list_apps(self) -> list[AppRecord]:
        return self._select_apps("", ())

    def _select_apps(self, where: str, args: tuple[Any, ...]) -> list[AppRecord]:
        rows = self._db.execute(
            "SELECT app, env, version, desired_instances, idle_timeout, manifest, vars,"
            f" deployed_at, state FROM apps {where} ORDER BY app, env",
            args,
        ).fetchall()
        records = []
        for row in rows:
            routes = [
                r[0]
                for r in self._db.execute(
                    "SELECT route FROM app_routes WHERE app=? AND env=? ORDER BY position",
                    (row[0], row[1]),
                )
            ]
            records.append(
                AppRecord(
                    app=row[0],
                    env=row[1],
                    version=row[2],
                    desired_instances=row[3],
                    idle_timeout=row[4],
                    manifest=json.loads(row[5]),
                    vars=json.loads(row[6]),
                    deployed_at=row[7],
                    state=row[8],
                    routes=routes,
                )
            )
        return records

    def all_routes(self) -> dict[str, list[str]]:
        """``{"app/env": [route, ...]}`` for every app."""
        result: dict[str, list[str]] = {}
        for app, env, route in self._db.execute(
            "SELECT app, env, route FROM app_routes ORDER BY app, env, position"
        ):
            result.setdefault(f"{app}/{env}", []).append(route)
        return result

    def set_desired(self, app: str, env: str, desired: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE apps SET desired_instances=?, state='running' WHERE app=? AND env=?",
                (desired, app, env),
            )

    def set_state(self, app: str, env: str, state: DesiredState) -> None:
        with self._tx() as db:
            db.execute("UPDATE apps SET state=? WHERE app=? AND env=?", (state, app, env))

    def delete_app(self, app: str, env: str) -> bool:
        """Forget the app, its routes, release history and secrets; True if it existed."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM apps WHERE app=? AND env=?", (app, env))
            existed = cur.rowcount > 0
            for table in (
                "app_routes",
                "releases",
                "secrets",
                "app_storage",
                "backup_runs",
                "app_maintenance",
                "app_credentials",
            ):
                cur = db.execute(f"DELETE FROM {table} WHERE app=? AND env=?", (app, env))
                existed = existed or cur.rowcount > 0
        return existed

    # ------------------------------------------------------------------ releases

    def release_times(self, app: str, env: str) -> dict[str, str]:
        """``{version: deployed_at}`` of the releases deployed successfully."""
        return dict(
            self._db.execute(
                "SELECT version, deployed_at FROM releases WHERE app=? AND env=?", (app, env)
            ).fetchall()
        )

    def forget_releases(self, app: str, env: str, versions: list[str]) -> None:
        with self._tx() as db:
            db.executemany(
                "DELETE FROM releases WHERE app=? AND env=? AND version=?",
                [(app, env, v) for v in versions],
            )

    # ------------------------------------------------------------------ secrets

    def put_secrets_blob(self, app: str, env: str, blob: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO secrets (app, env, blob) VALUES (?,?,?)", (app, env, blob)
            )

    def get_secrets_blob(self, app: str, env: str) -> bytes | None:
        row = self._db.execute(
            "SELECT blob FROM secrets WHERE app=? AND env=?", (app, env)
        ).fetchone()
        return bytes(row[0]) if row else None

    # ------------------------------------------------------------------ storages, backups

    def put_storage_blob(self, app: str, env: str, blob: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO app_storage (app, env, blob) VALUES (?,?,?)",
                (app, env, blob),
            )

    def get_storage_blob(self, app: str, env: str) -> bytes | None:
        row = self._db.execute(
            "SELECT blob FROM app_storage WHERE app=? AND env=?", (app, env)
        ).fetchone()
        return bytes(row[0]) if row else None

    def storage_keys(self) -> list[tuple[str, str]]:
        """Every ``(app, env)`` with stored storage settings."""
        rows = self._db.execute("SELECT app, env FROM app_storage ORDER BY app, env")
        return [(str(app), str(env)) for app, env in rows]

    # ------------------------------------------------------------------ credentials

    def put_credentials_blob(self, app: str, env: str, blob: bytes | None) -> None:
        """Store the sealed credentials of an app; ``None`` removes them."""
        with self._tx() as db:
            if blob is None:
                db.execute("DELETE FROM app_credentials WHERE app=? AND env=?", (app, env))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO app_credentials (app, env, blob) VALUES (?,?,?)",
                    (app, env, blob),
                )

    def get_credentials_blob(self, app: str, env: str) -> bytes | None:
        row = self._db.execute(
            "SELECT blob FROM app_credentials WHERE app=? AND env=?", (app, env)
        ).fetchone()
        return bytes(row[0]) if row else None

    def save_backup_run(self, app: str, env: str, run: BackupRunRow, keep: int = 50) -> None:
        """Insert or update one backup run; only the newest ``keep`` runs are kept."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO backup_runs (app, env, id, trigger, started_at,"
                " finished_at, ok, reason, size, sha256, pruned) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (app, env, *run.row()),
            )
            db.execute(
                "DELETE FROM backup_runs WHERE app=? AND env=? AND id NOT IN (SELECT id FROM"
                " backup_runs WHERE app=? AND env=? ORDER BY started_at DESC, id DESC LIMIT ?)",
                (app, env, app, env, keep),
            )

    def backup_runs(self, app: str, env: str, limit: int = 50) -> list[BackupRunRow]:
        """The newest runs first."""
        rows = self._db.execute(
            "SELECT id, trigger, started_at, finished_at, ok, reason, size, sha256, pruned"
            " FROM backup_runs WHERE app=? AND env=? ORDER BY started_at DESC, id DESC LIMIT ?",
            (app, env, limit),
        ).fetchall()
        return [BackupRunRow.from_row(row) for row in rows]

    # ------------------------------------------------------------------ maintenance

    def set_maintenance(self, app: str, env: str, message: str, since: str) -> Maintenance:
        """Turn maintenance on (or change its message); ``since`` stays the first time's."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO app_maintenance (app, env, message, since) VALUES (?,?,?,?)"
                " ON CONFLICT (app, env) DO UPDATE SET message=excluded.message",
                (app, env, message, since),
            )
        found = self.maintenance(app, env)
        assert found is not None
        return found

    def clear_maintenance(self, app: str, env: str) -> bool:
        """Turn maintenance off; True if it was on."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM app_maintenance WHERE app=? AND env=?", (app, env))
        return cur.rowcount > 0

    def maintenance(self, app: str, env: str) -> Maintenance | None:
        row = self._db.execute(
            "SELECT message, since FROM app_maintenance WHERE app=? AND env=?", (app, env)
        ).fetchone()
        return Maintenance(message=row[0], since=row[1]) if row else None

    def all_maintenance(self) -> dict[str, Maintenance]:
        """``{"app/env": Maintenance}`` of every app in maintenance mode."""
        return {
            f"{app}/{env}": Maintenance(message=message, since=since)
            for app, env, message, since in self._db.execute(
                "SELECT app, env, message, since FROM app_maintenance ORDER BY app, env"
            )
        }

    # ------------------------------------------------------------------ server mode

    def server_mode(self) -> ServerMode:
        row = self._db.execute(
            "SELECT mode, upgrade_owner, upgrade_since FROM server_state WHERE id=1"
        ).fetchone()
        return ServerMode(mode=row[0], owner=row[1], since=row[2])

    def set_server_mode(self, mode: Mode, owner: str | None, since: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE server_state SET mode=?, upgrade_owner=?, upgrade_since=? WHERE id=1",
                (mode, owner, since),
            )


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Run the migrations the database has not seen; return the schema version."""
    current = int(db.execute("PRAGMA user_version").fetchone()[0])
    if current > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"state database {path} has schema version {current}, newer than the {SCHEMA_VERSION}"
            " this tako-server supports",
            hint="run the newer tako-server that wrote it, or restore a backup of the database",
        )
    for number in range(current, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[number]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={number + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
