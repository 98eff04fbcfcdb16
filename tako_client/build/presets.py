"""Built-in build presets: runtime defaults for ``main``, local install and build commands.

Presets are TOML files shipped in ``tako_client/presets/`` (package data); nothing is ever
fetched from the network. Rules:

- ``load_preset(runtime, name)``: no name = the runtime's base preset; a name must be a
  built-in whose runtime matches; namespaced aliases (``js/tanstack-start``) and
  ``github:`` references are rejected; an unknown name lists the built-in ones;
- install: ``install_locked`` when one of ``lockfiles`` exists in the directory, else
  ``install``; build ``run`` only when ``run_when_script`` is absent or names a script in
  ``package.json`` ``scripts`` / ``deno.json(c)`` ``tasks``;
- main resolution: tako.toml ``main``, else the first existing of ``main_candidates``,
  else the preset ``main``;
- ``content_hash`` (sha256 of the preset file) is part of the artifact cache key.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tako_client.build.plan import BuildError

BUILTIN_PRESETS = ("bun", "deno", "go", "node", "python")
_TOP_KEYS = {
    "name",
    "runtime",
    "main",
    "main_candidates",
    "install",
    "start",
    "target_specific",
    "build",
}
_BUILD_KEYS = {"install", "install_locked", "lockfiles", "run", "run_when_script", "exclude"}


@dataclass(frozen=True)
class Preset:
    """A parsed preset; ``install``/``start`` are runtime (server) overrides, rarely set."""

    name: str
    runtime: str
    main: str | None
    content_hash: str
    main_candidates: tuple[str, ...] = ()
    install: str | None = None
    start: tuple[str, ...] | None = None
    target_specific: bool = False
    build_install: str | None = None
    build_install_locked: str | None = None
    lockfiles: tuple[str, ...] = ()
    build_run: str | None = None
    run_when_script: str | None = None
    exclude: tuple[str, ...] = ()

    def install_command(self, directory: Path) -> str | None:
        """The local install command for ``directory`` (lockfile-aware)."""
        if self.build_install_locked and any((directory / f).is_file() for f in self.lockfiles):
            return self.build_install_locked
        return self.build_install

    def build_command(self, directory: Path) -> str | None:
        """The local build command, or None when its script/task is not defined."""
        if self.build_run is None:
            return None
        if self.run_when_script is None or self.run_when_script in project_scripts(directory):
            return self.build_run
        return None

    def resolve_main(self, app_dir: Path, configured: str | None) -> str:
        """tako.toml ``main``, else the first existing candidate, else the preset ``main``."""
        if configured:
            return configured
        for candidate in self.main_candidates:
            if (app_dir / candidate).is_file():
                return candidate
        if self.main:
            return self.main
        raise BuildError(
            f"no entrypoint: preset {self.name!r} has no main and tako.toml sets none",
            hint='set `main = "..."` in tako.toml',
        )


def split_runtime(value: str) -> tuple[str, str | None]:
    """``"bun@1.2.3"`` -> ``("bun", "1.2.3")``; ``"node"`` -> ``("node", None)``."""
    name, sep, version = value.partition("@")
    if not name or (sep and not version):
        raise BuildError(f"invalid runtime {value!r}: use <runtime> or <runtime>@<version>")
    return name, version or None


def load_preset(runtime: str, name: str | None = None) -> Preset:
    """The built-in preset ``name`` (default: the runtime's base preset)."""
    wanted = name or runtime
    if wanted.startswith("github:"):
        raise BuildError(
            f"preset {wanted!r}: github: references are not supported",
            hint=f"use a built-in preset: {', '.join(BUILTIN_PRESETS)}",
        )
    if "/" in wanted:
        raise BuildError(
            f"preset {wanted!r}: namespaced aliases are not supported; use a runtime-local name",
            hint=f"built-in presets: {', '.join(BUILTIN_PRESETS)}",
        )
    if wanted not in BUILTIN_PRESETS:
        raise BuildError(
            f"unknown preset {wanted!r}", hint=f"built-in presets: {', '.join(BUILTIN_PRESETS)}"
        )
    data = resources.files("tako_client").joinpath("presets", f"{wanted}.toml").read_bytes()
    preset = parse_preset(data, source=f"{wanted}.toml")
    if preset.runtime != runtime:
        raise BuildError(
            f"preset {wanted!r} is for runtime {preset.runtime!r}, not {runtime!r}",
            hint=f"set runtime = {preset.runtime!r}; presets: {', '.join(BUILTIN_PRESETS)}",
        )
    return preset


def parse_preset(data: bytes, *, source: str) -> Preset:
    """Parse and validate preset TOML bytes; unknown keys are errors."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"invalid preset {source}: {exc}") from exc
    _reject_unknown(doc, _TOP_KEYS, source, "")
    build = doc.get("build", {})
    _reject_unknown(build, _BUILD_KEYS, source, "build.")
    start = doc.get("start")
    return Preset(
        name=_str(doc, "name", source, required=True) or "",
        runtime=_str(doc, "runtime", source, required=True) or "",
        main=_str(doc, "main", source),
        content_hash=hashlib.sha256(data).hexdigest(),
        main_candidates=tuple(doc.get("main_candidates", ())),
        install=_str(doc, "install", source),
        start=tuple(start) if start is not None else None,
        target_specific=bool(doc.get("target_specific", False)),
        build_install=_str(build, "install", source),
        build_install_locked=_str(build, "install_locked", source),
        lockfiles=tuple(build.get("lockfiles", ())),
        build_run=_str(build, "run", source),
        run_when_script=_str(build, "run_when_script", source),
        exclude=tuple(build.get("exclude", ())),
    )


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
