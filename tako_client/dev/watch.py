"""File changes under the app directory, for restarting the app (polling, debounced).

Rules:

- watched: every file under the app directory except what ``.gitignore`` files ignore
  (the app directory's own and nested ones, and those of its parent directories up to the
  git root, each relative to its own directory), the directories of :data:`IGNORED_DIRS`
  (``.git``, ``.tako``, ``node_modules``, caches and virtualenvs) and editor/bytecode
  litter (:func:`is_litter`); symlinks are not followed;
- a change is a file added, removed, or with another size or modification time;
  :func:`diff` compares two snapshots (pure);
- :class:`Debouncer` turns a burst of changes into one restart: it answers the batch once
  no change came for ``quiet`` seconds, or ``max_wait`` after the first one (pure: the
  time is an argument);
- :class:`Watcher` polls every :data:`POLL_INTERVAL` seconds in a thread (no native
  watcher dependency, the same on every system); at most :data:`MAX_FILES` files are
  watched, and the first scan says when that cut in.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

POLL_INTERVAL = 0.3
MAX_FILES = 20000
IGNORED_DIRS = frozenset({
    ".git", ".hg", ".svn", ".tako", "node_modules", "target", "__pycache__", ".venv",
    "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".next", ".nuxt",
    ".svelte-kit", ".turbo", ".parcel-cache", ".cache", ".idea", ".vscode",
})
_LITTER_SUFFIXES = (".pyc", ".pyo", ".swp", ".swo", ".swx", "~", ".tmp", ".crswap")
_LITTER_NAMES = frozenset({"4913", ".DS_Store"})

Snapshot = dict[str, tuple[int, int]]


def is_litter(name: str) -> bool:
    """Editor swap/backup files, bytecode and OS metadata: never a reason to restart."""
    return name in _LITTER_NAMES or name.endswith(_LITTER_SUFFIXES) or name.startswith(".#")


def diff(old: Mapping[str, tuple[int, int]], new: Mapping[str, tuple[int, int]]) -> list[str]:
    """Paths added, removed or changed between two snapshots, sorted."""
    changed = {path for path, stamp in new.items() if old.get(path) != stamp}
    changed |= old.keys() - new.keys()
    return sorted(changed)


@dataclass
class Debouncer:
    """Collects changes; :meth:`due` gives one batch after a quiet spell."""

    quiet: float = 0.25
    max_wait: float = 2.0
    pending: set[str] = field(default_factory=set)
    first: float | None = None
    last: float | None = None

    def add(self, paths: list[str], now: float) -> None:
        if not paths:
            return
        self.pending.update(paths)
        self.last = now
        if self.first is None:
            self.first = now

    def due(self, now: float) -> list[str] | None:
        if self.first is None or self.last is None:
            return None
        if now - self.last < self.quiet and now - self.first < self.max_wait:
            return None
        batch = sorted(self.pending)
        self.pending.clear()
        self.first = self.last = None
        return batch


#: A ``.gitignore`` seen from the watched root: paths starting with ``strip`` are
#: matched as ``lead + rest`` (nested files: strip their directory; parents: prepend the
#: root's path below the parent).
SpecAt = tuple[str, str, pathspec.GitIgnoreSpec]


class Scanner:
    """Walks the app directory (module rules) and returns a :data:`Snapshot`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.truncated = False
        self._parent_specs = parent_specs(root)

    def __repr__(self) -> str:
        return f"Scanner({str(self.root)!r})"

    def scan(self) -> Snapshot:
        found: Snapshot = {}
        self.truncated = False
        self._walk(self.root, "", list(self._parent_specs), found)
        return found

    def _walk(self, directory: Path, prefix: str, specs: list[SpecAt], found: Snapshot) -> None:
        own = _load_spec(directory / ".gitignore")
        if own is not None:
            specs = [*specs, (prefix, "", own)]
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if (is_dir and entry.name in IGNORED_DIRS) or is_litter(entry.name):
                    continue
                if is_ignored(specs, rel, is_dir):
                    continue
                if is_dir:
                    self._walk(Path(entry.path), rel + "/", specs, found)
                elif len(found) >= MAX_FILES:
                    self.truncated = True
                    return
                else:
                    st = entry.stat(follow_symlinks=False)
                    found[rel] = (st.st_mtime_ns, st.st_size)
            except OSError:
                continue


def _load_spec(path: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def is_ignored(specs: list[SpecAt], rel: str, is_dir: bool) -> bool:
    """Whether ``rel`` (relative to the watched root) is ignored: the last spec (the
    deepest ``.gitignore``) that has an opinion wins, as in git."""
    verdict = False
    for strip, lead, spec in specs:
        if not rel.startswith(strip):
            continue
        local = lead + rel[len(strip):] + ("/" if is_dir else "")
        result = spec.check_file(local)
        if result.include is not None:
            verdict = bool(result.include)
    return verdict


def parent_specs(root: Path) -> list[SpecAt]:
    """``.gitignore`` files of the parent directories up to the git root (none when the
    app directory is not inside a git work tree, or is its root)."""
    here = root.resolve()
    if (here / ".git").exists():
        return []
    specs: list[SpecAt] = []
    for parent in here.parents:
        spec = _load_spec(parent / ".gitignore")
        if spec is not None:
            specs.insert(0, ("", here.relative_to(parent).as_posix() + "/", spec))
        if (parent / ".git").exists():
            return specs
    return []


class Watcher:
    """Polls the app directory and reports debounced batches of changed paths."""

    def __init__(self, root: Path, *, interval: float = POLL_INTERVAL) -> None:
        self.scanner = Scanner(root)
        self.interval = interval
        self.debouncer = Debouncer()
        self._last: Snapshot | None = None

    def __repr__(self) -> str:
        return f"Watcher({self.scanner.root}, every {self.interval}s)"

    async def prime(self) -> bool:
        """Take the first snapshot; True when :data:`MAX_FILES` cut it short."""
        self._last = await asyncio.to_thread(self.scanner.scan)
        return self.scanner.truncated

    async def next_batch(self) -> list[str]:
        """Wait until files changed and settled; the changed paths."""
        loop = asyncio.get_running_loop()
        if self._last is None:
            await self.prime()
        while True:
            await asyncio.sleep(self.interval)
            snapshot = await asyncio.to_thread(self.scanner.scan)
            assert self._last is not None
            self.debouncer.add(diff(self._last, snapshot), loop.time())
            self._last = snapshot
            batch = self.debouncer.due(loop.time())
            if batch:
                return batch
