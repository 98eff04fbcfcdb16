"""Which command ``tako dev`` runs, and whether that command reloads the app by itself.

Rules (tako.toml 001: ``dev`` "overrides preset and runtime defaults"; with ``container``
set, ``tako dev`` still uses the dev command and never builds the container file):

- order: ``tako dev -- CMD ARGS`` > tako.toml ``dev`` > the preset's ``dev`` > the
  runtime's default (:data:`RUNTIME_DEFAULTS`, each in the runtime's own watch mode where
  it has one: ``node --watch``, ``bun --watch``, ``deno run --watch``);
- an argument that is exactly ``{main}`` becomes the app's entry point (tako.toml
  ``main``, else the one ``tako init`` would detect, else the preset's); a command that
  needs it when there is none is refused, naming the key to set;
- no command at all (no ``dev``, and no runtime to take a default from) is refused, naming
  the keys that would give one;
- :func:`reloads_itself` says whether the command restarts the app on file changes by
  itself (a watch/reload flag, a dev server such as vite or next, a package ``dev``
  script); when it does not, ``tako dev`` restarts the app when files change.

:func:`choose_dev_command` and :func:`reloads_itself` are pure; :func:`dev_command_for`
also reads the preset file and the app directory.
"""

from __future__ import annotations

import dataclasses
import posixpath
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tako_client.build.plan import BuildError
from tako_client.build.presets import Preset, load_preset
from tako_client.detect import detect
from tako_common.config import LoadedConfig
from tako_common.errors import TakoError

MAIN = "{main}"
RUNTIME_DEFAULTS: dict[str, tuple[str, ...]] = {
    "node": ("node", "--watch", MAIN),
    "bun": ("bun", "--watch", MAIN),
    "deno": ("deno", "run", "-A", "--watch", MAIN),
    "python": ("python3", MAIN),
    "go": ("go", "run", "."),
}
_RELOAD_FLAGS = ("--watch", "--hot", "--reload", "--watch-path")
_DEV_SERVERS = frozenset({
    "nodemon", "vite", "next", "nuxt", "nuxi", "astro", "remix", "react-router",
    "svelte-kit", "wrangler", "air", "watchexec", "webpack-dev-server", "parcel", "gatsby",
    "ng", "expo", "reflex", "bacon",
})
_PACKAGE_RUNNERS = frozenset({"npm", "pnpm", "yarn", "bun", "deno"})


class NoDevCommand(TakoError):
    """No dev command can be resolved for the app (the message names the keys to set)."""

    code = "no_dev_command"


@dataclass(frozen=True)
class DevCommand:
    """The command to run, where it came from, and whether it reloads by itself."""

    argv: tuple[str, ...]
    source: str
    reloads_itself: bool
    runtime: str | None = None

    @property
    def display(self) -> str:
        return " ".join(self.argv)


def choose_dev_command(
    *,
    override: Sequence[str] | None,
    configured: Sequence[str] | None,
    preset_dev: Sequence[str] | None,
    preset_name: str | None,
    runtime: str | None,
    main: str | None,
) -> DevCommand:
    """The dev command by the order of the module rules, ``{main}`` expanded."""
    if override:
        argv, source = tuple(override), "the command line"
    elif configured:
        argv, source = tuple(configured), "tako.toml dev"
    elif preset_dev:
        argv, source = tuple(preset_dev), f"the {preset_name or runtime} preset"
    elif runtime in RUNTIME_DEFAULTS:
        argv, source = RUNTIME_DEFAULTS[runtime], f"the {runtime} default"
    else:
        raise NoDevCommand(
            "no dev command for this app: tako.toml sets no `dev`, and no runtime is "
            "known to take a default from",
            hint='set dev = ["npm", "run", "dev"] (your command) in tako.toml, or set '
            'runtime (and preset) so their default applies, e.g. runtime = "node"',
        )
    if MAIN in argv:
        if not main:
            raise NoDevCommand(
                f"the dev command from {source} ({' '.join(argv)}) needs {MAIN}, and the "
                "app has no entry point",
                hint='set main = "..." in tako.toml, or set dev to a full command',
            )
        argv = tuple(main if arg == MAIN else arg for arg in argv)
    return DevCommand(argv, source, reloads_itself(argv), runtime)


