"""What an app directory looks like: its runtime, entry point and JS package manager.

Rules: the runtime comes from the first project marker file (``RUNTIME_MARKERS``: lock
files, manifests); a directory without any marker is judged by its first usual entry file
(``ENTRY_MARKERS``: ``app.py`` -> python, ``main.go`` -> go, ``main.ts`` -> deno, other
TypeScript -> bun, JavaScript -> node). The entry point is package.json ``main`` when that
file exists, else the first existing ``MAIN_CANDIDATES`` entry of the runtime.

Pure apart from reading marker files. ``tako init`` writes what it finds into tako.toml;
deploy uses the same answer when tako.toml names no runtime, so both always agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tako_common.config import split_runtime

RUNTIME_MARKERS: tuple[tuple[str, str], ...] = (
    ("bun.lock", "bun"),
    ("bun.lockb", "bun"),
    ("deno.json", "deno"),
    ("deno.jsonc", "deno"),
    ("package.json", "node"),
    ("pyproject.toml", "python"),
    ("requirements.txt", "python"),
    ("go.mod", "go"),
)
PACKAGE_MANAGER_MARKERS: tuple[tuple[str, str], ...] = (
    ("pnpm-lock.yaml", "pnpm"),
    ("yarn.lock", "yarn"),
)
_JS_MAINS = (
    "index.ts",
    "index.tsx",
    "index.js",
    "index.mjs",
    "server.ts",
    "server.js",
    "app.ts",
    "app.js",
    "src/index.ts",
    "src/index.tsx",
    "src/index.js",
    "src/server.ts",
    "src/server.js",
    "src/app.ts",
    "src/app.js",
)
_PY_MAINS = ("app.py", "main.py", "server.py", "src/app.py", "src/main.py")
MAIN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "bun": _JS_MAINS,
    "node": _JS_MAINS,
    "deno": ("main.ts", "mod.ts", *_JS_MAINS),
    "python": _PY_MAINS,
    "go": (),
}
#: Entry files that tell the runtime of a directory without marker files, in this order.
ENTRY_MARKERS: tuple[tuple[str, str], ...] = (
    *((name, "python") for name in _PY_MAINS),
    ("main.go", "go"),
    ("main.ts", "deno"),
    ("mod.ts", "deno"),
    *((name, "bun") for name in _JS_MAINS if name.endswith((".ts", ".tsx"))),
    *((name, "node") for name in _JS_MAINS if name.endswith((".js", ".mjs"))),
)


@dataclass(frozen=True)
class Detected:
    """What the directory says about the app."""

    runtime: str | None
    main: str | None
    package_manager: str | None


def detect(directory: Path, runtime: str | None = None) -> Detected:
    """Runtime (unless given), entrypoint and JS package manager from files in ``directory``."""
    if runtime is None:
        runtime = _first_match(directory, RUNTIME_MARKERS) or _first_match(
            directory, ENTRY_MARKERS
        )
    kind = split_runtime(runtime)[0] if runtime else None
    manager = None
    if kind == "node":
        manager = _first_match(directory, PACKAGE_MANAGER_MARKERS)
    return Detected(runtime, _detect_main(directory, kind), manager)


def _first_match(directory: Path, markers: tuple[tuple[str, str], ...]) -> str | None:
    return next((name for marker, name in markers if (directory / marker).is_file()), None)


def _detect_main(directory: Path, kind: str | None) -> str | None:
    if kind in ("bun", "node", "deno"):
        declared = _package_json_main(directory)
        if declared is not None:
            return declared
    for candidate in MAIN_CANDIDATES.get(kind or "", ()):
        if (directory / candidate).is_file():
            return candidate
    return None


def _package_json_main(directory: Path) -> str | None:
    try:
        data = json.loads((directory / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    main = data.get("main") if isinstance(data, dict) else None
    if isinstance(main, str) and main and (directory / main).is_file():
        return main.removeprefix("./")
    return None
