"""StateStore: migrations, refusal of newer schemas, app/route/release round trips, mode."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tako_server.state import SCHEMA_VERSION, AppRecord, SchemaTooNewError, StateStore


def _record(app: str = "web", env: str = "production", **changes: object) -> AppRecord:
    fields: dict[str, object] = dict(
        app=app,
        env=env,
        version="abc1234",
        desired_instances=2,
        idle_timeout=300,
        manifest={"runtime": "python", "main": "app.py"},
        vars={"A": "1"},
        deployed_at="2026-01-01T00:00:00Z",
        routes=["web.localhost", "web.localhost/api/*"],
    )
    fields.update(changes)
    return AppRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore.open(tmp_path / "state.sqlite3")
    yield s
    s.close()


def test_fresh_database_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    StateStore.open(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    first = StateStore.open(path)
    first.save_app(_record())
    first.close()
    again = StateStore.open(path)
    assert again.get_app("web", "production") == _record()
    again.close()


def test_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaTooNewError, match="newer than the .* this tako-server supports"):
        StateStore.open(path)


def test_save_app_round_trips_routes_in_order(store: StateStore) -> None:
    store.save_app(_record(routes=["b.localhost", "a.localhost"]))
    assert store.get_app("web", "production").routes == ["b.localhost", "a.localhost"]  # type: ignore[union-attr]
    assert store.all_routes() == {"web/production": ["b.localhost", "a.localhost"]}


def test_two_environments_of_one_app_are_separate(store: StateStore) -> None:
    store.save_app(_record(env="production", routes=["p.localhost"]))
    store.save_app(_record(env="staging", routes=["s.localhost"]))
    assert [r.key for r in store.list_apps()] == ["web/production", "web/staging"]


def test_redeploy_replaces_routes_and_records_release_history(store: StateStore) -> None:
    store.save_app(_record(version="v1"))
    store.save_app(
        _record(version="v2", routes=["new.localhost"], deployed_at="2026-02-01T00:00:00Z")
    )
    assert store.get_app("web", "production").routes == ["new.localhost"]  # type: ignore[union-attr]
    assert store.release_times("web", "production") == {
        "v1": "2026-01-01T00:00:00Z",
        "v2": "2026-02-01T00:00:00Z",
    }
    store.forget_releases("web", "production", ["v1"])
    assert list(store.release_times("web", "production")) == ["v2"]


@pytest.mark.parametrize(
    ("action", "expected"),
    [("set_desired", (5, "running")), ("set_state", (2, "stopped"))],
)
def test_partial_updates_touch_only_their_field(
    store: StateStore, action: str, expected: tuple[int, str]
) -> None:
    store.save_app(_record())
    if action == "set_desired":
        store.set_desired("web", "production", 5)
    else:
        store.set_state("web", "production", "stopped")
    rec = store.get_app("web", "production")
    assert rec is not None and (rec.desired_instances, rec.state) == expected


def test_delete_app_removes_everything_and_is_idempotent(store: StateStore) -> None:
    store.save_app(_record())
    store.put_secrets_blob("web", "production", b"blob")
    assert store.delete_app("web", "production") is True
    assert store.get_app("web", "production") is None
    assert store.all_routes() == {}
    assert store.release_times("web", "production") == {}
    assert store.get_secrets_blob("web", "production") is None
    assert store.delete_app("web", "production") is False


def test_server_mode_defaults_to_normal_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    s = StateStore.open(path)
    assert s.server_mode().mode == "normal"
    s.set_server_mode("upgrading", "upgrade-1", "2026-01-01T00:00:00Z")
    s.close()
    s = StateStore.open(path)
    mode = s.server_mode()
    assert (mode.mode, mode.owner) == ("upgrading", "upgrade-1")
    s.close()


def test_maintenance_persists_keeps_its_first_time_and_survives_a_redeploy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    s = StateStore.open(path)
    s.save_app(_record())
    first = s.set_maintenance("web", "production", "back at 5", "2026-01-01T10:00:00Z")
    again = s.set_maintenance("web", "production", "back at 6", "2026-01-01T11:00:00Z")
    assert (first.since, again.message, again.since) == (
        "2026-01-01T10:00:00Z",
        "back at 6",
        "2026-01-01T10:00:00Z",
    )
    s.save_app(_record(version="def5678"))  # a deploy replaces the app row, not the mode
    s.close()
    s = StateStore.open(path)
    mode = s.maintenance("web", "production")
    assert mode is not None and mode.message == "back at 6"
    assert list(s.all_maintenance()) == ["web/production"]
    assert s.maintenance("web", "staging") is None
    assert s.clear_maintenance("web", "production") is True
    assert s.clear_maintenance("web", "production") is False
    assert s.all_maintenance() == {}
    s.close()


def test_delete_app_turns_maintenance_off(store: StateStore) -> None:
    store.save_app(_record())
    store.set_maintenance("web", "production", "", "2026-01-01T10:00:00Z")
    assert store.delete_app("web", "production") is True
    assert store.maintenance("web", "production") is None


def test_a_database_from_before_maintenance_mode_gains_its_table(tmp_path: Path) -> None:
    from tako_server.state import MIGRATIONS, _statements

    number = next(i for i, script in enumerate(MIGRATIONS) if "app_maintenance" in script)
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:number]:
        for statement in _statements(script):
            db.execute(statement)
    db.execute(f"PRAGMA user_version={number}")
    db.commit()
    db.close()
    s = StateStore.open(path)
    s.set_maintenance("web", "production", "x", "2026-01-01T10:00:00Z")
    assert s.maintenance("web", "production") is not None
    s.close()