def reloads_itself(argv: Sequence[str]) -> bool:
    """Whether ``argv`` restarts or hot-reloads the app on file changes by itself."""
    if any(arg in _RELOAD_FLAGS or arg.startswith("--watch=") for arg in argv):
        return True
    names = [posixpath.basename(arg) for arg in argv]
    if any(name in _DEV_SERVERS for name in names[:3]):
        return True
    if names and names[0] in ("tsx", "ts-node-dev") and "watch" in names[1:2]:
        return True
    if names and names[0] in _PACKAGE_RUNNERS:
        script = [n for n in names[1:3] if n not in ("run", "task")]
        return bool(script) and script[0] == "dev"
    if "manage.py" in names and "runserver" in names:
        return "--noreload" not in names
    if names[:2] == ["flask", "run"] or names[1:4] == ["-m", "flask", "run"]:
        return "--debug" in names or "--reload" in names
    return False


def dev_command_for(loaded: LoadedConfig, override: Sequence[str] | None) -> DevCommand:
    """The dev command of the app ``loaded`` describes (reads its preset and directory)."""
    config = loaded.config
    runtime = config.runtime_name or detect(loaded.app_dir).runtime
    needs_preset = not override and not config.dev and runtime is not None
    preset_dev, preset_main = (None, None)
    if needs_preset:
        assert runtime is not None
        preset_dev, preset_main = preset_dev_and_main(runtime, config.preset)
    main = config.main
    if main is None and runtime is not None:
        main = detect(loaded.app_dir, runtime).main or preset_main
    return choose_dev_command(
        override=override,
        configured=config.dev,
        preset_dev=preset_dev,
        preset_name=config.preset,
        runtime=runtime,
        main=main,
    )


PresetFacts = tuple[tuple[str, ...] | None, str | None]


def preset_dev_and_main(runtime: str, name: str | None) -> PresetFacts:
    """The preset's ``dev`` command and ``main``.

    Read through :class:`~tako_client.build.presets.Preset` when it carries ``dev``; until
    then (the presets grew the key before the loader knew it) straight from the preset's
    data file, which :func:`load_preset` would refuse for the unknown key.
    """
    if "dev" in {f.name for f in dataclasses.fields(Preset)}:
        preset = load_preset(runtime, name)
        dev = getattr(preset, "dev", None)
        return (tuple(dev) if dev else None), preset.main
    return _read_preset(runtime, name or runtime)


def _read_preset(runtime: str, name: str) -> PresetFacts:
    if "/" in name or name.startswith("github:") or name in (".", ".."):
        raise BuildError(f"preset {name!r}: use a built-in preset name")
    data = resources.files("tako_client").joinpath("presets", f"{name}.toml")
    if not data.is_file():
        raise BuildError(f"unknown preset {name!r}", hint="see the built-in presets in docs")
    try:
        doc = tomllib.loads(data.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"invalid preset {name}.toml: {exc}") from exc
    if doc.get("runtime") != runtime:
        raise BuildError(
            f"preset {name!r} is for runtime {doc.get('runtime')!r}, not {runtime!r}",
            hint=f"set runtime = {doc.get('runtime')!r}",
        )
    dev = doc.get("dev")
    if dev is not None and (
        not isinstance(dev, list) or not dev or not all(isinstance(a, str) and a for a in dev)
    ):
        raise BuildError(f"invalid preset {name}.toml: dev must be a non-empty array of strings")
    main = doc.get("main")
    return (tuple(dev) if dev else None), (main if isinstance(main, str) else None)


def app_public_dir(app_dir: Path) -> Path | None:
    """``{app_dir}/public`` when it exists (the edge serves its files, as in production)."""
    public = app_dir / "public"
    return public if public.is_dir() else None
