"""Per-app/env deploy locks and the server-wide "deploy in progress" guard.

Rules:

- ``lock`` is an atomic ``mkdir`` of ``apps/{app}/{env}/.deploy_lock/`` plus
  ``owner.json`` (owner, since, connection); a lock held by another owner is refused
  with who holds it and since when. The same owner taking it again is fine.
- A lock belongs to the control connection that took it: when that connection closes
  the daemon calls :meth:`DeployLocks.release_connection`, so a crashed client never
  leaves a stale lock. Locks left on disk by a previous server process are stale by
  definition (no connection survives a restart) and are cleared at start-up.
- Independently of the lock, only one deploy/rollback/update of an app/env runs at a
  time (:meth:`DeployLocks.begin_operation`), whoever sends it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tako_common.errors import TakoError
from tako_common.layout import ServerLayout


class LockHeld(TakoError):
    code = "locked"


class Busy(TakoError):
    code = "busy"


@dataclass(frozen=True)
class LockInfo:
    owner: str
    since: str
    connection: int


class DeployLocks:
    def __init__(self, layout: ServerLayout) -> None:
        self._layout = layout
        self._held: dict[str, LockInfo] = {}
        self._busy: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"DeployLocks(held={sorted(self._held)}, busy={sorted(self._busy)})"

    def clear_stale(self) -> list[Path]:
        """Remove every lock directory on disk (called before serving)."""
        removed = []
        for lock in self._layout.apps_dir.glob("*/*/.deploy_lock"):
            shutil.rmtree(lock, ignore_errors=True)
            removed.append(lock)
        return removed

    def holder(self, app: str, env: str) -> LockInfo | None:
        return self._held.get(f"{app}/{env}")

    def acquire(self, app: str, env: str, owner: str, connection: int, since: str) -> LockInfo:
        key = f"{app}/{env}"
        held = self._held.get(key)
        if held is not None:
            if held.owner == owner:
                return held
            raise _held_error(key, held)
        path = self._layout.deploy_lock(app, env)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            shutil.rmtree(path, ignore_errors=True)  # not in memory: left by a dead process
            path.mkdir(mode=0o700)
        info = LockInfo(owner=owner, since=since, connection=connection)
        (path / "owner.json").write_text(
            json.dumps({"owner": owner, "since": since, "connection": connection}) + "\n"
        )
        self._held[key] = info
        return info

    def release(self, app: str, env: str, owner: str) -> bool:
        key = f"{app}/{env}"
        held = self._held.get(key)
        if held is None:
            return False
        if held.owner != owner:
            raise LockHeld(
                f"cannot unlock {key}: the deploy lock is held by {held.owner!r}, not {owner!r}"
            )
        self._drop(app, env)
        return True

    def release_connection(self, connection: int) -> list[str]:
        """Release every lock taken on ``connection``; return their keys."""
        keys = [k for k, v in self._held.items() if v.connection == connection]
        for key in keys:
            app, env = key.split("/")
            self._drop(app, env)
        return keys

    def forget(self, app: str, env: str) -> None:
        """Drop the lock of a deleted app (whoever holds it)."""
        if f"{app}/{env}" in self._held:
            self._drop(app, env)

    def _drop(self, app: str, env: str) -> None:
        self._held.pop(f"{app}/{env}", None)
        shutil.rmtree(self._layout.deploy_lock(app, env), ignore_errors=True)

    def check_access(self, app: str, env: str, owner: str | None, connection: int) -> None:
        """Refuse a mutating command when another owner/connection holds the lock."""
        held = self._held.get(f"{app}/{env}")
        if held is None or held.connection == connection or (owner and held.owner == owner):
            return
        raise _held_error(f"{app}/{env}", held)

    def begin_operation(self, key: str, command: str) -> None:
        running = self._busy.get(key)
        if running is not None:
            raise Busy(
                f"a {running} of {key} is already in progress; '{command}' refused",
                hint="wait for it to finish and try again",
            )
        self._busy[key] = command

    def end_operation(self, key: str) -> None:
        self._busy.pop(key, None)

    def is_busy(self, key: str) -> bool:
        return key in self._busy


def _held_error(key: str, held: LockInfo) -> LockHeld:
    return LockHeld(
        f"deploy lock of {key} is held by {held.owner!r} since {held.since}",
        hint="wait for that deploy to finish (the lock is released when its connection closes)",
    )
