"""Deploy locks and upgrading mode on a real server."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.helpers.artifacts import Entry, place_artifact, tar_zst_from_entries
from tests.integration.conftest import ControlClient, ServerProcess, deploy_message

LOCK = {"command": "lock", "app": "web", "env": "production"}


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_lock_held_by_another_owner_is_refused_with_who_and_since(
    tako_server: ServerProcess, control: ControlClient
) -> None:
    held = control.ok({**LOCK, "owner": "alice@laptop"})
    assert (tako_server.data_dir / "apps/web/production/.deploy_lock/owner.json").exists()
    with tako_server.client() as other:
        reply = other.request({**LOCK, "owner": "bob@ci"})
    assert reply["status"] == "error" and reply["code"] == "locked"
    assert "'alice@laptop'" in reply["message"] and held["since"] in reply["message"]


def test_lock_is_released_when_its_connection_closes(tako_server: ServerProcess) -> None:
    first = tako_server.client()
    first.ok({**LOCK, "owner": "alice"})
    first.close()
    lock_dir = tako_server.data_dir / "apps/web/production/.deploy_lock"
    assert _wait_until(lambda: not lock_dir.exists())
    with tako_server.client() as second:
        assert second.ok({**LOCK, "owner": "bob"})["owner"] == "bob"


def test_unlock_by_its_owner_releases_and_other_owner_cannot(
    tako_server: ServerProcess, control: ControlClient
) -> None:
    control.ok({**LOCK, "owner": "alice"})
    with tako_server.client() as other:
        reply = other.request({**LOCK, "command": "unlock", "owner": "bob"})
        assert reply["status"] == "error" and "held by 'alice'" in reply["message"]
    assert control.ok({**LOCK, "command": "unlock", "owner": "alice"})["released"] is True
    with tako_server.client() as other:
        assert other.ok({**LOCK, "owner": "bob"})["owner"] == "bob"


def test_deploy_while_another_connection_holds_the_lock_is_refused(
    tako_server: ServerProcess, control: ControlClient
) -> None:
    name, digest = place_artifact(
        tar_zst_from_entries([Entry("app.py", data=b"x")]), tako_server.incoming
    )
    control.ok({**LOCK, "owner": "alice"})
    with tako_server.client() as other:
        reply = other.request(deploy_message(name, digest, owner="bob"))
    assert reply["status"] == "error" and reply["code"] == "locked"
    assert not (tako_server.data_dir / "apps/web/production/releases").exists()


def test_stale_lock_directory_from_a_dead_server_is_cleared_at_start(
    tako_server: ServerProcess,
) -> None:
    client = tako_server.client()
    client.ok({**LOCK, "owner": "alice"})
    assert tako_server.proc is not None
    tako_server.proc.kill()
    tako_server.proc.wait()
    client.close()
    assert (tako_server.data_dir / "apps/web/production/.deploy_lock").exists()
    tako_server.start()
    assert not (tako_server.data_dir / "apps/web/production/.deploy_lock").exists()
    with tako_server.client() as again:
        assert again.ok({**LOCK, "owner": "bob"})["owner"] == "bob"


def test_upgrading_mode_refuses_mutations_and_survives_restart(
    tako_server: ServerProcess,
) -> None:
    name, digest = place_artifact(
        tar_zst_from_entries([Entry("app.py", data=b"x")]), tako_server.incoming
    )
    with tako_server.client() as c:
        c.ok({"command": "enter_upgrading", "owner": "upgrade-1"})
    tako_server.restart()
    with tako_server.client() as c:
        info = c.ok({"command": "server_info"})
        assert (info["mode"], info["upgrade_owner"]) == ("upgrading", "upgrade-1")
        reply = c.request(deploy_message(name, digest))
        assert reply["status"] == "error" and reply["code"] == "upgrading"
        assert "'deploy' is refused" in reply["message"] and "upgrade-1" in reply["message"]
        assert c.request({**LOCK, "owner": "x"})["code"] == "upgrading"
        assert c.ok({"command": "status"}) == {"apps": []}  # reads still work
        other = c.request({"command": "enter_upgrading", "owner": "upgrade-2"})
        assert other["status"] == "error" and "upgrade-1" in other["message"]
        wrong = c.request({"command": "exit_upgrading", "owner": "upgrade-2"})
        assert wrong["status"] == "error"
        assert c.ok({"command": "exit_upgrading", "owner": "upgrade-1"})["mode"] == "normal"
        assert c.ok({"command": "server_info"})["mode"] == "normal"


def test_entering_upgrading_twice_with_the_same_owner_is_fine(control: ControlClient) -> None:
    first = control.ok({"command": "enter_upgrading", "owner": "up"})
    again = control.ok({"command": "enter_upgrading", "owner": "up"})
    assert first["since"] == again["since"]


def test_delete_of_an_unknown_app_is_idempotent(control: ControlClient) -> None:
    for _ in range(2):
        data = control.ok({"command": "delete", "app": "ghost", "env": "production"})
        assert data["existed"] is False
