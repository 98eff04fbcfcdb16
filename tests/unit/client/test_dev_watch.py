"""What `tako dev` watches: .gitignore respected (own, nested, parents up to the git
root), caches and editor litter left out; snapshot diffs; the debouncer (time is an
argument)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_client.dev.watch import Debouncer, Scanner, diff, is_litter


def write(root: Path, rel: str, text: str = "x") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_gitignore_caches_and_litter_are_not_watched(tmp_path: Path) -> None:
    for rel in [
        "app.py", "src/a.js", "public/x.css", ".env",
        "build/out.js", "debug.log", "keep.log", "src/gen/x.js", "src/gen/keep.js",
        "node_modules/m/index.js", "__pycache__/a.pyc", ".tako/dev/data/db", ".git/HEAD",
        ".venv/bin/python", "app.py~", ".app.py.swp", "4913", "src/.#a.js",
    ]:
        write(tmp_path, rel)
    write(tmp_path, ".gitignore", "build/\n*.log\n!keep.log\n")
    write(tmp_path, "src/.gitignore", "gen/*\n!gen/keep.js\n")
    assert sorted(Scanner(tmp_path).scan()) == [
        ".env", ".gitignore", "app.py", "keep.log", "public/x.css", "src/.gitignore",
        "src/a.js", "src/gen/keep.js",
    ]


def test_parent_gitignores_apply_up_to_the_git_root(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    write(tmp_path, ".gitignore", "*.tmpl\napps/web/ignored/\n")
    app = tmp_path / "apps" / "web"
    write(app, "index.js")
    write(app, "page.tmpl")
    write(app, "ignored/x.js")
    assert sorted(Scanner(app).scan()) == ["index.js"]


def test_a_parent_gitignore_outside_any_git_tree_is_not_used(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.js\n")
    app = tmp_path / "web"
    write(app, "index.js")
    assert sorted(Scanner(app).scan()) == ["index.js"]


@pytest.mark.parametrize(
    ("name", "litter"),
    [("a.pyc", True), ("x.swp", True), ("x~", True), (".#x", True), ("4913", True),
     (".DS_Store", True), ("app.py", False), (".env", False), ("tmpl.html", False)],
)
def test_litter(name: str, litter: bool) -> None:
    assert is_litter(name) is litter


def test_diff_lists_added_removed_and_changed_paths() -> None:
    old = {"a": (1, 1), "b": (1, 1), "c": (1, 1)}
    new = {"a": (1, 1), "b": (2, 1), "d": (1, 1)}
    assert diff(old, new) == ["b", "c", "d"]
    assert diff(old, old) == []


def test_the_debouncer_waits_for_a_quiet_spell_and_caps_the_wait() -> None:
    d = Debouncer(quiet=0.25, max_wait=2.0)
    assert d.due(0.0) is None
    d.add(["a"], 0.0)
    assert d.due(0.1) is None
    d.add(["b"], 0.2)
    assert d.due(0.3) is None
    assert d.due(0.46) == ["a", "b"]
    assert d.due(1.0) is None
    for step in range(12):  # changes keep coming: one batch after max_wait anyway
        d.add([f"f{step}"], 1.0 + step * 0.2)
        if step < 10:
            assert d.due(1.0 + step * 0.2) is None
    assert d.due(3.0) is not None


def test_a_snapshot_changes_when_a_file_is_edited(tmp_path: Path) -> None:
    write(tmp_path, "app.py", "v1")
    scanner = Scanner(tmp_path)
    before = scanner.scan()
    write(tmp_path, "app.py", "version 2")
    assert diff(before, scanner.scan()) == ["app.py"]
