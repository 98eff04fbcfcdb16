"""Run a build in a fresh workspace and pack the target artifact.

Rules:

- the workspace ``.tako/build/work-{version}`` is removed and re-extracted from the source
  archive first, so a build only ever sees the bundled source;
- commands: ``[[build_stages]]`` when given (each ``install`` then ``run`` in its ``cwd``,
  which may use ``..`` but must stay inside the workspace); else ``[build]`` where a missing
  ``install``/``run`` falls back to the preset's; else the preset's install and build
  (tako.toml 001: stages > [build] > runtime default); preset commands use the app's
  package manager (lockfile-frozen install where its lockfile exists);
- each command runs as ``sh -lc`` with the caller's PATH kept ahead of the login profile's;
  output lines stream to a callback; a failure is a :class:`BuildError` naming the stage,
  command, exit code, with the last output lines as hint;
- after the commands: the preset's ``expects`` files must exist, its ``support`` files are
  copied into the app directory, the preset's then tako.toml's ``assets`` directories merge
  into the app's ``public/`` in order, the artifact file list is filtered (forced
  ``.git``/``.tako``/``.env*`` excludes; ``include`` relative to ``pattern_root``, else the
  preset's ``include`` relative to the app dir; preset excludes relative to the app dir,
  ``exclude`` relative to ``pattern_root``, stage excludes relative to the stage cwd),
  ``main`` (a file, or the module file of a Python ``module:app``) must exist and survive
  the filter;
- the artifact keeps the source-root layout; the app lives at ``app_subdir`` inside it.
"""

from __future__ import annotations

import collections
import os
import posixpath
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pathspec

from tako_client.build.bundle import extract_tar_zst
from tako_client.build.plan import BuildError, BuildPlan, Stage, Target, escapes
from tako_client.build.presets import Preset, support_dir
from tako_client.build.sources import check_symlink
from tako_common.entry import is_module_spec, module_files

OutputCallback = Callable[[str], None]
TAIL_LINES = 20
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_SHELL_PROLOGUE = 'PATH="${TAKO_CALLER_PATH:-$PATH}:$PATH"; export PATH; eval "$1"'


@dataclass(frozen=True)
class StageRun:
    """A resolved step: commands and cwd relative to the workspace root."""

    name: str
    cwd: str
    install: str | None
    run: str | None
    exclude: tuple[str, ...] = ()


def plan_stage_runs(
    plan: BuildPlan,
    preset: Preset,
    workspace: Path,
    app_subdir: str,
    manager: str | None = None,
) -> list[StageRun]:
    """The commands to run, in order, with their workspace-relative cwd."""
    if plan.stages:
        return [_stage_run(stage, app_subdir, None, workspace) for stage in plan.stages]
    build = plan.build or Stage(name="build")
    return [_stage_run(build, app_subdir, preset, workspace, manager)]


def _stage_run(
    stage: Stage,
    app_subdir: str,
    preset: Preset | None,
    workspace: Path,
    manager: str | None = None,
) -> StageRun:
    cwd = posixpath.normpath(posixpath.join(app_subdir, stage.cwd))
    if escapes(cwd):
        raise BuildError(
            f"build stage {stage.name!r}: cwd {stage.cwd!r} escapes the source workspace"
        )
    directory = workspace / cwd
    if not directory.is_dir():
        raise BuildError(
            f"build stage {stage.name!r}: working directory {cwd!r} does not exist",
            hint="cwd is relative to the app directory",
        )
    install, run = stage.install, stage.run
    if preset is not None:
        install = install or preset.install_command(directory, manager)
        run = run or preset.build_command(directory, manager)
    return StageRun(name=stage.name, cwd=cwd, install=install, run=run, exclude=stage.exclude)


def prepare_workspace(source_archive: Path, workspace: Path) -> None:
    """Remove ``workspace`` and extract the source archive into it."""
    if workspace.exists() or workspace.is_symlink():
        shutil.rmtree(workspace)
    extract_tar_zst(source_archive, workspace)


def build_env(preset: Preset, target: Target | None, version: str) -> dict[str, str]:
    """Environment for build commands: the caller's (minus Tako's own credentials: build
    scripts and package hooks never see SSH keys or secrets keys), plus target facts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAKO_SSH_KEY", "TAKO_KEY_"))}
    env["TAKO_CALLER_PATH"] = env.get("PATH", "")
    env["TAKO_BUILD"] = version
    if target is not None:
        env["TAKO_TARGET"] = target.label
        if preset.target_specific and preset.runtime == "go":
            env.update(GOOS="linux", GOARCH=_GOARCH[target.arch], CGO_ENABLED="0")
    return env


def run_stages(
    runs: Iterable[StageRun], workspace: Path, env: dict[str, str], on_output: OutputCallback
) -> None:
    """Run every stage's install then run command; stop at the first failure."""
    for stage in runs:
        for command in (stage.install, stage.run):
            if command:
                run_command(stage.name, command, workspace / stage.cwd, env, on_output)


