"""The app an app-scoped command works on: config file, app dir, name, env and servers.

Rules: ``-c path/to/config`` selects that file and its parent is the app directory; else
``DIR/tako.toml`` (default the current directory). The servers of an environment come from
``[envs.<env>].servers`` (and the legacy ``[servers.<name>] env``); production with none
mapped and exactly one server in ``~/.tako/config.toml`` uses that server (the single-server
helper) and says so. Every named server must exist in the global inventory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tako_client.build.plan import BuildPlan, Stage
from tako_client.build.presets import preset_runtimes
from tako_client.detect import detect
from tako_client.global_config import GlobalConfig, ServerEntry
from tako_common.config import (
    LoadedConfig,
    TakoConfig,
    env_servers,
    load_config,
    resolve_config_path,
    resolve_env,
)
from tako_common.errors import TakoError
from tako_common.names import validate_env_name


@dataclass(frozen=True)
class AppContext:
    loaded: LoadedConfig
    env: str

    @property
    def app(self) -> str:
        return self.loaded.app_name

    @property
    def app_dir(self) -> Path:
        return self.loaded.app_dir

    @property
    def key(self) -> str:
        return f"{self.app}/{self.env}"


def app_dir_for(config: str | Path | None) -> Path:
    """The app directory named by ``-c`` (a tako.toml, or a directory holding one); the
    current directory without ``-c``. Raises when ``-c`` names no tako.toml."""
    if config is None:
        return Path.cwd()
    return resolve_config_path(str(config), Path.cwd()).parent


def load_app(config: str | None, directory: Path | None, env: str) -> AppContext:
    """Load and validate the app's tako.toml for ``env`` (which must be declared)."""
    validate_env_name(env)
    base = (directory or Path.cwd()).resolve()
    loaded = load_config(resolve_config_path(config, base))
    resolve_env(loaded, env)
    return AppContext(loaded, env)


def detect_runtime(app_dir: Path) -> str:
    """The runtime ``tako init`` would pick for ``app_dir`` (same markers, same order)."""
    runtime = detect(app_dir).runtime
    if runtime:
        return runtime
    raise TakoError(
        f"cannot tell the runtime of {app_dir}: no package.json, deno.json, go.mod, "
        "pyproject.toml or requirements.txt, and no usual entry file (app.py, main.go, "
        "main.ts, index.ts, index.js, ...)",
        hint='set runtime in tako.toml, e.g. runtime = "python"',
    )


def pick_runtime(configured: str | None, preset: str | None, app_dir: Path) -> str:
    """tako.toml ``runtime``; else, with a preset, the detected runtime when the preset works
    with it, else the preset's first runtime; else the detected runtime."""
    if configured:
        return configured
    if preset is None:
        return detect_runtime(app_dir)
    runtimes = preset_runtimes(preset)
    found = detect(app_dir).runtime
    return found if found in runtimes else runtimes[0]


def build_plan(ctx: AppContext) -> BuildPlan:
    """Map tako.toml onto the plain inputs of a local build."""
    return plan_of(ctx.loaded.config, ctx.app_dir)


def plan_of(cfg: TakoConfig, app_dir: Path) -> BuildPlan:
    """The build plan of a validated tako.toml whose app lives in ``app_dir``."""
    runtime = pick_runtime(cfg.runtime_name, cfg.preset, app_dir)
    build = None
    if cfg.build is not None and (cfg.build.run or cfg.build.install):
        build = Stage(
            name="build", run=cfg.build.run, install=cfg.build.install, cwd=cfg.build.cwd or "."
        )
    stages = tuple(
        Stage(
            name=s.name or f"stage {i + 1}",
            run=s.run,
            install=s.install,
            cwd=s.cwd or ".",
            exclude=tuple(s.exclude or ()),
        )
        for i, s in enumerate(cfg.build_stages or ())
    )
    return BuildPlan(
        runtime=runtime,
        runtime_version=cfg.runtime_version,
        main=cfg.main,
        start=tuple(cfg.start) if cfg.start else None,
        preset=cfg.preset,
        package_manager=cfg.package_manager,
        app_root=cfg.app_root,
        build=build,
        stages=stages,
        include=tuple(cfg.build.include or ()) if cfg.build else (),
        exclude=tuple(cfg.build.exclude or ()) if cfg.build else (),
        assets=tuple(cfg.assets or ()),
        pattern_root=(cfg.build.cwd or ".") if cfg.build else ".",
    )


@dataclass(frozen=True)
class ServerSelection:
    servers: list[ServerEntry]
    note: str | None = None


def select_servers(ctx: AppContext, inventory: GlobalConfig) -> ServerSelection:
    """The inventory entries of the environment's servers (single-server helper included)."""
    names = env_servers(ctx.loaded, ctx.env)
    if not names:
        if ctx.env == "production" and len(inventory.servers) == 1:
            only = inventory.servers[0]
            note = (
                f"no servers mapped to production; using the only server '{only.name}' "
                f'(add servers = ["{only.name}"] to [envs.production] to make it explicit)'
            )
            return ServerSelection([only], note)
        raise TakoError(
            f"no servers are mapped to environment '{ctx.env}'",
            hint=f'set servers = ["name"] in [envs.{ctx.env}] (see `tako servers ls`)',
        )
    missing = [n for n in names if inventory.get(n) is None]
    if missing:
        raise TakoError(
            f"server(s) {', '.join(missing)} of environment '{ctx.env}' are not in "
            "~/.tako/config.toml",
            hint="add them with `tako servers add HOST --name NAME`",
        )
    return ServerSelection([e for n in names if (e := inventory.get(n)) is not None])


def servers_of(ctx: AppContext, only: str | None = None) -> list[ServerEntry]:
    """The environment's servers from the inventory, or just ``only`` (``--server``):
    an error naming the environment's servers when ``only`` is not one of them."""
    servers = select_servers(ctx, GlobalConfig.load()).servers
    if only is None:
        return servers
    chosen = [s for s in servers if s.name == only]
    if not chosen:
        names = ", ".join(s.name for s in servers)
        raise TakoError(f"server '{only}' does not serve {ctx.key}; its servers: {names}")
    return chosen
