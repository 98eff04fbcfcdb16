"""Python apps whose ``main`` is a module (``package.module:app``): which server runs them.

Rules (DESIGN "App process contract": ASGI/WSGI ``module:app`` through uvicorn/gunicorn
when listed in the app's requirements):

- the requirements are what the server installs: ``requirements.txt`` (``-r``/``-c``
  includes followed inside the app directory), else ``pyproject.toml``
  ``[project].dependencies`` and ``[tool.poetry.dependencies]``; names are compared
  normalised (PEP 503: lowercase, runs of ``-_.`` -> ``-``; extras and versions dropped);
- the interface is the preset's (fastapi: ASGI, flask: WSGI), else the module's last
  part (``...asgi`` / ``...wsgi``), else unknown;
- ASGI needs uvicorn; WSGI runs on gunicorn, else on uvicorn's WSGI interface; unknown
  runs on gunicorn when listed, else uvicorn; neither listed is an error that names both;
- the start command binds ``$HOST:$PORT`` through ``/bin/sh -c`` (the port is known only
  when the instance starts) and passes ``{main}`` as its own argument (exact-argument
  expansion, 001); the server's release venv comes first on ``PATH``.

Pure apart from reading the requirement files.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from tako_client.build.plan import BuildError
from tako_common.entry import MAIN_PLACEHOLDER, is_module_spec, module_of

SERVERS = ("uvicorn", "gunicorn")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_MAX_INCLUDES = 10
UVICORN = 'exec uvicorn --host "$HOST" --port "$PORT" {interface}"$1"'
GUNICORN = 'exec gunicorn --bind "$HOST:$PORT" --access-logfile - "$1"'


def normalize(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(app_dir: Path) -> set[str]:
    """Normalised names of the app's declared requirements (see the module rules)."""
    requirements = app_dir / "requirements.txt"
    if requirements.is_file():
        return _requirements_txt(requirements, app_dir.resolve(), 0)
    pyproject = app_dir / "pyproject.toml"
    if pyproject.is_file():
        return _pyproject(pyproject)
    return set()


def _requirements_txt(path: Path, root: Path, depth: int) -> set[str]:
    names: set[str] = set()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(f"cannot read {path}: {exc}") from exc
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line.startswith(("-r ", "-c ", "--requirement ", "--constraint ")):
            if line.startswith(("-c ", "--constraint ")):
                continue  # constraints pin versions; they add no requirement
            included = (path.parent / line.split(None, 1)[1].strip()).resolve()
            if depth < _MAX_INCLUDES and included.is_relative_to(root) and included.is_file():
                names |= _requirements_txt(included, root, depth + 1)
            continue
        if not line or line.startswith(("#", "-")) or ("://" in line and " @ " not in line):
            continue  # options, and bare URLs / VCS links (no name to read)
        match = _NAME.match(line)
        if match:
            names.add(normalize(match.group(1)))
    return names


def _pyproject(path: Path) -> set[str]:
    try:
        doc: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"cannot read {path}: {exc}") from exc
    names: set[str] = set()
    project = doc.get("project", {})
    for spec in project.get("dependencies", []) if isinstance(project, dict) else []:
        match = _NAME.match(str(spec))
        if match:
            names.add(normalize(match.group(1)))
    poetry = doc.get("tool", {}).get("poetry", {}).get("dependencies", {})
    if isinstance(poetry, dict):
        names.update(normalize(str(name)) for name in poetry if name != "python")
    return names


def interface_of(main: str, preset_interface: str | None) -> str | None:
    """``"asgi"``, ``"wsgi"`` or None (unknown) for a module ``main``."""
    if preset_interface is not None:
        return preset_interface
    last = module_of(main).rsplit(".", 1)[-1]
    return last if last in ("asgi", "wsgi") else None


def server_for(main: str, interface: str | None, names: set[str]) -> tuple[str, str | None]:
    """``(server, interface)`` that runs ``main``; raises when the requirements lack it."""
    has_uvicorn, has_gunicorn = "uvicorn" in names, "gunicorn" in names
    if interface == "asgi":
        if has_uvicorn:
            return "uvicorn", "asgi"
        raise BuildError(
            f"main {main!r} is an ASGI app: list uvicorn in requirements.txt "
            "(or pyproject.toml) to serve it",
            hint="e.g. add a line `uvicorn` to requirements.txt",
        )
    if has_gunicorn:
        return "gunicorn", interface
    if has_uvicorn:
        return "uvicorn", interface
    raise BuildError(
        f"main {main!r} is a Python module: list uvicorn (ASGI) or gunicorn (WSGI) in "
        "requirements.txt (or pyproject.toml) to serve it",
        hint='or set main to a file that serves $HOST:$PORT itself, e.g. main = "app.py"',
    )


def start_command(main: str, preset_interface: str | None, app_dir: Path) -> tuple[str, ...]:
    """The instance command of a module ``main`` (``{main}`` left for the server to expand)."""
    if not is_module_spec(main):
        raise ValueError(f"{main!r} is not a module specifier")
    interface = interface_of(main, preset_interface)
    server, interface = server_for(main, interface, requirement_names(app_dir))
    if server == "gunicorn":
        return ("/bin/sh", "-c", GUNICORN, "gunicorn", MAIN_PLACEHOLDER)
    flag = "--interface wsgi " if interface == "wsgi" else ""
    return ("/bin/sh", "-c", UVICORN.format(interface=flag), "uvicorn", MAIN_PLACEHOLDER)


def preferred_interface(names: set[str]) -> str:
    """Which of a project's entry modules to prefer: ASGI when only uvicorn is listed."""
    return "asgi" if "uvicorn" in names and "gunicorn" not in names else "wsgi"