def run_command(
    stage: str, command: str, cwd: Path, env: dict[str, str], on_output: OutputCallback
) -> None:
    """Run one shell command, streaming merged stdout/stderr lines to ``on_output``."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    on_output(f"$ {command}")
    with subprocess.Popen(
        ["sh", "-lc", _SHELL_PROLOGUE, "tako-build", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            tail.append(text)
            on_output(text)
        code = proc.wait()
    if code != 0:
        raise BuildError(
            f"build stage {stage!r} failed: `{command}` exited with code {code}",
            hint="last output:\n" + "\n".join(tail) if tail else "the command printed nothing",
        )


def check_expected(app_dir: Path, preset: Preset) -> None:
    """Every file the preset's build must produce exists in the built app directory."""
    for rel in preset.expects:
        if not (app_dir / rel).is_file():
            raise BuildError(
                f"preset {preset.name!r}: the build did not produce {rel}",
                hint=preset.expects_hint or "check the build output",
            )


def add_support_files(app_dir: Path, preset: Preset) -> None:
    """Copy the preset's support files (shipped with tako) into the built app directory."""
    for name in preset.support:
        shutil.copyfile(support_dir() / name, app_dir / name)
        (app_dir / name).chmod(0o644)


def merge_assets(app_dir: Path, assets: Iterable[str], *, owner: str = "tako.toml") -> None:
    """Copy each asset directory's content into ``app_dir/public`` (later entries win)."""
    public = app_dir / "public"
    for asset in assets:
        source = app_dir / asset
        if not source.is_dir():
            raise BuildError(
                f"asset directory {asset!r} (from {owner}) does not exist after the build",
                hint="assets are relative to the app directory",
            )
        if source.resolve() == public.resolve():
            continue
        shutil.copytree(source, public, symlinks=True, dirs_exist_ok=True)


def list_tree(root: Path) -> list[str]:
    """Every file and symlink under ``root`` (links not followed), sorted relative paths."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            found.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    return sorted(found)


def is_artifact_forced_excluded(relpath: str) -> bool:
    return any(part in (".git", ".tako") or part.startswith(".env") for part in relpath.split("/"))


@dataclass(frozen=True)
class PatternSet:
    """Gitignore-style patterns relative to ``base`` (workspace-relative)."""

    base: str
    spec: pathspec.GitIgnoreSpec

    @classmethod
    def of(cls, base: str, patterns: Iterable[str]) -> PatternSet | None:
        lines = list(patterns)
        return cls(base, pathspec.GitIgnoreSpec.from_lines(lines)) if lines else None

    def matches(self, relpath: str) -> bool:
        if self.base != ".":
            if not relpath.startswith(self.base + "/"):
                return False
            relpath = relpath[len(self.base) + 1 :]
        return self.spec.match_file(relpath)

    def covers(self, relpath: str) -> bool:
        return self.base == "." or relpath.startswith(self.base + "/")


def select_artifact_files(
    files: Iterable[str], include: PatternSet | None, excludes: Iterable[PatternSet | None]
) -> list[str]:
    """Apply forced excludes, then include (files outside its base dropped), then excludes."""
    active = [e for e in excludes if e is not None]
    kept = []
    for rel in files:
        if is_artifact_forced_excluded(rel):
            continue
        if include is not None and not (include.covers(rel) and include.matches(rel)):
            continue
        if any(e.matches(rel) for e in active):
            continue
        kept.append(rel)
    return kept


def artifact_files(
    workspace: Path, plan: BuildPlan, preset: Preset, runs: list[StageRun], app_subdir: str
) -> list[str]:
    """The filtered artifact file list of a built workspace (symlinks checked)."""
    pattern_base = posixpath.normpath(posixpath.join(app_subdir, plan.pattern_root))
    if plan.include:
        include = PatternSet.of(pattern_base, plan.include)
    else:
        include = PatternSet.of(app_subdir, preset.include)
    excludes = [
        PatternSet.of(app_subdir, preset.exclude),
        PatternSet.of(pattern_base, plan.exclude),
    ]
    excludes += [PatternSet.of(run.cwd, run.exclude) for run in runs]
    kept = select_artifact_files(list_tree(workspace), include, excludes)
    for rel in kept:
        check_symlink(workspace, rel)
    return kept


def check_main(workspace: Path, app_subdir: str, main: str, kept: Iterable[str]) -> None:
    """``main`` (or its module file) must exist in the built app directory and be part of
    the artifact."""
    if is_module_spec(main):
        files = [posixpath.join(app_subdir, f) for f in module_files(main)]
        found = [posixpath.normpath(f) for f in files if (workspace / f).is_file()]
        if not found:
            raise BuildError(
                f"main {main!r}: module file {' or '.join(module_files(main))} does not exist "
                "in the built app directory",
                hint="set `main` in tako.toml to package.module:app of a module the app has",
            )
        rel = found[0]
    else:
        rel = posixpath.normpath(posixpath.join(app_subdir, main))
    if not (workspace / rel).exists():
        raise BuildError(
            f"main {main!r} does not exist in the built app directory ({rel} in the workspace)",
            hint="set `main` in tako.toml or make the build produce that file",
        )
    kept_set = set(kept)
    if rel not in kept_set and not any(k.startswith(rel + "/") for k in kept_set):
        raise BuildError(
            f"main {main!r} is excluded from the artifact by include/exclude patterns",
            hint="add it to [build].include or remove the exclude that matches it",
        )
