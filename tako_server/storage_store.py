"""Storage bindings and backup settings of each app, sealed at rest like its secrets.

Rules:

- one record per ``{app}/{env}``: the bindings the app's processes get and the backup
  settings (target bucket, credentials, backup keys); stored as one AES-256-GCM blob under
  the server's secrets key (:class:`~tako_server.secrets_store.SecretBox`) whose
  associated data is ``"{app}/{env}#storage"``, so it can be neither read without the
  key nor moved to another app;
- written only when a deploy succeeded (with the app's secrets), so a failed deploy
  leaves the previous record; removed with the app by ``delete``;
- the record never reaches ``app.json``, a log line or an answer (answers say only which
  bucket and endpoint a backup goes to).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tako_common.protocol import BackupSettings, DeployRequest, StorageBinding
from tako_server.secrets_store import SecretBox
from tako_server.state import StateStore


class AppStorage(BaseModel):
    """What the server keeps about an app's storages (bindings and backup settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    storages: list[StorageBinding] = Field(default_factory=list)
    backup: BackupSettings | None = None
    #: when backups were first enabled for the app on this server (UTC ISO 8601)
    backup_since: str | None = None


class StorageStore:
    """Per-app/env sealed :class:`AppStorage` records in the state database."""

    def __init__(self, box: SecretBox, state: StateStore) -> None:
        self._box = box
        self._state = state

    def __repr__(self) -> str:
        return f"StorageStore({self._state!r})"

    @staticmethod
    def _label(app: str, env: str) -> str:
        return f"{app}/{env}#storage"

    def put(self, app: str, env: str, record: AppStorage) -> None:
        blob = self._box.seal_bytes(self._label(app, env), record.model_dump_json().encode())
        self._state.put_storage_blob(app, env, blob)

    def get(self, app: str, env: str) -> AppStorage:
        """The stored record; an empty one when the app has none."""
        blob = self._state.get_storage_blob(app, env)
        if blob is None:
            return AppStorage()
        return AppStorage.model_validate_json(self._box.open_bytes(self._label(app, env), blob))

    def with_backups(self) -> list[tuple[str, str, BackupSettings]]:
        """``(app, env, settings)`` of every app that has backups configured."""
        found = []
        for app, env in self._state.storage_keys():
            backup = self.get(app, env).backup
            if backup is not None:
                found.append((app, env, backup))
        return found


def storage_record(previous: AppStorage, req: DeployRequest, now: str) -> AppStorage:
    """The record a successful deploy stores (``backup_since`` kept from the previous one)."""
    since = (previous.backup_since or now) if req.backup is not None else None
    return AppStorage(storages=req.storages, backup=req.backup, backup_since=since)
