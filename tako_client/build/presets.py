"""Built-in build presets: runtime base presets and framework presets, as data files.

Presets are TOML files shipped in ``tako_client/presets/`` (package data; helper files
they ship into artifacts live in ``presets/support/``); nothing is ever fetched. Rules:

- a *base* preset names one ``runtime`` (bun, deno, go, node, python); a *framework*
  preset names the ``runtimes`` it works with (vite, nextjs, tanstack-start, astro, remix,
  react-router for JS; django, fastapi, flask for Python);
- ``load_preset(runtime, name)``: no name (or the runtime's own name) = the base preset;
  a framework name is laid over the runtime's base preset: its fields replace the base's,
  its ``[build].exclude`` is appended to the base's (base first, deduplicated); a
  framework preset whose ``runtimes`` lack ``runtime`` is refused; namespaced aliases
  (``js/tanstack-start``) and ``github:`` references are refused (deploy 000); an unknown
  name lists the built-in presets;
- build commands may use ``{install}`` (the package manager's install, lockfile-frozen;
  bun and node default to their own manager; Deno without one runs ``deno install`` when
  there is a package.json, else nothing), ``{run}``
  (``<manager> run``, or ``deno task`` for Deno without a manager) and ``{support}``
  (the quoted path of ``presets/support``); a ``[build].run`` with ``run_when_script``
  runs only when ``package.json`` ``scripts`` / ``deno.json(c)`` ``tasks`` define that
  script;
- ``support`` files are copied into the built app directory, ``expects`` files must exist
  after the build (``expects_hint`` says how to get them), ``assets`` are merged into
  ``public/``, ``include`` limits the artifact when tako.toml sets no include;
- ``content_hash`` (sha256 of the preset files and support files) is part of the
  artifact cache key.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from tako_client.build.plan import BuildError
from tako_common import package_managers as pm

BASE_PRESETS = ("bun", "deno", "go", "node", "python")
FRAMEWORK_PRESETS = (
    "vite",
    "nextjs",
    "tanstack-start",
    "astro",
    "remix",
    "react-router",
    "django",
    "fastapi",
    "flask",
)
BUILTIN_PRESETS = BASE_PRESETS + FRAMEWORK_PRESETS
INTERFACES = ("asgi", "wsgi")
_LIST_KEYS = ("main_candidates", "start", "dev", "support", "expects", "assets", "runtimes")
_TOP_KEYS = {
    "name",
    "runtime",
    "main",
    "install",
    "target_specific",
    "interface",
    "expects_hint",
    "build",
    *_LIST_KEYS,
}
_BUILD_KEYS = {"install", "run", "run_when_script", "include", "exclude"}


@dataclass(frozen=True)
class Preset:
    """A parsed (and, for frameworks, merged) preset; see the module rules."""

    name: str
    runtime: str
    main: str | None
    content_hash: str
    runtimes: tuple[str, ...] = ()
    main_candidates: tuple[str, ...] = ()
    install: str | None = None
    start: tuple[str, ...] | None = None
    dev: tuple[str, ...] | None = None
    target_specific: bool = False
    interface: str | None = None
    support: tuple[str, ...] = ()
    expects: tuple[str, ...] = ()
    expects_hint: str | None = None
    assets: tuple[str, ...] = ()
    build_install: str | None = None
    build_run: str | None = None
    run_when_script: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    base: str | None = field(default=None)

    @property
    def is_framework(self) -> bool:
        return self.base is not None

    def install_command(self, directory: Path, manager: str | None = None) -> str | None:
        """The local install command for ``directory`` (lockfile-aware)."""
        return _expand(self.build_install, directory, manager, self.runtime)

    def build_command(self, directory: Path, manager: str | None = None) -> str | None:
        """The local build command, or None when its script/task is not defined."""
        if self.run_when_script is not None and self.run_when_script not in project_scripts(
            directory
        ):
            return None
        return _expand(self.build_run, directory, manager, self.runtime)


def support_dir() -> Path:
    """Where the support files of presets live on this machine."""
    return Path(str(resources.files("tako_client").joinpath("presets", "support")))


def _expand(command: str | None, directory: Path, manager: str | None, runtime: str) -> str | None:
    if not command:
        return None
    manager = manager or pm.RUNTIME_DEFAULTS.get(runtime)
    if "{install}" in command:
        files = pm.ProjectFiles.read(directory)
        if manager is not None:
            install = " ".join(pm.install_argv(manager, files, production=False))
        elif runtime == "deno" and files.has_package_json:
            install = "deno install"  # Deno 2 installs package.json dependencies itself
        elif command.strip() == "{install}":
            return None
        else:
            raise BuildError(f"preset command {command!r} needs a package manager")
        command = command.replace("{install}", install)
    if "{run}" in command:
        runner = f"{manager} run" if manager else ("deno task" if runtime == "deno" else None)
        if runner is None:
            raise BuildError(f"preset command {command!r} needs a package manager")
        command = command.replace("{run}", runner)
    return command.replace("{support}", shlex.quote(str(support_dir())))


def split_runtime(value: str) -> tuple[str, str | None]:
    """``"bun@1.2.3"`` -> ``("bun", "1.2.3")``; ``"node"`` -> ``("node", None)``."""
    name, sep, version = value.partition("@")
    if not name or (sep and not version):
        raise BuildError(f"invalid runtime {value!r}: use <runtime> or <runtime>@<version>")
    return name, version or None


def preset_runtimes(name: str) -> tuple[str, ...]:
    """The runtimes a built-in preset works with (checks the name like :func:`load_preset`)."""
    _check_name(name)
    if name in BASE_PRESETS:
        return (name,)
    return _read(name).runtimes


def load_preset(runtime: str, name: str | None = None) -> Preset:
    """The built-in preset ``name`` for ``runtime`` (default: the runtime's base preset)."""
    if runtime not in BASE_PRESETS:
        raise BuildError(
            f"unknown runtime {runtime!r}", hint=f"use one of {', '.join(BASE_PRESETS)}"
        )
    wanted = name or runtime
    _check_name(wanted)
    if wanted in BASE_PRESETS:
        if wanted != runtime:
            raise BuildError(
                f"preset {wanted!r} is for runtime {wanted!r}, not {runtime!r}",
                hint=f"set runtime = {wanted!r}, or use a preset of {runtime}: "
                + ", ".join(presets_for(runtime)),
            )
        return _read(wanted)
    framework = _read(wanted)
    if runtime not in framework.runtimes:
        raise BuildError(
            f"preset {wanted!r} is for runtime {' or '.join(map(repr, framework.runtimes))}, "
            f"not {runtime!r}",
            hint=f"set runtime = {framework.runtimes[0]!r}, or use a preset of {runtime}: "
            + ", ".join(presets_for(runtime)),
        )
    return _merge(_read(runtime), framework)


def presets_for(runtime: str) -> list[str]:
    """Names of the built-in presets usable with ``runtime`` (its base preset first)."""
    names = [runtime] if runtime in BASE_PRESETS else []
    return names + [n for n in FRAMEWORK_PRESETS if runtime in _read(n).runtimes]


def _known_hint() -> str:
    return (
        f"built-in presets: {', '.join(FRAMEWORK_PRESETS)} "
        f"(runtime base presets: {', '.join(BASE_PRESETS)})"
    )


def _check_name(wanted: str) -> None:
    if wanted.startswith("github:"):
        raise BuildError(
            f"preset {wanted!r}: github: references are not supported", hint=_known_hint()
        )
    if "/" in wanted:
        raise BuildError(
            f"preset {wanted!r}: namespaced aliases are not supported; use a runtime-local name",
            hint=_known_hint(),
        )
    if wanted not in BUILTIN_PRESETS:
        raise BuildError(f"unknown preset {wanted!r}", hint=_known_hint())


def _read(name: str) -> Preset:
    data = resources.files("tako_client").joinpath("presets", f"{name}.toml").read_bytes()
    return parse_preset(data, source=f"{name}.toml")


def _merge(base: Preset, framework: Preset) -> Preset:
    """``framework`` laid over ``base`` (see the module rules)."""
    digest = hashlib.sha256((base.content_hash + framework.content_hash).encode()).hexdigest()
    build_run = framework.build_run or base.build_run
    return replace(
        framework,
        runtime=base.runtime,
        content_hash=digest,
        # a framework that names its own entry (main or candidates) never falls back to
        # the base preset's (django without a wsgi.py must not run app.py)
        main=framework.main if framework.main or framework.main_candidates else base.main,
        main_candidates=framework.main_candidates
        or (() if framework.main else base.main_candidates),
        install=framework.install or base.install,
        start=framework.start or base.start,
        dev=framework.dev or base.dev,
        target_specific=base.target_specific,
        build_install=framework.build_install or base.build_install,
        build_run=build_run,
        run_when_script=(
            framework.run_when_script if framework.build_run else base.run_when_script
        ),
        exclude=tuple(dict.fromkeys(base.exclude + framework.exclude)),
        base=base.name,
    )


def parse_preset(data: bytes, *, source: str) -> Preset:
    """Parse and validate preset TOML bytes; unknown keys are errors."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"invalid preset {source}: {exc}") from exc
    _reject_unknown(doc, _TOP_KEYS, source, "")
    build = doc.get("build", {})
    _reject_unknown(build, _BUILD_KEYS, source, "build.")
    lists = {key: _strs(doc, key, source) for key in _LIST_KEYS}
    runtime = _str(doc, "runtime", source)
    if (runtime is None) == (lists["runtimes"] is None):
        raise BuildError(f"invalid preset {source}: set either runtime or runtimes")
    interface = _str(doc, "interface", source)
    if interface is not None and interface not in INTERFACES:
        raise BuildError(f"invalid preset {source}: interface must be asgi or wsgi")
    support = lists["support"] or ()
    return Preset(
        name=_str(doc, "name", source, required=True) or "",
        runtime=runtime or "",
        main=_str(doc, "main", source),
        content_hash=_content_hash(data, support),
        runtimes=lists["runtimes"] or (),
        main_candidates=lists["main_candidates"] or (),
        install=_str(doc, "install", source),
        start=lists["start"],
        dev=lists["dev"],
        target_specific=bool(doc.get("target_specific", False)),
        interface=interface,
        support=support,
        expects=lists["expects"] or (),
        expects_hint=_str(doc, "expects_hint", source),
        assets=lists["assets"] or (),
        build_install=_str(build, "install", source),
        build_run=_str(build, "run", source),
        run_when_script=_str(build, "run_when_script", source),
        include=_strs(build, "include", source) or (),
        exclude=_strs(build, "exclude", source) or (),
    )


def _content_hash(data: bytes, support: tuple[str, ...]) -> str:
    digest = hashlib.sha256(data)
    for name in support:
        path = support_dir() / name
        try:
            digest.update(name.encode() + b"\0" + path.read_bytes())
        except OSError as exc:
            raise BuildError(f"preset support file {name!r} is missing: {exc}") from exc
    return digest.hexdigest()


def project_scripts(directory: Path) -> set[str]:
    """Script names from ``package.json`` ``scripts`` and ``deno.json(c)`` ``tasks``."""
    names: set[str] = set()
    for filename, key in (
        ("package.json", "scripts"),
        ("deno.json", "tasks"),
        ("deno.jsonc", "tasks"),
    ):
        path = directory / filename
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            if filename == "deno.jsonc":
                continue  # JSON with comments: not parsed, no tasks assumed
            raise BuildError(f"cannot parse {path}: {exc}") from exc
        section = doc.get(key) if isinstance(doc, dict) else None
        if isinstance(section, dict):
            names.update(str(k) for k in section)
    return names


def _reject_unknown(doc: dict[str, Any], allowed: set[str], source: str, prefix: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise BuildError(
            f"invalid preset {source}: unknown key(s) {', '.join(prefix + k for k in unknown)}"
        )


def _str(doc: dict[str, Any], key: str, source: str, *, required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BuildError(f"invalid preset {source}: {key} must be a non-empty string")
    return value


def _strs(doc: dict[str, Any], key: str, source: str) -> tuple[str, ...] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise BuildError(f"invalid preset {source}: {key} must be a non-empty array of strings")
    return tuple(value)
