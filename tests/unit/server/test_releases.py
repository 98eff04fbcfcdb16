"""Release handling: artifact checks, safe extraction, current link, pruning, app.json."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tako_common.errors import ValidationError
from tako_common.layout import ServerLayout
from tako_server import releases
from tako_server.releases import ArtifactError, ReleaseDir, UnsafeArchiveError
from tests.helpers.artifacts import Entry, place_artifact, tar_zst_from_entries

DAY = 24 * 3600.0


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --------------------------------------------------------------------------- artifacts


def test_verified_artifact_path_is_returned(tmp_path: Path) -> None:
    layout = ServerLayout(tmp_path)
    name, digest = place_artifact(
        tar_zst_from_entries([Entry("a.txt", data=b"x")]), layout.incoming_dir
    )
    assert releases.verify_artifact(layout, name, digest) == layout.incoming_dir / name


@pytest.mark.parametrize("name", ["../x.tar.zst", "sub/x.tar.zst", "x.tar.gz", "..", ""])
def test_artifact_names_outside_incoming_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError, match="inside the incoming directory"):
        releases.artifact_path(ServerLayout(tmp_path), name)


def test_checksum_mismatch_names_both_digests(tmp_path: Path) -> None:
    layout = ServerLayout(tmp_path)
    name, digest = place_artifact(b"payload", layout.incoming_dir)
    with pytest.raises(ArtifactError, match=f"has sha256 {digest}, expected 0{{64}}"):
        releases.verify_artifact(layout, name, "0" * 64)


def test_missing_or_symlinked_artifact_is_refused(tmp_path: Path) -> None:
    layout = ServerLayout(tmp_path)
    layout.incoming_dir.mkdir()
    (tmp_path / "elsewhere.tar.zst").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere.tar.zst", layout.incoming_dir / "link.tar.zst")
    for name in ("absent.tar.zst", "link.tar.zst"):
        with pytest.raises(ArtifactError, match="is not in"):
            releases.verify_artifact(layout, name, "0" * 64)


# --------------------------------------------------------------------------- extraction


def test_regular_archive_extracts_files_dirs_and_inner_links(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.zst"
    archive.write_bytes(
        tar_zst_from_entries(
            [
                Entry("app", kind="dir", mode=0o755),
                Entry("app/main.py", data=b"print(1)\n"),
                Entry("app/run", data=b"#!/bin/sh\n", mode=0o755),
                Entry("app/alias.py", kind="symlink", target="main.py"),
                Entry("app/copy.py", kind="hardlink", target="app/main.py"),
            ]
        )
    )
    dest = tmp_path / "release"
    assert releases.extract_archive(archive, dest) == 5
    assert (dest / "app/alias.py").read_text() == "print(1)\n"
    assert (dest / "app/copy.py").read_text() == "print(1)\n"
    assert os.access(dest / "app/run", os.X_OK)


def test_unsafe_archives_are_refused_by_the_shared_extractor_and_leave_nothing(
    tmp_path: Path,
) -> None:
    # The rules themselves are tested in tests/unit/common/test_archive.py.
    archive = tmp_path / "bad.tar.zst"
    archive.write_bytes(tar_zst_from_entries([Entry("../evil", data=b"x")]))
    before = _listing(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="contains '..'"):
        releases.extract_archive(archive, tmp_path / "release")
    assert _listing(tmp_path) == before


def test_corrupt_archive_is_an_artifact_error(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar.zst"
    archive.write_bytes(b"definitely not zstd")
    with pytest.raises(ArtifactError, match="not a valid .tar.zst"):
        releases.extract_archive(archive, tmp_path / "release")
    assert not (tmp_path / "release").exists()


def test_install_release_moves_staging_into_place(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.zst"
    archive.write_bytes(tar_zst_from_entries([Entry("main.py", data=b"x")]))
    target = tmp_path / "apps/web/prod/releases/v1"
    releases.install_release(archive, tmp_path / ".staging", target)
    assert (target / "main.py").exists() and not (tmp_path / ".staging").exists()


@pytest.mark.parametrize("subdir", ["../..", "missing"])
def test_workdir_must_be_a_directory_inside_the_release(tmp_path: Path, subdir: str) -> None:
    (tmp_path / "rel").mkdir()
    with pytest.raises((UnsafeArchiveError, ArtifactError)):
        releases.workdir_of(tmp_path / "rel", subdir)


# --------------------------------------------------------------------------- current, app.json


def test_switch_current_replaces_the_link_atomically(tmp_path: Path) -> None:
    link = tmp_path / "current"
    releases.switch_current(link, "v1")
    releases.switch_current(link, "v2")
    assert os.readlink(link) == "releases/v2"
    assert releases.current_version(link) == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["current"]


def test_current_version_of_a_missing_link_is_none(tmp_path: Path) -> None:
    assert releases.current_version(tmp_path / "current") is None


def test_app_json_round_trips(tmp_path: Path) -> None:
    releases.write_app_json(tmp_path, {"runtime": "node", "main": "a.js"}, {"version": "v1"})
    assert releases.read_app_json(tmp_path) == {"runtime": "node", "main": "a.js", "version": "v1"}
    assert releases.read_app_json(tmp_path / "nowhere") is None


# --------------------------------------------------------------------------- pruning


def _dirs(*ages_days: float, now: float) -> list[ReleaseDir]:
    return [ReleaseDir(f"v{i}", now - age * DAY) for i, age in enumerate(ages_days)]


@pytest.mark.parametrize(
    ("ages", "current", "expected"),
    [
        ((1, 2, 3), "v0", []),
        ((40, 41, 42, 43, 44, 45, 46), "v0", ["v5", "v6"]),
        ((1, 2, 3, 4, 5, 40, 50), "v0", ["v5", "v6"]),
        ((1, 2, 3, 4, 5, 6, 7), "v0", []),
        ((1, 2, 3, 4, 5, 40, 50), "v6", ["v5"]),
    ],
)
def test_prune_keeps_newest_five_recent_ones_and_current(
    ages: tuple[float, ...], current: str, expected: list[str]
) -> None:
    now = 1_000_000_000.0
    assert releases.releases_to_prune(_dirs(*ages, now=now), current, now) == expected


def test_prune_releases_removes_directories(tmp_path: Path) -> None:
    now = 1_000_000_000.0
    for i in range(7):
        d = tmp_path / f"v{i}"
        d.mkdir()
        os.utime(d, (now - (i * 10 + 1) * DAY, now - (i * 10 + 1) * DAY))
    (tmp_path / ".extract-staging").mkdir()
    assert sorted(releases.prune_releases(tmp_path, "v6", now)) == ["v5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".extract-staging",
        "v0",
        "v1",
        "v2",
        "v3",
        "v4",
        "v6",
    ]
