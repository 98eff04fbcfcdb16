"""What an app directory looks like: its runtime, framework preset, entry point and JS
package manager.

Rules: the runtime comes from the first project marker file (``RUNTIME_MARKERS``: lock
files, manifests); a directory without any marker is judged by its first usual entry file
(``ENTRY_MARKERS``: ``app.py`` -> python, ``main.go`` -> go, ``main.ts`` -> deno, other
TypeScript -> bun, JavaScript -> node). The framework preset comes from the first
``FRAMEWORK_MARKERS`` package the project depends on (package.json ``dependencies`` /
``devDependencies`` for JS, the requirements for Python; ``manage.py`` also means Django)
that works with the runtime. With a preset the entry point is left to it; else it is
package.json ``main`` when that file exists, else the first existing ``MAIN_CANDIDATES``
entry of the runtime. The package manager is reported for bun and node apps when the
project's files name one other than the runtime's own
(:func:`tako_common.package_managers.detect`).

Pure apart from reading marker files. ``tako init`` writes what it finds into tako.toml;
deploy uses the same answer when tako.toml names no runtime, so both always agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tako_client.build import pyapps
from tako_client.build.presets import preset_runtimes
from tako_common import package_managers
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
#: Package the project depends on -> framework preset, first match wins (frameworks built
#: on Vite come before plain Vite).
FRAMEWORK_MARKERS: tuple[tuple[str, str], ...] = (
    ("next", "nextjs"),
    ("@tanstack/react-start", "tanstack-start"),
    ("@tanstack/solid-start", "tanstack-start"),
    ("@tanstack/start", "tanstack-start"),
    ("astro", "astro"),
    ("@react-router/dev", "react-router"),
    ("@remix-run/dev", "remix"),
    ("vite", "vite"),
    ("django", "django"),
    ("fastapi", "fastapi"),
    ("flask", "flask"),
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
    preset: str | None = None


def detect(directory: Path, runtime: str | None = None) -> Detected:
    """Runtime (unless given), preset, entrypoint and JS package manager from ``directory``."""
    if runtime is None:
        runtime = _first_match(directory, RUNTIME_MARKERS) or _first_match(
            directory, ENTRY_MARKERS
        )
    kind = split_runtime(runtime)[0] if runtime else None
    manager = None
    if kind in package_managers.RUNTIME_DEFAULTS:
        found = package_managers.detect(package_managers.ProjectFiles.read(directory), kind)
        manager = found.name if found.name != package_managers.RUNTIME_DEFAULTS[kind] else None
    preset = detect_preset(directory, kind) if kind else None
    main = None if preset else _detect_main(directory, kind)
    return Detected(runtime, main, manager, preset)


def detect_preset(directory: Path, runtime: str) -> str | None:
    """The framework preset the project's dependencies name, if it works with ``runtime``."""
    if runtime == "python":
        names = pyapps.requirement_names(directory)
        if (directory / "manage.py").is_file():
            names.add("django")
    else:
        doc = package_managers.ProjectFiles.read(directory).package_json or {}
        names = set()
        for key in ("dependencies", "devDependencies"):
            section = doc.get(key)
            if isinstance(section, dict):
                names.update(str(name) for name in section)
    for package, preset in FRAMEWORK_MARKERS:
        if package in names and runtime in preset_runtimes(preset):
            return preset
    return None


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
