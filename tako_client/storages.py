"""What a deploy sends about storages and backups, checked before anything is built.

Rules (001 "Storage", "Backups"):

- an environment with a ``local`` binding deploys to one server only; more is refused;
- every S3 resource the environment binds or backs up to must have credentials for it in
  ``.tako/secrets.json``; all missing ones are named at once;
- with ``backup`` set, the environment gets its first backup key here when it has none
  (the caller says so: the key lives only in ``.tako/secrets.json``);
- the result is per server (:meth:`StoragePlan.backup_for`): backups of each server go
  under its own name in the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tako_client.appctx import AppContext
from tako_client.storage_secrets import ensure_backup_key, load_credentials
from tako_common.errors import TakoError
from tako_common.protocol.storage import BackupKey, BackupSettings, StorageBinding
from tako_common.storages import (
    S3Credentials,
    check_credentials,
    local_bindings,
    resolve_backup,
    resolve_bindings,
)


class LocalStorageMultiServer(TakoError):
    code = "local_storage"


@dataclass(frozen=True)
class StoragePlan:
    """The bindings every server gets and what each server needs to back up."""

    ctx: AppContext
    bindings: list[StorageBinding]
    credentials: dict[str, S3Credentials] = field(repr=False)
    backup_keys: list[BackupKey] = field(repr=False)
    new_backup_key: str | None = None

    def backup_for(self, server: str) -> BackupSettings | None:
        config = self.ctx.loaded.config
        return resolve_backup(config, self.ctx.env, self.credentials, self.backup_keys, server)


def check_local_single_server(ctx: AppContext, servers: list[str]) -> None:
    """Refuse a ``local`` binding in an environment deployed to several servers."""
    local = local_bindings(ctx.loaded.config, ctx.env)
    if local and len(servers) > 1:
        raise LocalStorageMultiServer(
            f"environment {ctx.env!r} binds local storage ({', '.join(local)}) and deploys to "
            f"{len(servers)} servers ({', '.join(servers)}): local storage deploys only to "
            "single-server environments",
            hint="bind an S3 storage instead, or deploy this environment to one server",
        )


def plan_storages(ctx: AppContext, servers: list[str]) -> StoragePlan:
    """Check servers and credentials, make the first backup key if needed; no network."""
    check_local_single_server(ctx, servers)
    config = ctx.loaded.config
    credentials = load_credentials(ctx.app_dir, ctx.env)
    check_credentials(config, ctx.env, credentials)
    bindings = resolve_bindings(config, ctx.env, credentials)
    env = config.envs.get(ctx.env)
    keys: list[BackupKey] = []
    made = None
    if env is not None and env.backup is not None:
        keys, created = ensure_backup_key(ctx.app_dir, ctx.env)
        made = keys[-1].id if created else None
    return StoragePlan(ctx, bindings, credentials, keys, made)
