"""tako.toml: the model, the loader and the per-environment answers built on them.

Public API (see docs/tako-toml.md for the file format):

- :func:`load_config` / :func:`load_config_text` -> :class:`LoadedConfig` (raises
  :class:`~tako_common.errors.ConfigError` listing every problem as ``file:line key: rule``);
- :func:`resolve_config_path` for ``-c``; :func:`resolve_env`, :func:`deploy_check`;
- :func:`merged_vars`, :func:`env_routes`, :func:`wildcard_routes`, :func:`env_servers`,
  :func:`release_command`, :func:`instances_for`, :func:`idle_timeout_for`,
  :func:`build_steps`, :func:`resolve_stage_cwd`, :func:`workflow_settings`;
- :data:`NOT_IMPLEMENTED`: options validated but not acted on yet (loading warns).

Everything here is pure apart from reading the config file itself; nothing writes.
"""

from tako_common.config.legacy import LegacyHints, ServerHints
from tako_common.config.loader import (
    CONFIG_FILE,
    LoadedConfig,
    load_config,
    load_config_text,
    resolve_config_path,
)
from tako_common.config.model import (
    JS_RUNTIMES,
    PACKAGE_MANAGERS,
    RUNTIMES,
    BackupConfig,
    BuildConfig,
    BuildStage,
    EnvConfig,
    ImagesConfig,
    ServerConfig,
    StorageConfig,
    TakoConfig,
    VarsConfig,
    WorkflowGroup,
    WorkflowsConfig,
    split_runtime,
)
from tako_common.config.resolve import (
    DEFAULT_ENV,
    WorkflowSettings,
    build_cwd,
    build_steps,
    certificate_check,
    deploy_check,
    env_routes,
    env_servers,
    idle_timeout_for,
    instances_for,
    merged_vars,
    release_command,
    resolve_env,
    resolve_stage_cwd,
    wildcard_routes,
    workflow_groups,
    workflow_settings,
)
from tako_common.config.rules import LOCAL_STORAGE
from tako_common.config.unimplemented import NOT_IMPLEMENTED

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_ENV",
    "JS_RUNTIMES",
    "LOCAL_STORAGE",
    "NOT_IMPLEMENTED",
    "PACKAGE_MANAGERS",
    "RUNTIMES",
    "BackupConfig",
    "BuildConfig",
    "BuildStage",
    "EnvConfig",
    "ImagesConfig",
    "LegacyHints",
    "LoadedConfig",
    "ServerConfig",
    "ServerHints",
    "StorageConfig",
    "TakoConfig",
    "VarsConfig",
    "WorkflowGroup",
    "WorkflowSettings",
    "WorkflowsConfig",
    "build_cwd",
    "build_steps",
    "certificate_check",
    "deploy_check",
    "env_routes",
    "env_servers",
    "idle_timeout_for",
    "instances_for",
    "load_config",
    "load_config_text",
    "merged_vars",
    "release_command",
    "resolve_config_path",
    "resolve_env",
    "resolve_stage_cwd",
    "split_runtime",
    "wildcard_routes",
    "workflow_groups",
    "workflow_settings",
]
