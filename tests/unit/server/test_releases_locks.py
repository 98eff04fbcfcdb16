"""Deploy locks: owners, connections, stale directories, one operation per app at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_common.layout import ServerLayout
from tako_server.locks import Busy, DeployLocks, LockHeld


@pytest.fixture
def locks(tmp_path: Path) -> DeployLocks:
    return DeployLocks(ServerLayout(tmp_path))


def test_lock_directory_is_created_and_removed(tmp_path: Path, locks: DeployLocks) -> None:
    locks.acquire("web", "prod", "alice", connection=1, since="T0")
    assert (tmp_path / "apps/web/prod/.deploy_lock/owner.json").exists()
    assert locks.release("web", "prod", "alice") is True
    assert not (tmp_path / "apps/web/prod/.deploy_lock").exists()
    assert locks.release("web", "prod", "alice") is False


def test_same_owner_may_lock_again_another_is_refused(locks: DeployLocks) -> None:
    first = locks.acquire("web", "prod", "alice", connection=1, since="T0")
    assert locks.acquire("web", "prod", "alice", connection=2, since="T1") == first
    with pytest.raises(LockHeld, match="held by 'alice' since T0"):
        locks.acquire("web", "prod", "bob", connection=3, since="T2")


def test_closing_a_connection_releases_only_its_locks(locks: DeployLocks) -> None:
    locks.acquire("web", "prod", "alice", connection=1, since="T0")
    locks.acquire("api", "prod", "bob", connection=2, since="T0")
    assert locks.release_connection(1) == ["web/prod"]
    assert locks.holder("web", "prod") is None and locks.holder("api", "prod") is not None


@pytest.mark.parametrize(
    ("owner", "connection", "allowed"),
    [(None, 1, True), ("alice", 9, True), (None, 2, False), ("bob", 2, False)],
)
def test_mutations_are_allowed_for_the_holder_only(
    locks: DeployLocks, owner: str | None, connection: int, allowed: bool
) -> None:
    locks.acquire("web", "prod", "alice", connection=1, since="T0")
    if allowed:
        locks.check_access("web", "prod", owner, connection)
    else:
        with pytest.raises(LockHeld):
            locks.check_access("web", "prod", owner, connection)


def test_stale_lock_directories_are_cleared(tmp_path: Path, locks: DeployLocks) -> None:
    (tmp_path / "apps/web/prod/.deploy_lock").mkdir(parents=True)
    assert locks.clear_stale() == [tmp_path / "apps/web/prod/.deploy_lock"]
    assert not (tmp_path / "apps/web/prod/.deploy_lock").exists()


def test_one_operation_per_app_at_a_time(locks: DeployLocks) -> None:
    locks.begin_operation("web/prod", "deploy")
    with pytest.raises(
        Busy, match="a deploy of web/prod is already in progress; 'rollback' refused"
    ):
        locks.begin_operation("web/prod", "rollback")
    locks.begin_operation("api/prod", "deploy")
    locks.end_operation("web/prod")
    locks.begin_operation("web/prod", "rollback")
