"""Which entrypoint (``main``) a deploy uses: the resolution order of deploy 000.

Rules:

1. ``main`` from tako.toml (a file path, or for Python a module ``package.module:app``);
2. JS runtimes (bun, node, deno), when the preset's ``main`` is ``index.<ext>`` or
   ``src/index.<ext>`` (ext ts/tsx/js/jsx): the first existing ``index.<ext>``, then the
   first existing ``src/index.<ext>`` (ext in that order), then the preset's ``main``;
3. the preset's ``main``.

Python presets also list ``main_candidates`` (files, or modules whose file must exist;
``*`` as the first module part matches one directory, e.g. ``*.wsgi:application`` finds
``mysite/wsgi.py``); the first existing one is used before the preset's ``main``. When
only uvicorn is listed in the requirements, ASGI modules (``...asgi:``) are tried before
WSGI ones. No main at all is an error that says how to set one.

Pure apart from looking at which files exist in the app directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tako_client.build.plan import BuildError
from tako_client.build.presets import Preset
from tako_common.entry import is_module_spec, module_files, module_of

JS_RUNTIMES = ("bun", "node", "deno")
JS_EXTS = ("ts", "tsx", "js", "jsx")
ROOT_INDEXES = tuple(f"index.{ext}" for ext in JS_EXTS)
SRC_INDEXES = tuple(f"src/index.{ext}" for ext in JS_EXTS)


def resolve_main(
    preset: Preset, app_dir: Path, configured: str | None, *, prefer: str = "wsgi"
) -> str:
    """The entrypoint of the app in ``app_dir`` (see the module rules)."""
    if configured:
        return configured
    if preset.runtime in JS_RUNTIMES:
        found = js_main(preset.main, lambda rel: (app_dir / rel).is_file())
        if found:
            return found
    for candidate in _ordered(preset.main_candidates, prefer):
        found = existing_candidate(candidate, app_dir)
        if found:
            return found
    if preset.main:
        return preset.main
    looked = ", ".join(preset.main_candidates) or "nothing"
    raise BuildError(
        f"no entrypoint: preset {preset.name!r} found none of {looked} and tako.toml sets no main",
        hint='set `main = "..."` in tako.toml',
    )


def js_main(preset_main: str | None, exists: Callable[[str], bool]) -> str | None:
    """Rules 2 and 3 for JS runtimes; ``exists(relpath)`` says whether a file exists."""
    if preset_main in ROOT_INDEXES + SRC_INDEXES:
        for candidate in ROOT_INDEXES + SRC_INDEXES:
            if exists(candidate):
                return candidate
    return preset_main


def existing_candidate(candidate: str, app_dir: Path) -> str | None:
    """``candidate`` when its file (or module file) exists; a ``*`` module part expanded."""
    if not is_module_spec(candidate.replace("*", "_", 1)):
        return candidate if (app_dir / candidate).is_file() else None
    if candidate.startswith("*."):
        rest = candidate[2:]
        for directory in sorted(p.name for p in app_dir.iterdir() if p.is_dir()):
            found = existing_candidate(f"{directory}.{rest}", app_dir)
            if found and is_module_spec(found):
                return found
        return None
    return candidate if module_exists(candidate, app_dir) else None


def module_exists(main: str, app_dir: Path) -> bool:
    """True when the module file of ``main`` exists under ``app_dir``."""
    return any((app_dir / rel).is_file() for rel in module_files(main))


def _ordered(candidates: tuple[str, ...], prefer: str) -> list[str]:
    def rank(candidate: str) -> int:
        spec = candidate.replace("*", "_", 1)
        if not is_module_spec(spec):
            return 0
        last = module_of(spec).rsplit(".", 1)[-1]
        return 1 if last in ("asgi", "wsgi") and last != prefer else 0

    return sorted(candidates, key=rank)
