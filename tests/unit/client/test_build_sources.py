"""Source root resolution and the deployable file list (git's view, .gitignore, forced excludes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tako_client.build.plan import BuildError
from tako_client.build.sources import collect_sources, is_forced_excluded, resolve_source_root
from tests.unit.client.gitrepo import git, isolated_git, write  # noqa: F401

pytestmark = pytest.mark.usefixtures("isolated_git")


def test_source_root_is_git_toplevel_when_it_contains_the_app_dir(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "apps" / "web").mkdir(parents=True)
    git(repo, "init", "-q")
    root, subdir, is_git = resolve_source_root(repo / "apps" / "web")
    assert (root, subdir, is_git) == (repo.resolve(), "apps/web", True)


def test_source_root_is_app_dir_without_git(tmp_path: Path) -> None:
    app = tmp_path / "plain"
    app.mkdir()
    assert resolve_source_root(app) == (app.resolve(), ".", False)


@pytest.mark.parametrize(
    ("relpath", "excluded"),
    [
        (".git/config", True),
        (".tako/secrets.json", True),
        ("a/.tako/x", True),
        (".env", True),
        (".env.local", True),
        ("config/.envrc", True),
        (".environment/x", True),
        ("node_modules/x/index.js", True),
        ("packages/ui/node_modules/y", True),
        ("crate/target/debug/app", True),
        ("src/env.ts", False),
        ("targets/list.txt", False),
        ("my.env", False),
        ("src/.gitkeep", False),
    ],
)
def test_forced_excludes_match_any_path_component(relpath: str, excluded: bool) -> None:
    assert is_forced_excluded(relpath) is excluded


def test_git_view_lists_tracked_and_untracked_but_not_ignored_or_deleted(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write(
        repo, {".gitignore": "*.log\n", "a.py": "a", "gone.py": "g", "keep.log": "x", ".env": "S=1"}
    )
    git(repo, "add", "-f", ".gitignore", "a.py", "gone.py", "keep.log")
    git(repo, "commit", "-qm", "init")
    (repo / "gone.py").unlink()
    write(repo, {"new.py": "n", "debug.log": "d", "node_modules/m/i.js": "m", ".tako/x": "t"})
    tree = collect_sources(repo)
    # keep.log is tracked, so git lists it even though *.log is ignored
    assert tree.files == (".gitignore", "a.py", "keep.log", "new.py")


NESTED_TREE = {
    ".gitignore": "*.log\n/dist\ncache/\n",
    "app.py": "",
    "dist/out.js": "",
    "src/dist/keep.js": "",
    "src/app.log": "",
    "src/.gitignore": "!important.log\n/local.txt\n",
    "src/important.log": "",
    "src/local.txt": "",
    "local.txt": "",
    "cache/data.bin": "",
    "src/cache/x.bin": "",
    "docs/readme.md": "",
    "docs/.gitignore": "*.md\n!readme.md\n",
    "docs/notes.md": "",
}


def test_nested_gitignores_without_git_apply_relative_to_their_directory(tmp_path: Path) -> None:
    app = tmp_path / "plain"
    write(app, NESTED_TREE)
    assert collect_sources(app).files == (
        ".gitignore",
        "app.py",
        "docs/.gitignore",
        "docs/readme.md",
        "local.txt",
        "src/.gitignore",
        "src/dist/keep.js",
        "src/important.log",
    )


def test_non_git_filtering_matches_gits_own_view_of_the_same_tree(tmp_path: Path) -> None:
    plain, repo = tmp_path / "plain", tmp_path / "repo"
    write(plain, NESTED_TREE)
    write(repo, NESTED_TREE)
    git(repo, "init", "-q")
    assert collect_sources(plain).files == collect_sources(repo).files


def test_symlinks_are_kept_as_links_not_followed(tmp_path: Path) -> None:
    app = tmp_path / "app"
    write(app, {"real/file.txt": "x"})
    os.symlink("real", app / "alias")
    os.symlink("real/file.txt", app / "link.txt")
    assert collect_sources(app).files == ("alias", "link.txt", "real/file.txt")


@pytest.mark.parametrize("target", ["../outside.txt", "sub/../../x", "/etc/passwd"])
def test_symlink_pointing_outside_the_source_root_is_rejected(tmp_path: Path, target: str) -> None:
    app = tmp_path / "app"
    write(app, {"sub/a.txt": "a"})
    os.symlink(target, app / "bad")
    with pytest.raises(BuildError, match="bad"):
        collect_sources(app)


def test_git_submodule_like_directory_is_listed_through_its_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(
        repo,
        {
            "main.py": "",
            "vendor/lib/.gitignore": "*.tmp\n",
            "vendor/lib/x.py": "",
            "vendor/lib/y.tmp": "",
        },
    )
    git(repo / "vendor" / "lib", "init", "-q")
    git(repo / "vendor" / "lib", "add", ".")
    git(repo / "vendor" / "lib", "commit", "-qm", "lib")
    git(repo, "init", "-q")
    git(repo, "add", "main.py", "vendor/lib")
    assert collect_sources(repo).files == (
        "main.py",
        "vendor/lib/.gitignore",
        "vendor/lib/x.py",
    )
