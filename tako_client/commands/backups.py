"""``tako backups now | ls | status | download ID | restore ID``: the app's data backups.

Rules:

- ``now`` asks every server of the environment (or ``--server``) to take a backup and
  waits until each is verified in the bucket; any failure is printed with its reason and
  the exit code is 1;
- ``status`` shows per server the settings, the last success, the last attempt (a failed
  one with its reason) and when the next is due; it exits 1 when a server's last backup
  failed, so a cron job or CI notices;
- ``ls`` lists the environment's backups in the bucket (every server's), newest first;
- ``download ID`` copies the encrypted archive from the bucket through a server to
  ``--output``; ``--decrypt`` turns it into a plain ``.tar.zst`` locally with the backup
  keys of ``.tako/secrets.json`` (no server or bucket needed for the key);
- ``restore ID`` replaces the data of one server's app (``--server``, required when the
  environment has several) with the backup, restarting its instances; it asks on a
  terminal and needs ``--yes`` without one. A backup of another app or environment is
  refused by the server.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from tako_client import output
from tako_client.appctx import AppContext, load_app, servers_of
from tako_client.commands.servers import align
from tako_client.fanout import HostResult, failed
from tako_client.sessions import Session, on_servers
from tako_client.ssh import SshClient
from tako_client.storage_secrets import load_backup_keys
from tako_common.backup_archive import BackupCryptoError, DecryptingReader, read_header
from tako_common.errors import TakoError
from tako_common.protocol import (
    BackupFetchData,
    BackupListData,
    BackupNowData,
    BackupRestoreData,
    BackupRun,
    BackupStatusData,
)

EnvOpt = typer.Option("production", "--env", "-e", help="Environment.")
ConfigOpt = typer.Option(None, "--config", "-c", help="Path to tako.toml (app dir = its parent).")
ServerOpt = typer.Option(None, "--server", "-s", help="Only this server.")

backups_app = typer.Typer(name="backups", help="Encrypted backups of the app's data.")


def register(app: typer.Typer) -> None:
    backups_app.command("now", help="Take a backup now (verified in the bucket).")(now)
    backups_app.command("ls", help="List the environment's backups, newest first.")(ls)
    backups_app.command("list", hidden=True)(ls)
    backups_app.command("status", help="Settings, last runs and failures per server.")(status)
    backups_app.command("download", help="Download a backup (encrypted, or --decrypt).")(download)
    backups_app.command("restore", help="Replace the app's data with a backup.")(restore)
    app.add_typer(backups_app, name="backups")


def _context(config: str | None, env: str) -> AppContext:
    ctx = load_app(config, None, env)
    found = ctx.loaded.config.envs.get(env)
    if found is None or found.backup is None:
        raise TakoError(
            f"backups are not enabled for environment {env!r}",
            hint=f'set backup = {{ storage = "..." }} in [envs.{env}] of tako.toml and deploy',
        )
    return ctx



def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


def _fail_if_any(results: Sequence[HostResult[Any]], what: str) -> None:
    for result in failed(results):
        assert result.error is not None
        output.error(f"{result.server}: {result.error.message}", result.error.hint)
    bad = failed(results)
    if bad:
        output.error(f"{what} failed on {len(bad)} of {len(results)} server(s)")
        raise typer.Exit(1)


def now(env: str = EnvOpt, server: str | None = ServerOpt, config: str | None = ConfigOpt) -> None:
    """Take a backup of the app's data on every server of ENV now."""
    ctx = _context(config, env)

    async def one(session: Session) -> BackupNowData:
        data = await session.remote.backup_now(ctx.app, env)
        name = session.entry.name
        output.success(
            f"{name}: backup {data.backup.id} stored and verified "
            f"({_size(data.backup.size)}, sha256 {data.sha256[:12]}...)"
        )
        if data.pruned:
            output.detail(f"{name}: retention removed {', '.join(data.pruned)}")
        for warning in data.warnings:
            output.warn(f"{name}: {warning}")
        return data

    with output.spinner(f"Backing up {ctx.key}..."):
        results = asyncio.run(on_servers(SshClient.from_env(), servers_of(ctx, server), one))
    _fail_if_any(results, "backup")


def ls(env: str = EnvOpt, server: str | None = ServerOpt, config: str | None = ConfigOpt) -> None:
    """List the environment's backups (every server's), asking one server."""
    ctx = _context(config, env)
    servers = servers_of(ctx, server)[:1]

    async def one(session: Session) -> BackupListData:
        return await session.remote.backup_list(ctx.app, env)

    results = asyncio.run(on_servers(SshClient.from_env(), servers, one))
    _fail_if_any(results, "listing")
    listing = results[0].value
    backups = listing.backups if listing is not None else []
    if not backups:
        output.line(f"No backups of {ctx.key} yet. Take one with `tako backups now --env {env}`.")
        return
    rows = [("ID", "SERVER", "CREATED", "SIZE")]
    rows += [(b.id, b.server, b.created_at, _size(b.size)) for b in backups]
    for row in align(rows):
        output.line(row)


def _run_line(run: BackupRun) -> str:
    if run.ok:
        return f"{run.id} ok ({_size(run.size or 0)}, {run.trigger}, {run.finished_at})"
    return f"{run.id} FAILED ({run.trigger}, {run.finished_at}): {run.reason}"


