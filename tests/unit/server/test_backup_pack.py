"""Packing an app's data dir into an encrypted archive and back (files in a temp dir).

A live SQLite database (WAL mode, an open writer) comes back consistent; what a restore
would refuse is left out with a warning; another app's backup and an unknown key are
refused before anything is extracted."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest

from tako_common.backup_archive import BackupHeader
from tako_common.protocol import BackupKey
from tako_server.backups.pack import PackError, RestoreRefused, pack, unpack

KEY = BackupKey(id="k1", key=base64.b64encode(os.urandom(32)).decode())
HEADER = BackupHeader(
    app="web",
    env="production",
    server="la",
    id="20260102T030405Z-a1b2c3",
    key_id="k1",
    created_at="2026-01-02T03:04:05Z",
)


def make_data(root: Path) -> sqlite3.Connection:
    (root / "app").mkdir(parents=True)
    (root / "storages" / "uploads").mkdir(parents=True)
    (root / "storages" / "uploads" / "avatar.png").write_bytes(b"\x89PNG fake")
    (root / "app" / "notes.txt").write_text("hello")
    (root / "app" / "link").symlink_to("notes.txt")
    db = sqlite3.connect(root / "app" / "app.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (v TEXT)")
    db.execute("INSERT INTO t VALUES ('row-1')")
    db.commit()
    return db  # left open: the -wal file holds the row, as with a running app


def test_round_trip_keeps_files_links_and_a_live_sqlite_database(tmp_path: Path) -> None:
    db = make_data(tmp_path / "data")
    try:
        assert (tmp_path / "data" / "app" / "app.db-wal").exists()
        packed = pack(tmp_path / "data", tmp_path / "b.tkb", HEADER, KEY)
    finally:
        db.close()
    assert packed.size == (tmp_path / "b.tkb").stat().st_size and packed.warnings == []
    assert b"row-1" not in (tmp_path / "b.tkb").read_bytes()
    assert not list(tmp_path.glob("*.sqlite"))  # scratch copies are gone
    header, data, count = unpack(tmp_path / "b.tkb", tmp_path / "out", "web", "production", [KEY])
    assert header == HEADER and count > 5
    assert (data / "app" / "notes.txt").read_text() == "hello"
    assert os.readlink(data / "app" / "link") == "notes.txt"
    assert (data / "storages" / "uploads" / "avatar.png").read_bytes() == b"\x89PNG fake"
    assert not (data / "app" / "app.db-wal").exists()
    rows = sqlite3.connect(data / "app" / "app.db").execute("SELECT v FROM t").fetchall()
    assert rows == [("row-1",)]


def test_what_a_restore_would_refuse_is_left_out_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "app").mkdir(parents=True)
    (root / "app" / "escape").symlink_to("/etc/passwd")
    os.mkfifo(root / "app" / "pipe")
    packed = pack(root, tmp_path / "b.tkb", HEADER, KEY)
    assert sorted(packed.warnings) == [
        "left out data/app/escape: symlink points outside the data dir (/etc/passwd)",
        "left out data/app/pipe: not a regular file, directory or symlink",
    ]
    _, data, _ = unpack(tmp_path / "b.tkb", tmp_path / "out", "web", "production", [KEY])
    assert sorted(p.name for p in (data / "app").iterdir()) == []


@pytest.mark.parametrize(
    ("app", "env", "keys", "message"),
    [
        ("other", "production", [KEY], "belongs to web/production, not other/production"),
        ("web", "staging", [KEY], "belongs to web/production, not web/staging"),
        ("web", "production", [BackupKey(id="k2", key=KEY.key)], "backup key k1"),
    ],
)
def test_unpack_refuses_before_extracting(
    tmp_path: Path, app: str, env: str, keys: list[BackupKey], message: str
) -> None:
    (tmp_path / "data").mkdir()
    pack(tmp_path / "data", tmp_path / "b.tkb", HEADER, KEY)
    with pytest.raises(RestoreRefused, match=message):
        unpack(tmp_path / "b.tkb", tmp_path / "out", app, env, keys)
    assert not (tmp_path / "out").exists()


def test_a_failed_pack_leaves_no_archive(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "app").mkdir(parents=True)
    (root / "app" / "a.txt").write_bytes(os.urandom(300_000))  # part of the archive is written
    (root / "app" / "broken.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    with pytest.raises(PackError, match="cannot copy the SQLite database data/app/broken.db"):
        pack(root, tmp_path / "b.tkb", HEADER, KEY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no archive, no scratch
