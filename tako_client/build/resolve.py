"""What a build plan resolves to in an app directory: preset, package manager, main, start.

One answer for ``tako deploy``, ``tako config`` and ``tako init``, so they never disagree.
Rules:

- preset: :func:`~tako_client.build.presets.load_preset` (unknown names, namespaced
  aliases, ``github:`` refs and runtime mismatches are errors with the same message
  everywhere);
- package manager (JS runtimes only; set for another runtime it is an error): tako.toml
  ``package_manager``, else for bun/node the project's lockfile, package.json
  ``packageManager``, then the runtime's own (:mod:`tako_common.package_managers`);
  Deno uses one only when tako.toml names it;
- main: :mod:`~tako_client.build.mains` (deploy 000 order); a module specifier is for
  Python only;
- start: tako.toml ``start``, else the preset's, else for a Python module main the
  uvicorn/gunicorn command (:mod:`~tako_client.build.pyapps`), else none (the server's
  runtime default); ``{main}`` stays for the server to expand (exact arguments only);
- dev: the preset's (``tako dev`` will use it; tako.toml ``dev`` overrides it there);
- app_root (where JS channels/workflows live, 001): tako.toml ``app_root``, else ``src``
  for JS runtimes; set for another runtime it is an error, and a set one must be a
  directory of the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tako_client.build import mains, pyapps
from tako_client.build.plan import BuildError, BuildPlan
from tako_client.build.presets import Preset, load_preset
from tako_common import package_managers as pm
from tako_common.entry import expand_main, is_module_spec

JS_RUNTIMES = mains.JS_RUNTIMES
DEFAULT_APP_ROOT = "src"


@dataclass(frozen=True)
class ResolvedApp:
    """The resolved build-time facts of an app (``start``/``dev`` keep ``{main}``)."""

    runtime: str
    preset: Preset
    package_manager: str | None
    package_manager_source: str
    main: str
    start: tuple[str, ...] | None
    dev: tuple[str, ...] | None
    app_root: str | None

    @property
    def start_argv(self) -> list[str] | None:
        """``start`` with ``{main}`` expanded (what the server will run)."""
        return expand_main(self.start, self.main) if self.start is not None else None

    @property
    def dev_argv(self) -> list[str] | None:
        return expand_main(self.dev, self.main) if self.dev is not None else None


def resolve_app(plan: BuildPlan, app_dir: Path) -> ResolvedApp:
    """Resolve ``plan`` against the files of ``app_dir`` (see the module rules)."""
    preset = load_preset(plan.runtime, plan.preset)
    manager, source = package_manager(plan.package_manager, plan.runtime, app_dir)
    names = pyapps.requirement_names(app_dir) if plan.runtime == "python" else set()
    main = mains.resolve_main(preset, app_dir, plan.main, prefer=pyapps.preferred_interface(names))
    return ResolvedApp(
        runtime=plan.runtime,
        preset=preset,
        package_manager=manager,
        package_manager_source=source,
        main=main,
        start=_start(plan, preset, main, app_dir),
        dev=preset.dev,
        app_root=app_root(plan.app_root, plan.runtime, app_dir),
    )


def package_manager(configured: str | None, runtime: str, app_dir: Path) -> tuple[str | None, str]:
    """``(manager, where the answer came from)``; ``(None, "")`` when there is none."""
    if runtime not in JS_RUNTIMES:
        if configured is not None:
            raise BuildError(
                f"package_manager {configured!r} applies to JS runtimes "
                f"({', '.join(JS_RUNTIMES)}), not {runtime!r}",
                hint="remove package_manager from tako.toml",
            )
        return None, ""
    if configured is not None:
        return configured, "tako.toml"
    if runtime == "deno":
        return None, ""
    found = pm.detect(pm.ProjectFiles.read(app_dir), runtime)
    return found.name, found.source


def app_root(configured: str | None, runtime: str, app_dir: Path) -> str | None:
    """The JS channels/workflows root (see the module rules)."""
    if runtime not in JS_RUNTIMES:
        if configured is not None:
            raise BuildError(
                f"app_root applies to JS runtimes ({', '.join(JS_RUNTIMES)}), not {runtime!r}",
                hint="remove app_root from tako.toml",
            )
        return None
    if configured is None:
        return DEFAULT_APP_ROOT
    if not (app_dir / configured).is_dir():
        raise BuildError(
            f"app_root {configured!r} is not a directory of the app ({app_dir})",
            hint='app_root is relative to tako.toml; use "." for files at the app root',
        )
    return configured


def _start(plan: BuildPlan, preset: Preset, main: str, app_dir: Path) -> tuple[str, ...] | None:
    if is_module_spec(main) and plan.runtime != "python":
        raise BuildError(
            f"main {main!r} is a Python module specifier, but the runtime is {plan.runtime!r}",
            hint='set main to the entry file, e.g. main = "index.ts"',
        )
    if plan.start is not None:
        return plan.start
    if preset.start is not None:
        return preset.start
    if is_module_spec(main):
        return pyapps.start_command(main, preset.interface, app_dir)
    return None
