"""Which files make up the source of a deploy: the source root and the filtered file list.

Rules:

- source root = ``git rev-parse --show-toplevel`` when that contains the app directory,
  else the app directory; ``app_subdir`` is the app directory relative to it (``.`` if same);
- with git, the file set is git's own view: ``git ls-files -z --cached --others
  --exclude-standard`` (tracked + untracked-not-ignored; deleted files skipped; submodule
  directories are walked like a non-git tree); without git, every ``.gitignore`` found
  (nested, patterns relative to their own directory) is applied with gitignore semantics;
- forced excludes, never overridable, on any path component: ``.git``, ``.tako``,
  ``node_modules``, ``target`` and any name starting with ``.env``;
- symlinks are kept as links and never followed; a link that is absolute or resolves
  outside the source root is rejected;
- the result is sorted by relative POSIX path.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pathspec

from tako_client.build.plan import BuildError

FORCED_EXCLUDE_NAMES = frozenset({".git", ".tako", "node_modules", "target"})


@dataclass(frozen=True)
class SourceTree:
    """The resolved source: root directory, app subdirectory and the sorted file list."""

    root: Path
    app_subdir: str
    files: tuple[str, ...]
    is_git: bool


def is_forced_excluded(relpath: str) -> bool:
    """True when any component of ``relpath`` is a forced exclude."""
    return any(
        part in FORCED_EXCLUDE_NAMES or part.startswith(".env") for part in relpath.split("/")
    )


def git_toplevel(app_dir: Path) -> Path | None:
    """The git work tree root containing ``app_dir``, or None (no git, or not a repo)."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=app_dir,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    top = Path(proc.stdout.strip()).resolve()
    app = app_dir.resolve()
    return top if app == top or top in app.parents else None


def resolve_source_root(app_dir: Path) -> tuple[Path, str, bool]:
    """``(root, app_subdir, is_git)`` for an app directory."""
    app = app_dir.resolve()
    top = git_toplevel(app)
    root = top if top is not None else app
    subdir = app.relative_to(root).as_posix() or "."
    return root, subdir, top is not None


def collect_sources(app_dir: Path) -> SourceTree:
    """Resolve the source root and list its deployable files (see module rules)."""
    root, subdir, is_git = resolve_source_root(app_dir)
    raw = _git_files(root) if is_git else _walk_files(root, "")
    files = sorted({f for f in raw if not is_forced_excluded(f)})
    for rel in files:
        check_symlink(root, rel)
    return SourceTree(root=root, app_subdir=subdir, files=tuple(files), is_git=is_git)


def check_symlink(root: Path, rel: str) -> None:
    """Reject a symlink at ``rel`` that is absolute or points outside ``root``."""
    path = root / rel
    if not path.is_symlink():
        return
    target = os.readlink(path)
    if posixpath.isabs(target):
        raise BuildError(
            f"symlink {rel!r} -> {target!r} is absolute: links must stay inside the source root",
            hint="make it a relative link to a file inside the project",
        )
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if resolved == ".." or resolved.startswith("../"):
        raise BuildError(
            f"symlink {rel!r} -> {target!r} points outside the source root",
            hint="copy the file into the project or ignore the link in .gitignore",
        )


def _git_files(root: Path) -> list[str]:
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(
            f"`git ls-files` failed in {root}: {proc.stderr.decode(errors='replace').strip()}"
        )
    files: list[str] = []
    for entry in proc.stdout.decode("utf-8", errors="surrogateescape").split("\0"):
        if not entry or is_forced_excluded(entry):
            continue
        path = root / entry
        if path.is_symlink() or path.is_file():
            files.append(entry)
        elif path.is_dir():  # a submodule (gitlink): list it like a plain tree
            files.extend(_walk_files(path, entry + "/"))
    return files


def _walk_files(base: Path, prefix: str) -> list[str]:
    """Files under ``base`` honouring nested ``.gitignore`` files; ``prefix`` prepended."""
    files: list[str] = []
    specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
    _walk_dir(base, "", specs, files)
    return [prefix + f for f in files]


def _walk_dir(
    base: Path, rel_dir: str, specs: list[tuple[str, pathspec.GitIgnoreSpec]], out: list[str]
) -> None:
    directory = base / rel_dir if rel_dir else base
    own = _load_gitignore(directory / ".gitignore")
    active = specs + [(rel_dir, own)] if own is not None else specs
    with os.scandir(directory) as entries:
        names = sorted(entries, key=lambda e: e.name)
    for entry in names:
        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        if is_forced_excluded(entry.name):
            continue
        is_dir = entry.is_dir(follow_symlinks=False)
        if _is_ignored(active, rel, is_dir):
            continue
        if is_dir:
            _walk_dir(base, rel, active, out)
        else:
            out.append(rel)


def _load_gitignore(path: Path) -> pathspec.GitIgnoreSpec | None:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _is_ignored(specs: list[tuple[str, pathspec.GitIgnoreSpec]], rel: str, is_dir: bool) -> bool:
    """Gitignore precedence: the deepest ``.gitignore`` with a matching pattern decides."""
    ignored = False
    for spec_dir, spec in specs:
        sub = rel[len(spec_dir) + 1 :] if spec_dir else rel
        result = spec.check_file(sub + "/" if is_dir else sub)
        if result.include is not None:
            ignored = result.include
    return ignored