def _print_status(name: str, data: BackupStatusData) -> bool:
    """One server's block; True when its last backup failed."""
    output.section(name)
    if not data.enabled:
        output.warn("backups are not enabled on this server yet: deploy to enable them")
        return False
    output.line(f"  storage : {data.storage} (bucket {data.bucket} at {data.endpoint})")
    output.line(
        f"  schedule: every {data.interval_hours} h; keeps {data.keep_daily} daily, "
        f"{data.keep_weekly} weekly"
    )
    output.line(f"  last ok : {_run_line(data.last_success) if data.last_success else 'never'}")
    output.line(f"  next    : {data.next_due or '-'}")
    failing = data.last_run is not None and not data.last_run.ok
    if failing and data.last_run is not None:
        output.line(f"  last run: {_run_line(data.last_run)}")
        output.error(
            f"last backup failed: {data.last_run.reason}", "fix it and run `tako backups now`"
        )
    return failing


def status(
    env: str = EnvOpt, server: str | None = ServerOpt, config: str | None = ConfigOpt
) -> None:
    """Backup settings, the last runs (failures with their reason), the next due time."""
    ctx = _context(config, env)

    async def one(session: Session) -> BackupStatusData:
        return await session.remote.backup_status(ctx.app, env)

    results = asyncio.run(on_servers(SshClient.from_env(), servers_of(ctx, server), one))
    failing = [
        r.server for r in results if r.value is not None and _print_status(r.server, r.value)
    ]
    _fail_if_any(results, "status")
    if failing:
        output.error(f"the last backup failed on {', '.join(failing)}")
        raise typer.Exit(1)


def decrypt_file(encrypted: Path, plain: Path, ctx: AppContext) -> str:
    """Decrypt a downloaded backup into a ``.tar.zst`` with the local backup keys."""
    keys = {k.id: k for k in load_backup_keys(ctx.app_dir, ctx.env)}
    with encrypted.open("rb") as fh:
        header, raw = read_header(fh)
        key = keys.get(header.key_id)
        if key is None:
            raise BackupCryptoError(
                f"backup {header.id} was encrypted with backup key {header.key_id}, which "
                f".tako/secrets.json does not hold for {ctx.env}",
                hint="import the environment key / secrets.json that were used when it was taken",
            )
        reader = DecryptingReader(fh, base64.b64decode(key.key), raw)
        with plain.open("xb") as out:
            while chunk := reader.read(1024 * 1024):
                out.write(chunk)
    return f"{header.app}/{header.env} from {header.server} at {header.created_at}"


def download(
    backup_id: str = typer.Argument(..., help="Backup id (see `tako backups ls`)."),
    env: str = EnvOpt,
    server: str | None = ServerOpt,
    output_path: Path | None = typer.Option(None, "--output", "-o", help="Where to write it."),
    decrypt: bool = typer.Option(False, "--decrypt", help="Write a plain .tar.zst instead."),
    config: str | None = ConfigOpt,
) -> None:
    """Copy a backup from the bucket to this machine (through a server of ENV)."""
    ctx = _context(config, env)
    base = f"{ctx.app}-{env}-{backup_id}"
    dest = output_path or Path.cwd() / (f"{base}.tar.zst" if decrypt else f"{base}.tkb")
    if dest.exists():
        raise TakoError(f"{dest} already exists: refusing to overwrite it")
    encrypted = dest.with_name(dest.name + ".tkb") if decrypt else dest

    async def one(session: Session) -> BackupFetchData:
        data = await session.remote.backup_fetch(ctx.app, env, backup_id)
        try:
            await session.connection.download(data.path, encrypted)
        finally:
            await session.remote.backup_fetch_done(ctx.app, env, backup_id)
        return data

    results = asyncio.run(on_servers(SshClient.from_env(), servers_of(ctx, server)[:1], one))
    _fail_if_any(results, "download")
    if not decrypt:
        output.success(f"downloaded backup {backup_id} (encrypted) to {dest}")
        return
    try:
        what = decrypt_file(encrypted, dest, ctx)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        encrypted.unlink(missing_ok=True)
    output.success(f"decrypted backup {backup_id} ({what}) to {dest}")


def restore(
    backup_id: str = typer.Argument(..., help="Backup id (see `tako backups ls`)."),
    env: str = EnvOpt,
    server: str | None = ServerOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    config: str | None = ConfigOpt,
) -> None:
    """Stop the app on one server, replace its data with a backup, start it again."""
    ctx = _context(config, env)
    servers = servers_of(ctx, server)
    if len(servers) > 1:
        raise TakoError(
            f"{ctx.key} runs on {len(servers)} servers; each has its own data",
            hint="pick the one to restore with --server NAME",
        )
    target = servers[0].name
    question = f"Replace the data of {ctx.key} on {target} with backup {backup_id}?"
    if not yes:
        if not output.is_interactive():
            raise TakoError(f"{question.rstrip('?')} needs confirmation", hint="pass --yes")
        if not typer.confirm(question, default=False):
            output.line("Cancelled.")
            raise typer.Exit(1)

    async def one(session: Session) -> BackupRestoreData:
        return await session.remote.backup_restore(ctx.app, env, backup_id)

    with output.spinner(f"Restoring {backup_id} on {target}..."):
        results = asyncio.run(on_servers(SshClient.from_env(), servers, one))
    _fail_if_any(results, "restore")
    data = results[0].value
    assert data is not None
    output.success(
        f"{target}: restored backup {backup_id} (taken on {data.from_server} at "
        f"{data.created_at}, {data.files} files); {data.instances} instance(s) running"
    )
