"""``tako init [DIR]``: write a commented tako.toml for the app in DIR (default: here).

Rules:
- runtime: ``--runtime``, else detected from marker files in this order: bun.lock /
  bun.lockb -> bun; deno.json / deno.jsonc -> deno; package.json -> node; pyproject.toml /
  requirements.txt -> python; go.mod -> go; without any of them, the first usual entry
  file: app.py / main.py / server.py -> python, main.go -> go, main.ts / mod.ts -> deno,
  index.ts / server.ts / app.ts -> bun, index.js / server.js / app.js -> node; else left
  commented out;
- preset: the framework the project depends on (package.json dependencies / the Python
  requirements: next -> nextjs, @tanstack/react-start -> tanstack-start, astro, remix,
  react-router, vite; django (or manage.py), fastapi, flask), when it works with the
  runtime; package_manager when the lockfile names one other than the runtime's own;
- main: left to the preset when one is detected; else package.json ``main`` when that file
  exists, else the first existing usual entrypoint of the runtime (index.ts, server.js,
  src/index.ts, app.py, main.py, ...);
- name and production route: flags; on a terminal (stdin and stdout are TTYs) a prompt
  with the default; otherwise the default: name from the directory, route
  ``{name}.localhost`` (a private host that deploys with a self-signed certificate;
  replace it with the real host before going public);
- an existing tako.toml is overwritten only with ``--force`` or after a yes on a terminal;
- the template explains every option it writes or shows in a comment, and marks the
  options this version validates but ignores (the list lives in
  :data:`tako_common.config.NOT_IMPLEMENTED`; template lines ``@@NOT_IMPLEMENTED:<id>@@``);
- the rendered file is validated with the real loader before anything is written, and
  is written atomically (temporary file + rename).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from importlib import resources
from pathlib import Path

import typer

from tako_client import output
from tako_client.commands.config import print_config_error
from tako_client.detect import Detected, detect  # noqa: F401 (detect is public here too)
from tako_common.config import CONFIG_FILE, load_config_text, split_runtime
from tako_common.config.unimplemented import template_note
from tako_common.errors import ConfigError, TakoError, ValidationError
from tako_common.names import sanitize_app_name, validate_app_name

TEMPLATE = "tako.toml.tmpl"


#: A template line ``@@NOT_IMPLEMENTED:<id>@@`` becomes the "not implemented yet" note of
#: that option while :data:`NOT_IMPLEMENTED` lists it, and disappears once it does not.
NOTE_MARKER = re.compile(r"^@@NOT_IMPLEMENTED:([a-z_]+)@@\n", re.MULTILINE)


def template_text() -> str:
    """The raw template, markers included."""
    return resources.files("tako_client").joinpath("templates", TEMPLATE).read_text("utf-8")


def render(name: str, route: str, found: Detected) -> str:
    """The commented template with the answers filled in (TOML-escaped)."""
    text = NOTE_MARKER.sub(
        lambda match: f"{note}\n" if (note := template_note(match.group(1))) else "",
        template_text(),
    )
    runtime = (
        f"runtime = {json.dumps(found.runtime)}"
        if found.runtime
        else '# runtime = "bun"   # not detected: set bun, node, deno, python or go'
    )
    main = f"main = {json.dumps(found.main)}" if found.main else '# main = "index.js"'
    if found.preset and not found.main:
        main = f'# main = "index.js"   # default: the entry point of the {found.preset} preset'
    text = text.replace("@@NAME@@", json.dumps(name)).replace("@@ROUTE@@", json.dumps(route))
    text = text.replace("@@RUNTIME@@", runtime).replace("@@MAIN@@", main)
    if found.package_manager:
        text = text.replace(
            '# package_manager = "npm"', f"package_manager = {json.dumps(found.package_manager)}"
        )
    if found.preset:
        text = text.replace('# preset = "vite"', f"preset = {json.dumps(found.preset)}")
    return text


def register(app: typer.Typer) -> None:
    """Add ``tako init`` to ``app``."""
    app.command("init", help="Write a commented tako.toml for an app.")(init_command)


def init_command(
    directory: Path | None = typer.Argument(None, help="App directory (default: current)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing tako.toml."),
    name: str | None = typer.Option(None, "--name", help="App name (default: directory name)."),
    route: str | None = typer.Option(
        None, "--route", help="Production route: host or host/path."
    ),
    runtime: str | None = typer.Option(
        None, "--runtime", help="bun, node, deno, python or go (optionally @version)."
    ),
) -> None:
    target = (directory or Path.cwd()).absolute()
    path = target / CONFIG_FILE
    interactive = output.is_interactive()
    _check_overwrite(path, force, interactive)
    if runtime is not None:
        split_runtime(runtime)
    found = detect(target, runtime) if target.is_dir() else Detected(runtime, None, None)
    app_name = _ask_name(name, target, interactive)
    app_route = route or _ask(interactive, "Production route", f"{app_name}.localhost")
    text = render(app_name, app_route, found)
    try:
        load_config_text(text, path)
    except ConfigError as exc:
        print_config_error(exc)
        raise typer.Exit(1) from exc
    target.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, text)
    output.success(f"wrote {path}")
    output.bullet(f"runtime: {found.runtime or 'not detected (set runtime in tako.toml)'}")
    if found.preset:
        output.bullet(f"preset: {found.preset}")
    if found.package_manager:
        output.bullet(f"package manager: {found.package_manager}")
    default_main = f"from the {found.preset} preset" if found.preset else "runtime default"
    output.bullet(f"main: {found.main or f'not detected ({default_main} applies)'}")
    output.line("Check what deploy will use with: tako config")
    output.bullet(f"production route: {app_route}")
    output.line("Next: tako servers add, then tako deploy")


def _check_overwrite(path: Path, force: bool, interactive: bool) -> None:
    if force or not path.exists():
        return
    if not interactive:
        raise TakoError(f"{path} already exists", hint="pass --force to overwrite it")
    if not typer.confirm(f"{path} already exists. Overwrite it?", default=False):
        raise TakoError(f"{path} already exists; left unchanged")


def _ask_name(name: str | None, target: Path, interactive: bool) -> str:
    if name is not None:
        return validate_app_name(name)
    try:
        default: str | None = sanitize_app_name(target.name)
    except ValidationError as exc:
        if not interactive:
            raise ValidationError(exc.message, hint="pass --name") from exc
        default = None
    return validate_app_name(_ask(interactive, "App name", default))


def _ask(interactive: bool, question: str, default: str | None) -> str:
    if not interactive:
        if default is None:
            raise ValidationError(f"{question.lower()} is required")
        return default
    return str(typer.prompt(question, default=default)).strip()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tako.toml.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
