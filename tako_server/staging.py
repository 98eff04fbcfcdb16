"""Releases a deploy prepared but has not rolled out yet (the deploy has a release command).

A deploy with a ``release`` command runs in three steps on each server: ``prepare`` (the
release is extracted and prepared, nothing switches), ``run_release`` on the leader only,
then ``deploy`` (which adopts the prepared release) or ``discard``. Between the steps this
registry remembers, per ``{app}/{env}``, what ``prepare`` staged.

Rules:

- one staged release per app/env (the deploy lock makes a second deploy wait anyway); a
  new ``prepare`` replaces the entry;
- ``created`` says the deploy made the release directory: only then may a failure
  (``discard``, a failed rollout, the client's connection closing) remove it; a release
  that existed before (a redeploy of the current version, a kept older release) is never
  removed;
- an entry belongs to the control connection that sent ``prepare``; when it closes
  without a ``deploy``, its entries are taken (:meth:`StagedReleases.take_connection`)
  and their directories removed;
- the vars and secrets ``prepare`` received are kept, so the release command sees exactly
  the environment the new instances will get. They stay in memory only.

Pure: a dictionary with rules, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from tako_common.protocol import DeployRequest
from tako_server.launch import ReleaseRef


@dataclass(frozen=True)
class StagedRelease:
    """``request`` is the ``prepare`` request (a :class:`DeployRequest`)."""

    release: ReleaseRef
    request: DeployRequest
    created: bool
    connection: int

    @property
    def key(self) -> str:
        return self.release.key

    @property
    def version(self) -> str:
        return self.release.version

    def __repr__(self) -> str:  # the request carries secrets: never shown
        return (
            f"StagedRelease({self.key}@{self.version}, created={self.created}, "
            f"connection={self.connection})"
        )


class StagedReleases:
    def __init__(self) -> None:
        self._by_key: dict[str, StagedRelease] = {}

    def __repr__(self) -> str:
        return f"StagedReleases({sorted(f'{s.key}@{s.version}' for s in self._by_key.values())})"

    def put(self, staged: StagedRelease) -> StagedRelease | None:
        """Remember ``staged``; returns the entry it replaced (another version), if any."""
        previous = self._by_key.get(staged.key)
        self._by_key[staged.key] = staged
        if previous is not None and previous.version != staged.version:
            return previous
        return None

    def get(self, key: str, version: str) -> StagedRelease | None:
        staged = self._by_key.get(key)
        return staged if staged is not None and staged.version == version else None

    def pop(self, key: str, version: str) -> StagedRelease | None:
        staged = self.get(key, version)
        if staged is not None:
            del self._by_key[key]
        return staged

    def forget(self, key: str) -> None:
        """Drop the entry of a deleted app (its directory goes with the app)."""
        self._by_key.pop(key, None)

    def take_connection(self, connection: int) -> list[StagedRelease]:
        """Remove and return the entries staged on ``connection`` (it closed)."""
        taken = [s for s in self._by_key.values() if s.connection == connection]
        for staged in taken:
            del self._by_key[staged.key]
        return taken
