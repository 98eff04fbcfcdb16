"""JS package managers: which one an app uses and the commands that install and run with it.

Rules (tako.toml 001 ``package_manager``; 000 "lockfile-frozen where a lockfile exists"):

- the managers are ``bun``, ``npm``, ``pnpm`` and ``yarn``; their lockfiles, checked in this
  order: ``bun.lock``/``bun.lockb`` -> bun, ``pnpm-lock.yaml`` -> pnpm, ``yarn.lock`` ->
  yarn, ``package-lock.json``/``npm-shrinkwrap.json`` -> npm;
- detection (tako.toml sets none): the first lockfile found, else package.json
  ``packageManager`` (``"pnpm@9.1.0"``), else the runtime's own (bun -> bun, node -> npm;
  deno has none: it fetches modules itself);
- install on the build machine: the frozen form with the manager's lockfile (``npm ci``,
  ``pnpm install --frozen-lockfile``, ``yarn install --frozen-lockfile`` or ``--immutable``
  for Yarn 2+, ``bun install --frozen-lockfile``), else a plain install;
- install on the server: production dependencies only (``npm ci --omit=dev``,
  ``pnpm install --prod``, ``yarn install --production``, ``bun install --production``;
  frozen with the lockfile), and only when package.json declares ``dependencies`` or
  ``optionalDependencies`` (a build output without them needs nothing). Yarn 2+ has no
  production-only install: it installs everything (``--immutable``);
- a package.json script runs as ``<manager> run <script>``.

Pure apart from :meth:`ProjectFiles.read`, which looks at the marker files of a directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANAGERS = ("bun", "npm", "pnpm", "yarn")
LOCKFILES: tuple[tuple[str, str], ...] = (
    ("bun.lock", "bun"),
    ("bun.lockb", "bun"),
    ("pnpm-lock.yaml", "pnpm"),
    ("yarn.lock", "yarn"),
    ("package-lock.json", "npm"),
    ("npm-shrinkwrap.json", "npm"),
)
RUNTIME_DEFAULTS = {"bun": "bun", "node": "npm"}
_MARKERS = tuple(name for name, _ in LOCKFILES) + (".yarnrc.yml",)
_NPM_QUIET = ("--no-audit", "--no-fund")


@dataclass(frozen=True)
class ProjectFiles:
    """What a JS project directory holds: which marker files exist, and its package.json."""

    present: frozenset[str] = frozenset()
    package_json: dict[str, Any] | None = None
    package_json_invalid: bool = False

    @classmethod
    def read(cls, directory: Path) -> ProjectFiles:
        present = frozenset(name for name in _MARKERS if (directory / name).is_file())
        try:
            doc = json.loads((directory / "package.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(present)
        except (OSError, ValueError):
            return cls(present, None, package_json_invalid=True)
        return cls(present, doc if isinstance(doc, dict) else None, not isinstance(doc, dict))

    @property
    def has_package_json(self) -> bool:
        return self.package_json is not None or self.package_json_invalid

    def lockfile(self, manager: str) -> str | None:
        """The first lockfile of ``manager`` that exists."""
        return next((n for n, m in LOCKFILES if m == manager and n in self.present), None)

    def declared_manager(self) -> str | None:
        """package.json ``packageManager`` (``"pnpm@9.1.0"`` -> ``"pnpm"``), if a known one."""
        value = (self.package_json or {}).get("packageManager")
        name = value.split("@", 1)[0] if isinstance(value, str) else None
        return name if name in MANAGERS else None

    def is_yarn_berry(self) -> bool:
        """Yarn 2 or later: a ``.yarnrc.yml``, or ``packageManager`` naming yarn@2+."""
        if ".yarnrc.yml" in self.present:
            return True
        value = (self.package_json or {}).get("packageManager")
        if isinstance(value, str) and value.startswith("yarn@"):
            major = value[len("yarn@") :].split(".", 1)[0]
            return major.isdigit() and int(major) >= 2
        return False

    def declares_dependencies(self) -> bool:
        """True when package.json lists runtime dependencies (an unreadable one counts:
        the package manager then reports what is wrong with it)."""
        if self.package_json_invalid:
            return True
        doc = self.package_json or {}
        return any(doc.get(key) for key in ("dependencies", "optionalDependencies"))


@dataclass(frozen=True)
class Detected:
    """The package manager of an app and where that answer came from."""

    name: str | None
    source: str = field(default="")


def detect(files: ProjectFiles, runtime: str) -> Detected:
    """The manager the project's files name, else the runtime's default (see module rules)."""
    for lockfile, manager in LOCKFILES:
        if lockfile in files.present:
            return Detected(manager, lockfile)
    declared = files.declared_manager()
    if declared is not None:
        return Detected(declared, "package.json packageManager")
    default = RUNTIME_DEFAULTS.get(runtime)
    return Detected(default, f"{runtime} default" if default else "")


def install_argv(manager: str, files: ProjectFiles, *, production: bool) -> list[str]:
    """The install command of ``manager`` for a project (frozen with its lockfile)."""
    frozen = files.lockfile(manager) is not None
    if manager == "npm":
        verb = ["ci"] if frozen else ["install"]
        return ["npm", *verb, *(["--omit=dev", *_NPM_QUIET] if production else [])]
    if manager == "yarn" and files.is_yarn_berry():
        return ["yarn", "install", *(["--immutable"] if frozen else [])]
    flags = {"pnpm": "--prod", "yarn": "--production", "bun": "--production"}
    if manager not in flags:
        raise ValueError(f"unknown package manager {manager!r}: use {', '.join(MANAGERS)}")
    return [
        manager,
        "install",
        *([flags[manager]] if production else []),
        *(["--frozen-lockfile"] if frozen else []),
    ]


def server_install_argv(manager: str, files: ProjectFiles) -> list[str] | None:
    """The production install a server runs in a release, or None when nothing to install."""
    if not files.has_package_json or not files.declares_dependencies():
        return None
    return install_argv(manager, files, production=True)


def run_script(manager: str, script: str) -> str:
    """``<manager> run <script>`` (every manager spells it the same way)."""
    return f"{manager} run {script}"
