"""``BackupService``: take, list, fetch and restore backups; the scheduler; the run history.

Rules:

- a backup is: pack ``apps/{app}/{env}/data`` into an encrypted archive in the app's
  scratch dir, upload it to ``_tako/backups/{app}/{env}/{server}/{id}.tkb``, read it back
  (size and SHA-256 must match), and only then call it good; retention runs after that
  (a retention failure is a warning, never a lost backup);
- every attempt is recorded in the state database with its trigger (``schedule`` or
  ``manual``) and, when it failed, its reason (unreachable bucket, wrong credentials, disk
  full, ...); a failed ``backup_now`` is an error answer, so ``tako backups now`` exits
  non-zero; the last failure shows in ``status`` and ``backup_status``;
- one backup or restore of an app at a time (a per-app lock); the local archive is
  removed on every path;
- a restore fetches and checks the archive (same app and environment, a key this server
  has, authentic chunks) and extracts it into a staging dir BEFORE it stops anything;
  then it stops the app's instances, swaps the data dir, and starts the app again as it
  was (a stopped app stays stopped); the replaced data is kept until the app started;
- the scheduler wakes every ``check_every`` seconds and takes the backups that are due
  (:func:`~tako_server.backups.retention.next_due`); it never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets as random_tokens
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tako_common.backup_archive import BackupHeader
from tako_common.errors import TakoError
from tako_common.protocol import (
    BackupFetchData,
    BackupFetchDoneData,
    BackupInfo,
    BackupListData,
    BackupNowData,
    BackupRestoreData,
    BackupRun,
    BackupSettings,
    BackupStatusData,
)
from tako_common.storages import (
    BACKUP_ROOT,
    backup_object_key,
    backup_prefix,
    backup_time,
    new_backup_id,
    parse_object_key,
)
from tako_server import deployer
from tako_server.backups import retention
from tako_server.backups.bucket import BackupError, Bucket, StoredObject, describe
from tako_server.backups.pack import RestoreRefused, pack, unpack
from tako_server.context import ServerContext, utc_iso
from tako_server.state import AppRecord, BackupRunRow

log = logging.getLogger(__name__)

CHECK_EVERY = 60.0
DOWNLOAD_TTL = 3600.0
Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _run_model(row: BackupRunRow) -> BackupRun:
    return BackupRun(
        id=row.id,
        trigger="manual" if row.trigger == "manual" else "schedule",
        started_at=row.started_at,
        finished_at=row.finished_at,
        ok=row.ok,
        reason=row.reason,
        size=row.size,
        sha256=row.sha256,
        pruned=row.pruned,
    )


def _info(obj: StoredObject) -> BackupInfo | None:
    name = parse_object_key(obj.key)
    if name is None:
        return None
    created = utc_iso(backup_time(name.id))
    return BackupInfo(
        id=name.id, server=name.server, created_at=created, size=obj.size, key=obj.key
    )


class BackupService:
    def __init__(self, ctx: ServerContext, *, clock: Clock = _now) -> None:
        self.ctx = ctx
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        busy = sorted(k for k, lock in self._locks.items() if lock.locked())
        return f"BackupService(busy={busy})"

    # ------------------------------------------------------------------ helpers

    def settings(self, app: str, env: str) -> BackupSettings:
        deployer.require_app(self.ctx, app, env)
        found = self.ctx.storage.get(app, env).backup
        if found is None:
            raise BackupError(
                f"backups are not enabled for {app}/{env} on this server",
                hint='set backup = { storage = "..." } in [envs.'
                f"{env}] of tako.toml, add credentials, and deploy",
                code="backups_disabled",
            )
        return found

    def bucket(self, settings: BackupSettings) -> Bucket:
        return Bucket(settings.target, self.ctx.settings.storage_ca_bundle)

    def _lock(self, app: str, env: str) -> asyncio.Lock:
        return self._locks.setdefault(f"{app}/{env}", asyncio.Lock())

    def _work_dir(self, app: str, env: str) -> Path:
        path = self.ctx.layout.backup_work_dir(app, env)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def last_failure(self, app: str, env: str) -> str | None:
        """The reason of the last attempt when it failed (``servers status`` flags it)."""
        runs = self.ctx.state.backup_runs(app, env, limit=1)
        return runs[0].reason if runs and not runs[0].ok else None

    # ------------------------------------------------------------------ take one

    async def backup_now(self, app: str, env: str, trigger: str = "manual") -> BackupNowData:
        settings = self.settings(app, env)
        async with self._lock(app, env):
            started = self.clock()
            backup_id = new_backup_id(started, random_tokens.token_hex(3))
            row = BackupRunRow(backup_id, trigger, utc_iso(started), None, ok=False)
            try:
                data = await self._take(app, env, settings, backup_id, started)
            except Exception as exc:  # every failure is recorded with its reason, then raised
                reason = exc.message if isinstance(exc, TakoError) else describe(exc)
                self._record(app, env, row, ok=False, reason=reason)
                log.error("backup %s of %s/%s failed: %s", backup_id, app, env, reason)
                raise BackupError(
                    f"backup of {app}/{env} failed: {reason}",
                    hint="see `tako backups status`; fix the storage and run "
                    "`tako backups now` again",
                ) from exc
            self._record(
                app,
                env,
                row,
                ok=True,
                size=data.backup.size,
                sha256=data.sha256,
                pruned=data.pruned,
            )
            log.info("backup %s of %s/%s stored (%d bytes)", backup_id, app, env, data.backup.size)
            return data

    async def _take(
        self, app: str, env: str, settings: BackupSettings, backup_id: str, started: datetime
    ) -> BackupNowData:
        key = backup_object_key(app, env, settings.server, backup_id)
        header = BackupHeader(
            app=app,
            env=env,
            server=settings.server,
            id=backup_id,
            key_id=settings.active_key.id,
            created_at=utc_iso(started),
        )
        out = self._work_dir(app, env) / f"{backup_id}.tkb"
        bucket = self.bucket(settings)
        try:
            root = self.ctx.layout.data_root(app, env)
            packed = await asyncio.to_thread(pack, root, out, header, settings.active_key)
            metadata = {"sha256": packed.sha256, "tako-key-id": header.key_id}
            await asyncio.to_thread(bucket.upload, key, out, metadata)
            await asyncio.to_thread(bucket.verify, key, packed.size, packed.sha256)
        finally:
            with contextlib.suppress(OSError):
                out.unlink()
        pruned, warnings = await self._prune(app, env, settings, bucket)
        info = BackupInfo(
            id=backup_id,
            server=settings.server,
            created_at=header.created_at,
            size=packed.size,
            key=key,
        )
        return BackupNowData(
            app=app,
            env=env,
            backup=info,
            sha256=packed.sha256,
            pruned=pruned,
            warnings=packed.warnings + warnings,
        )

    async def _prune(
        self, app: str, env: str, settings: BackupSettings, bucket: Bucket
    ) -> tuple[list[str], list[str]]:
        """Apply retention to this server's backups; failures are warnings."""
        prefix = f"{backup_prefix(app, env)}{settings.server}/"
        try:
            found = [i for o in await asyncio.to_thread(bucket.list, prefix) if (i := _info(o))]
            policy = retention.Retention(settings.keep_daily, settings.keep_weekly)
            doomed = retention.select_pruned(((backup_time(i.id), i.id) for i in found), policy)
            keys = {i.id: i.key for i in found}
            for backup_id in doomed:
                await asyncio.to_thread(bucket.delete, keys[backup_id])
        except BackupError as exc:
            return [], [f"retention: {exc.message}"]
        return doomed, []

    def _record(self, app: str, env: str, row: BackupRunRow, **changes: Any) -> None:
        done = replace(row, finished_at=utc_iso(self.clock()), **changes)
        self.ctx.state.save_backup_run(app, env, done)

    # ------------------------------------------------------------------ read

    async def list_backups(self, app: str, env: str) -> BackupListData:
        settings = self.settings(app, env)
        found = await asyncio.to_thread(self.bucket(settings).list, backup_prefix(app, env))
        items = [info for obj in found if (info := _info(obj)) is not None]
        items.sort(key=lambda i: i.id, reverse=True)
        return BackupListData(app=app, env=env, backups=items)

    def status(self, app: str, env: str) -> BackupStatusData:
        deployer.require_app(self.ctx, app, env)
        stored = self.ctx.storage.get(app, env)
        runs = self.ctx.state.backup_runs(app, env, limit=10)
        settings = stored.backup
        if settings is None:
            return BackupStatusData(
                app=app, env=env, enabled=False, runs=[_run_model(r) for r in runs]
            )
        last_ok = next((r for r in runs if r.ok), None)
        return BackupStatusData(
            app=app,
            env=env,
            enabled=True,
            storage=settings.storage,
            bucket=settings.target.bucket,
            endpoint=settings.target.endpoint,
            server=settings.server,
            interval_hours=settings.interval_hours,
            keep_daily=settings.keep_daily,
            keep_weekly=settings.keep_weekly,
            last_success=_run_model(last_ok) if last_ok else None,
            last_run=_run_model(runs[0]) if runs else None,
            next_due=utc_iso(self.next_due(settings, stored.backup_since, runs)),
            runs=[_run_model(r) for r in runs],
        )

    def next_due(
        self, settings: BackupSettings, since: str | None, runs: list[BackupRunRow]
    ) -> datetime:
        enabled = _parse_time(since) or self.clock()
        last = runs[0] if runs else None
        return retention.next_due(
            timedelta(hours=settings.interval_hours),
            enabled,
            _parse_time(last.started_at) if last else None,
            last is not None and not last.ok,
        )

    async def _locate(self, app: str, env: str, settings: BackupSettings, backup_id: str) -> str:
        """The object key of ``backup_id`` of this app/env; another app's id is refused."""
        bucket = self.bucket(settings)
        for prefix in (backup_prefix(app, env), f"{BACKUP_ROOT}/"):
            for obj in await asyncio.to_thread(bucket.list, prefix):
                name = parse_object_key(obj.key)
                if name is None or name.id != backup_id:
                    continue
                if (name.app, name.env) != (app, env):
                    raise RestoreRefused(
                        f"backup {backup_id} belongs to {name.app}/{name.env}, not {app}/{env}:"
                        " a restore only takes backups of the same app and environment"
                    )
                return obj.key
        raise BackupError(
            f"backup {backup_id} of {app}/{env} is not in {bucket.where}",
            hint="list the backups with `tako backups ls`",
            code="not_found",
        )

    # ------------------------------------------------------------------ download

    async def fetch(self, app: str, env: str, backup_id: str) -> BackupFetchData:
        settings = self.settings(app, env)
        key = await self._locate(app, env, settings, backup_id)
        downloads = self.ctx.layout.downloads_dir
        downloads.mkdir(parents=True, exist_ok=True, mode=0o700)
        _remove_stale(downloads, time.time() - DOWNLOAD_TTL)
        dest = downloads / f"{app}-{env}-{backup_id}.tkb"
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        bucket = self.bucket(settings)
        try:
            expected = await asyncio.to_thread(bucket.stored_sha256, key)
            sha256 = await asyncio.to_thread(bucket.download, key, dest)
            if expected is not None and sha256 != expected:
                raise BackupError(f"{key} in {bucket.where} does not match its recorded SHA-256")
        except BaseException:
            with contextlib.suppress(OSError):
                dest.unlink()
            raise
        return BackupFetchData(
            app=app,
            env=env,
            id=backup_id,
            path=str(dest),
            size=dest.stat().st_size,
            sha256=sha256,
        )

    def fetch_done(self, app: str, env: str, backup_id: str) -> BackupFetchDoneData:
        dest = self.ctx.layout.downloads_dir / f"{app}-{env}-{backup_id}.tkb"
        removed = dest.exists()
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        return BackupFetchDoneData(app=app, env=env, id=backup_id, removed=removed)

    # ------------------------------------------------------------------ restore

    async def restore(self, app: str, env: str, backup_id: str) -> BackupRestoreData:
        settings = self.settings(app, env)
        record = deployer.require_app(self.ctx, app, env)
        key = await self._locate(app, env, settings, backup_id)
        async with self._lock(app, env):
            work = self._work_dir(app, env)
            archive = work / f"restore-{backup_id}.tkb"
            staging = work / f"restore-{backup_id}"
            for leftover in (archive, staging):
                _remove(leftover)
            try:
                await asyncio.to_thread(self.bucket(settings).download, key, archive)
                header, data, count = await asyncio.to_thread(
                    unpack, archive, staging, app, env, settings.keys
                )
                await self._swap_and_start(record, data, work / f"replaced-{backup_id}")
            finally:
                _remove(archive)
                _remove(staging)
        runtime = self.ctx.supervisor.status(record.key)
        return BackupRestoreData(
            app=app,
            env=env,
            id=backup_id,
            from_server=header.server,
            created_at=header.created_at,
            files=count,
            instances=len(runtime.instances) if runtime else 0,
        )

    async def _swap_and_start(self, record: AppRecord, data: Path, old: Path) -> None:
        """Stop the app, put ``data`` in place of its data dir, start it as it was."""
        ctx = self.ctx
        root = ctx.layout.data_root(record.app, record.env)
        if record.key in ctx.supervisor.keys():
            await ctx.supervisor.stop(record.key)
        _remove(old)
        if root.exists():
            os.rename(root, old)
        os.rename(data, root)
        log.info("restored the data of %s; starting it again", record.key)
        if record.state == "running":
            secrets = ctx.secrets.get(record.app, record.env)
            spec = deployer.spec_for(ctx, deployer.release_of(ctx, record), record.vars, secrets)
            await ctx.supervisor.deploy(spec, record.desired_instances, record.idle_timeout)
        _remove(old)

    # ------------------------------------------------------------------ schedule

    async def run_scheduler(self, check_every: float = CHECK_EVERY) -> None:
        """Take every due backup, forever (cancel to stop)."""
        while True:
            await self.run_due()
            await asyncio.sleep(check_every)

    async def run_due(self) -> list[str]:
        """Take the backups that are due now; return the ``app/env`` keys attempted."""
        attempted = []
        for app, env, settings in self.ctx.storage.with_backups():
            if self.ctx.state.get_app(app, env) is None or self._lock(app, env).locked():
                continue
            runs = self.ctx.state.backup_runs(app, env, limit=1)
            since = self.ctx.storage.get(app, env).backup_since
            if self.next_due(settings, since, runs) > self.clock():
                continue
            attempted.append(f"{app}/{env}")
            with contextlib.suppress(TakoError):  # recorded and logged by backup_now
                await self.backup_now(app, env, trigger="schedule")
        return attempted


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_stale(directory: Path, cutoff: float) -> None:
    for entry in directory.iterdir():
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < cutoff:
                _remove(entry)
