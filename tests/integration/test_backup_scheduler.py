"""The backup service against a real S3 API server on loopback (moto_server with TLS, its
CA given through the ``storage_ca_bundle`` setting): the scheduler takes a backup only
when it is due, a failure is recorded with its reason and retried an hour later, and
retention deletes what the policy does not keep. Time is the service's clock argument."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tako_common.protocol import BackupKey, BackupSettings, S3Target
from tako_common.tasks import TaskGroup
from tako_server.backups.bucket import BackupError
from tako_server.backups.service import BackupService
from tako_server.context import ServerContext
from tako_server.locks import DeployLocks
from tako_server.secrets_store import SecretsStore
from tako_server.settings import ServerSettings
from tako_server.state import AppRecord, StateStore
from tako_server.storage_store import AppStorage
from tests.helpers.s3 import (
    S3Account,
    TestCA,
    make_credentials,
    moto_argv,
    moto_available,
    wait_listening,
)
from tests.integration.conftest import free_port

ENABLED = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Account]:
    if not moto_available():
        pytest.skip("moto_server is missing (pip install 'moto[server]'; run scripts/setup)")
    ca = TestCA(tmp_path)
    cert, key = ca.issue("s3", ["127.0.0.1"])
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    argv = moto_argv(cert, key, port, host="127.0.0.1")  # loopback only
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening("127.0.0.1", port)
        account = make_credentials(f"https://127.0.0.1:{port}", ca.pem)
        account.client().create_bucket(Bucket="backups")
        yield account
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _service(tmp_path: Path, s3: S3Account, secret: str, clock: Clock) -> BackupService:
    settings = ServerSettings(
        data_dir=tmp_path / "data", socket=tmp_path / "tako.sock", storage_ca_bundle=s3.ca
    )
    settings.data_dir.mkdir()
    state = StateStore.open(settings.layout.state_db)
    ctx = ServerContext(
        settings=settings,
        state=state,
        secrets=SecretsStore.open(settings.layout.secrets_key, state),
        supervisor=None,  # type: ignore[arg-type]  # backups never touch instances
        locks=DeployLocks(settings.layout),
        tasks=TaskGroup(),
    )
    state.save_app(AppRecord("web", "production", "v1", 1, 300, {}, {}, "2026-03-01T00:00:00Z"))
    target = S3Target(
        bucket="backups",
        endpoint=s3.endpoint,
        region="us-east-1",
        access_key_id=s3.access_key_id,
        secret_access_key=secret,
    )
    key = BackupKey(id="k1", key=base64.b64encode(os.urandom(32)).decode())
    backup = BackupSettings(
        storage="backups", target=target, keys=[key], server="la", keep_daily=1, keep_weekly=0
    )
    stored = AppStorage(backup=backup, backup_since="2026-03-02T03:00:00Z")
    ctx.storage.put("web", "production", stored)
    data = settings.layout.app_data_dir("web", "production")
    data.mkdir(parents=True)
    (data / "note.txt").write_text("hello")
    return BackupService(ctx, clock=clock)


def _keys(s3: S3Account) -> list[str]:
    found = s3.client().list_objects_v2(Bucket="backups").get("Contents", [])
    return sorted(o["Key"] for o in found)


async def test_the_scheduler_backs_up_when_due_and_retention_keeps_one_a_day(
    tmp_path: Path, s3: S3Account
) -> None:
    clock = Clock(ENABLED + timedelta(hours=23))
    service = _service(tmp_path, s3, s3.secret_access_key, clock)
    assert await service.run_due() == []  # 23 h after enabling: not due
    clock.now = ENABLED + timedelta(hours=24, seconds=1)
    assert await service.run_due() == ["web/production"]
    first = _keys(s3)
    assert len(first) == 1 and first[0].startswith("_tako/backups/web/production/la/20260303T")
    assert await service.run_due() == []  # just taken
    clock.now += timedelta(hours=24)
    assert await service.run_due() == ["web/production"]
    clock.now += timedelta(minutes=5)  # a manual one the same day
    taken = await service.backup_now("web", "production")
    assert len(_keys(s3)) == 1 and _keys(s3)[0] == taken.backup.key  # keep_daily=1, weeks=0
    status = service.status("web", "production")
    assert status.last_success is not None and status.last_success.id == taken.backup.id
    assert len(status.last_success.pruned) == 1 and status.next_due is not None


async def test_a_failure_is_recorded_with_its_reason_and_retried_an_hour_later(
    tmp_path: Path, s3: S3Account
) -> None:
    clock = Clock(ENABLED + timedelta(days=1, minutes=1))
    service = _service(tmp_path, s3, "wrong-secret", clock)
    assert await service.run_due() == ["web/production"]
    status = service.status("web", "production")
    assert status.last_run is not None and not status.last_run.ok
    assert "SignatureDoesNotMatch" in (status.last_run.reason or "")
    assert status.last_success is None and _keys(s3) == []
    assert service.last_failure("web", "production") == status.last_run.reason
    assert status.next_due == "2026-03-03T04:01:00Z"  # retried after an hour, not a day
    clock.now += timedelta(minutes=30)
    assert await service.run_due() == []
    with pytest.raises(BackupError, match="backup of web/production failed: .*SignatureDoesNot"):
        await service.backup_now("web", "production")
    assert not list((tmp_path / "data" / "apps" / "web" / "production" / ".backups").iterdir())
