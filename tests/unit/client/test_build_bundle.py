"""Source hash, release version from git state, and deterministic tar.zst archives."""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from pathlib import Path

import pytest

from tako_client.build.bundle import (
    create_source_bundle,
    extract_tar_zst,
    git_info,
    list_tar_zst,
    source_hash,
    write_tar_zst,
)
from tako_client.build.sources import collect_sources
from tests.unit.client.gitrepo import git, isolated_git, write  # noqa: F401

pytestmark = pytest.mark.usefixtures("isolated_git")


def committed_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    write(repo, {"app.py": "print(1)\n", "lib/util.py": "X = 1\n"})
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "First commit subject")
    return repo


def test_source_hash_is_sha256_over_relpath_nul_and_bytes(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write(root, {"b.txt": "B", "a.txt": "A"})
    os.symlink("a.txt", root / "l")
    expected = hashlib.sha256(b"a.txt\0A" + b"b.txt\0B" + b"l\0symlink:a.txt").hexdigest()
    assert source_hash(root, ["l", "b.txt", "a.txt"]) == expected


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "a.txt").write_text("changed"),
        lambda root: (root / "a.txt").rename(root / "c.txt"),
    ],
    ids=["content", "name"],
)
def test_source_hash_changes_with_content_or_name(tmp_path: Path, change: object) -> None:
    root = tmp_path / "src"
    write(root, {"a.txt": "A"})
    before = source_hash(root, [p.name for p in root.iterdir()])
    change(root)  # type: ignore[operator]
    assert source_hash(root, [p.name for p in root.iterdir()]) != before


def test_version_without_git_is_nogit_and_hash8(tmp_path: Path) -> None:
    app = tmp_path / "app"
    write(app, {"app.py": "x"})
    bundle = create_source_bundle(collect_sources(app), app / ".tako" / "artifacts")
    assert bundle.version == f"nogit_{bundle.source_hash[:8]}"
    assert bundle.path == app / ".tako" / "artifacts" / f"{bundle.version}-source.tar.zst"


def test_version_of_clean_tree_is_the_short_commit(tmp_path: Path) -> None:
    repo = committed_repo(tmp_path)
    commit = git(repo, "rev-parse", "--short", "HEAD").strip()
    bundle = create_source_bundle(collect_sources(repo), repo / ".tako" / "artifacts")
    assert bundle.version == commit
    assert bundle.git.subject == "First commit subject"
    assert bundle.git.dirty is False


def test_version_of_dirty_tree_is_commit_and_hash8(tmp_path: Path) -> None:
    repo = committed_repo(tmp_path)
    (repo / "app.py").write_text("print(2)\n")
    bundle = create_source_bundle(collect_sources(repo), repo / ".tako" / "artifacts")
    assert re.fullmatch(r"[0-9a-f]{7,}_[0-9a-f]{8}", bundle.version)
    assert bundle.version.endswith(bundle.source_hash[:8])


@pytest.mark.parametrize("path", [".tako/artifacts/x", ".env.local", "node_modules/a/b.js"])
def test_forced_excluded_changes_do_not_make_the_tree_dirty(tmp_path: Path, path: str) -> None:
    repo = committed_repo(tmp_path)
    write(repo, {path: "untracked"})
    assert git_info(repo).dirty is False


def test_empty_repository_without_commit_versions_as_nogit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(repo, {"app.py": "x"})
    git(repo, "init", "-q")
    bundle = create_source_bundle(collect_sources(repo), tmp_path / "out")
    assert bundle.version.startswith("nogit_")


def test_archive_is_deterministic_sorted_and_normalised(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, {"z.sh": "#!/bin/sh\n", "a/b.txt": "b"})
    (src / "z.sh").chmod(0o755)
    os.symlink("a/b.txt", src / "link")
    files = ["z.sh", "link", "a/b.txt"]
    first, second = tmp_path / "1.tar.zst", tmp_path / "2.tar.zst"
    write_tar_zst(first, src, files)
    os.utime(src / "z.sh", (1, 1))
    write_tar_zst(second, src, files)
    assert first.read_bytes() == second.read_bytes()
    members = list_tar_zst(first)
    assert [m.name for m in members] == ["a/b.txt", "link", "z.sh"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["z.sh"].mode == 0o755
    assert by_name["link"].type == tarfile.SYMTYPE and by_name["link"].linkname == "a/b.txt"


def test_archive_round_trips_through_extraction(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, {"a/b.txt": "hello"})
    os.symlink("a/b.txt", src / "link")
    archive = tmp_path / "x.tar.zst"
    write_tar_zst(archive, src, ["a/b.txt", "link"])
    dest = tmp_path / "dest"
    extract_tar_zst(archive, dest)
    assert (dest / "a" / "b.txt").read_text() == "hello"
    assert os.readlink(dest / "link") == "a/b.txt"
