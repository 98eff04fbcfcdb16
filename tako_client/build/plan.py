"""What to build: the plain inputs of a local build, independent of how tako.toml spells them.

The deploy command maps the loaded ``tako.toml`` onto a :class:`BuildPlan`; everything in
``tako_client.build`` takes the plan, never the config model. All paths in a plan are
relative, POSIX-style: stage ``cwd`` and ``pattern_root`` to the app directory, ``main`` and
``assets`` to the app directory. Rules checked here (pure, no I/O):

- ``[build]`` (``build``) and ``[[build_stages]]`` (``stages``) are mutually exclusive;
- a ``[build]`` cwd must stay inside the app directory; a stage cwd may use ``..`` but
  the workspace check happens in :mod:`stages` (it needs the source root);
- a target is ``linux-{arch}-{libc}`` with arch in x86_64/aarch64 and libc in glibc/musl.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from tako_common.errors import TakoError, ValidationError

ARCHES = ("x86_64", "aarch64")
LIBCS = ("glibc", "musl")
SHARED_LABEL = "shared"


class BuildError(TakoError):
    """A local build step failed, or its inputs broke a build rule."""

    code = "build"


@dataclass(frozen=True)
class Stage:
    """One build step: ``install`` then ``run``, both ``sh -lc`` commands, in ``cwd``."""

    name: str
    run: str | None = None
    install: str | None = None
    cwd: str = "."
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """A server build target, as detected by ``tako servers add`` (``uname -m``, ldd)."""

    arch: str
    libc: str

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ValidationError(
                f"invalid target arch {self.arch!r}: use one of {', '.join(ARCHES)}"
            )
        if self.libc not in LIBCS:
            raise ValidationError(
                f"invalid target libc {self.libc!r}: use one of {', '.join(LIBCS)}"
            )

    @property
    def label(self) -> str:
        return f"linux-{self.arch}-{self.libc}"


@dataclass(frozen=True)
class BuildPlan:
    """Every input of a build besides the source files themselves.

    ``install`` is the runtime-prep override sent to the server (``None`` = server default);
    ``package_manager`` and ``app_root`` are tako.toml's (``None`` = resolved from the
    project's files, see :mod:`tako_client.build.resolve`);
    ``build`` is the simple ``[build]`` step, ``stages`` the ``[[build_stages]]`` list;
    ``include``/``exclude`` are artifact globs relative to ``pattern_root`` (the ``[build]``
    cwd, default the app directory).
    """

    runtime: str
    runtime_version: str | None = None
    main: str | None = None
    start: tuple[str, ...] | None = None
    preset: str | None = None
    package_manager: str | None = None
    app_root: str | None = None
    install: str | None = None
    build: Stage | None = None
    stages: tuple[Stage, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    assets: tuple[str, ...] = ()
    pattern_root: str = "."

    def __post_init__(self) -> None:
        if self.build is not None and self.stages:
            raise BuildError(
                "[build] and [[build_stages]] are mutually exclusive",
                hint="move the [build] commands into a [[build_stages]] entry",
            )
        if self.build is not None and escapes(self.build.cwd):
            raise BuildError(
                f"[build].cwd {self.build.cwd!r} must stay inside the app directory",
                hint="use [[build_stages]] with a cwd for monorepo builds",
            )
        if escapes(self.pattern_root):
            raise BuildError(
                f"pattern root {self.pattern_root!r} must stay inside the app directory"
            )
        for asset in self.assets:
            if escapes(asset) or asset.strip("/") in ("", "."):
                raise BuildError(
                    f"asset directory {asset!r} must be a subdirectory of the app directory"
                )
        if self.main is not None and (escapes(self.main) or not self.main.strip()):
            raise BuildError(f"main {self.main!r} must be a path inside the app directory")
        if self.app_root is not None and escapes(self.app_root):
            raise BuildError(f"app_root {self.app_root!r} must stay inside the app directory")


def escapes(relpath: str) -> bool:
    """True when a relative path is absolute or climbs above its base with ``..``."""
    if relpath.startswith("/"):
        return True
    norm = posixpath.normpath(relpath)
    return norm == ".." or norm.startswith("../")


def target_label(is_target_specific: bool, target: Target | None) -> str:
    """The artifact label: ``linux-{arch}-{libc}`` for compiled runtimes, else ``shared``."""
    if not is_target_specific:
        return SHARED_LABEL
    if target is None:
        raise BuildError(
            "this runtime builds per server target, but no target (arch/libc) was given",
            hint="re-add the server with `tako servers add` so its arch and libc are detected",
        )
    return target.label
