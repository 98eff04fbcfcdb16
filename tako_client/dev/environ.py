"""The environment of an app under ``tako dev``, and its local storages.

Rules (as production's instance environment, with development's values):

- precedence, lowest first: the developer's own environment (minus ``TAKO_KEY_*``, the
  secrets keys) < runtime defaults (``NODE_ENV=development`` for JS runtimes,
  ``PYTHONUNBUFFERED=1``) < ``[vars]`` < ``[vars.development]`` < development secrets <
  storages and ``TAKO_DATA_DIR`` < ``TAKO_ENV=development``, ``TAKO_BUILD=dev``,
  ``TAKO_APP_NAME``, ``TAKO_INSTANCE``, ``HOST``, ``PORT``; other environments' variables
  never reach the app;
- ``PATH`` starts with the app's own tool directories when they exist
  (``node_modules/.bin``, ``.venv/bin``, ``venv/bin``), as a release's do on a server;
- storages (001: "in development, undeclared storage resources default to local
  storage"): every binding any environment declares is bound; one that
  ``[envs.development]`` maps to a declared S3 storage uses it (development's
  credentials), every other one is a local directory ``.tako/dev/storages/{binding}``;
  the variables are the ones production uses (:mod:`tako_common.storages`).

Pure: values in, values out (the caller creates the directories).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tako_common.config import LOCAL_STORAGE, TakoConfig
from tako_common.config.model import JS_RUNTIMES
from tako_common.names import RESERVED_ENV
from tako_common.protocol.storage import S3Target, StorageBinding
from tako_common.storages import DATA_DIR_VAR, S3Credentials, binding_environ

TOOL_DIRS = ("node_modules/.bin", ".venv/bin", "venv/bin")
_HIDDEN_PREFIXES = ("TAKO_KEY_",)


@dataclass(frozen=True)
class DevPaths:
    """Where an app's development data lives."""

    data_dir: Path
    storages_dir: Path

    @classmethod
    def under(cls, dev_dir: Path) -> DevPaths:
        return cls(dev_dir / "data", dev_dir / "storages")

    def storage(self, binding: str) -> Path:
        return self.storages_dir / binding


def dev_bindings(
    config: TakoConfig, credentials: Mapping[str, S3Credentials]
) -> list[StorageBinding]:
    """The storage bindings of the app under tako dev (module rules)."""
    names: dict[str, str] = {}
    for env in config.envs.values():
        for binding in env.storages:
            names.setdefault(binding, LOCAL_STORAGE)
    development = config.envs.get(RESERVED_ENV)
    if development is not None:
        names.update(development.storages)
    bindings = []
    for binding, resource in names.items():
        declared = config.storages.get(resource)
        creds = credentials.get(resource)
        if declared is None or creds is None:
            bindings.append(StorageBinding(name=binding, provider="local"))
            continue
        target = S3Target(
            bucket=declared.bucket, endpoint=declared.endpoint, region=declared.region,
            force_path_style=declared.force_path_style,
            access_key_id=creds.access_key_id, secret_access_key=creds.secret_access_key,
        )
        bindings.append(StorageBinding(
            name=binding, provider="s3", s3=target, public_base_url=declared.public_base_url,
        ))
    return bindings


def s3_without_credentials(
    config: TakoConfig, credentials: Mapping[str, S3Credentials]
) -> list[str]:
    """Declared S3 storages ``[envs.development]`` binds that have no credentials."""
    development = config.envs.get(RESERVED_ENV)
    if development is None:
        return []
    return sorted({
        resource for resource in development.storages.values()
        if resource in config.storages and resource not in credentials
    })


def dev_environ(
    *,
    base: Mapping[str, str],
    app: str,
    app_dir: Path,
    runtime: str | None,
    variables: Mapping[str, str],
    secrets: Mapping[str, str],
    bindings: list[StorageBinding],
    paths: DevPaths,
    port: int,
    existing_dirs: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """The whole environment of the dev process (``existing_dirs``: which of
    :data:`TOOL_DIRS` exist in the app directory)."""
    environ = {k: v for k, v in base.items() if not k.startswith(_HIDDEN_PREFIXES)}
    tools = [str(app_dir / d) for d in TOOL_DIRS if d in existing_dirs]
    if tools:
        environ["PATH"] = os.pathsep.join([*tools, *filter(None, [base.get("PATH")])])
    if runtime in JS_RUNTIMES:
        environ["NODE_ENV"] = "development"
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(variables)
    environ.update(secrets)
    local = {b.name: str(paths.storage(b.name)) for b in bindings if b.provider == "local"}
    environ.update(binding_environ(bindings, local))
    environ[DATA_DIR_VAR] = str(paths.data_dir)
    environ.update({
        "TAKO_ENV": RESERVED_ENV,
        "TAKO_BUILD": "dev",
        "TAKO_APP_NAME": app,
        "TAKO_INSTANCE": "1",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    })
    return environ
