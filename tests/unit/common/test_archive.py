"""The shared safe extractor: hostile archives are refused under the running interpreter,
with and without tarfile's extraction filters (3.11.2 has none)."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from tako_client.build.bundle import extract_tar_zst as client_extract
from tako_client.build.plan import BuildError
from tako_common import archive
from tako_common.archive import ArchiveError, UnsafeArchiveError, extract_tar_zst
from tests.helpers.artifacts import Entry, tar_zst_from_entries

# Both code paths run wherever they can: the hand-applied rules always, tarfile's own
# filter too when this interpreter has it.
FILTER_MODES = [False, True] if hasattr(tarfile, "data_filter") else [False]

HOSTILE = [
    ([Entry("/etc/evil", data=b"x")], "absolute path"),
    ([Entry("../evil", data=b"x")], "contains '..'"),
    ([Entry("a/../../evil", data=b"x")], "contains '..'"),
    ([Entry("link", kind="symlink", target="/etc/passwd")], "points outside"),
    ([Entry("link", kind="symlink", target="../../outside")], "points outside"),
    ([Entry("d/link", kind="symlink", target="../..")], "points outside"),
    ([Entry("hl", kind="hardlink", target="/etc/passwd")], "hard link"),
    ([Entry("hl", kind="hardlink", target="../outside")], "hard link"),
    ([Entry("hl", kind="hardlink", target="never-seen")], "hard link"),
    ([Entry("pipe", kind="fifo")], "FIFO"),
    ([Entry("dev", kind="chr")], "device"),
    (
        [
            Entry("x", kind="dir"),
            Entry("x/a", kind="symlink", target=".."),
            Entry("x/a/b", kind="symlink", target=".."),
            Entry("x/a/b/evil", data=b"x"),
        ],
        "outside",
    ),
    (
        [
            Entry("d", kind="dir"),
            Entry("d/e", kind="dir"),
            Entry("d/e/up", kind="symlink", target="../.."),
            Entry("d/e/esc", kind="symlink", target="up/.."),
        ],
        "outside",
    ),
]


@pytest.fixture(params=FILTER_MODES, ids=lambda v: "tar-filter" if v else "by-hand")
def filter_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(archive, "_HAS_FILTER", request.param)
    return bool(request.param)


def _write(tmp_path: Path, entries: list[Entry]) -> Path:
    path = tmp_path / "in" / "a.tar.zst"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(tar_zst_from_entries(entries))
    return path


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(("entries", "message"), HOSTILE)
def test_hostile_archives_are_refused_and_leave_nothing(
    tmp_path: Path, filter_mode: bool, entries: list[Entry], message: str
) -> None:
    path = _write(tmp_path, entries)
    before = _listing(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_tar_zst(path, tmp_path / "out")
    assert _listing(tmp_path) == before


def test_setuid_setgid_sticky_and_group_write_bits_are_dropped(
    tmp_path: Path, filter_mode: bool
) -> None:
    path = _write(
        tmp_path,
        [
            Entry("suid", data=b"#!/bin/sh\n", mode=0o4777),
            Entry("sgid", data=b"x", mode=0o2775),
            Entry("none", mode=0o000),
            Entry("dir", kind="dir", mode=0o1777),
        ],
    )
    out = tmp_path / "out"
    assert extract_tar_zst(path, out) == 4
    modes = {name: stat.S_IMODE((out / name).stat().st_mode) for name in _listing(out)}
    assert modes == {"suid": 0o755, "sgid": 0o755, "none": 0o600, "dir": 0o755}
    assert (out / "suid").stat().st_uid == os.getuid()


def test_a_regular_tree_with_inner_links_extracts(tmp_path: Path, filter_mode: bool) -> None:
    path = _write(
        tmp_path,
        [
            Entry("app", kind="dir", mode=0o755),
            Entry("app/main.py", data=b"print(1)\n"),
            Entry("app/alias.py", kind="symlink", target="main.py"),
            Entry("app/copy.py", kind="hardlink", target="app/main.py"),
        ],
    )
    out = tmp_path / "out"
    extract_tar_zst(path, out)
    assert (out / "app/alias.py").read_text() == (out / "app/copy.py").read_text() == "print(1)\n"


def test_an_existing_destination_is_refused_and_kept(tmp_path: Path) -> None:
    path = _write(tmp_path, [Entry("a", data=b"x")])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        extract_tar_zst(path, tmp_path / "out")
    assert (tmp_path / "out" / "keep").read_text() == "mine"


def test_a_corrupt_archive_is_an_archive_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.tar.zst"
    path.write_bytes(b"definitely not zstd")
    with pytest.raises(ArchiveError, match="not a valid .tar.zst"):
        extract_tar_zst(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_client_build_uses_the_same_rules(tmp_path: Path) -> None:
    path = _write(tmp_path, [Entry("link", kind="symlink", target="/etc/passwd")])
    with pytest.raises(BuildError, match="points outside"):
        client_extract(path, tmp_path / "ws" / "work")
    assert not (tmp_path / "ws" / "work").exists()
