"""From a loaded tako.toml to a :class:`~.session.DevPlan`: command, routes, environment.

Rules:

- the app is served on ``{name}.localhost`` and on the routes of ``[envs.development]``
  when it declares any (001: ``development`` is reserved for ``tako dev``);
- variables: ``[vars]`` + ``[vars.development]``; secrets: the ``development`` ones from
  ``.tako/secrets.json`` (its key is needed only when there are some);
- storages and the data directory live under ``{app_dir}/.tako/dev`` and are created
  here; an S3 storage ``[envs.development]`` binds without development credentials falls
  back to local storage, with a warning naming it;
- nothing is built: with ``container`` set, tako dev still runs the dev command.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tako_client import output
from tako_client.secrets import decrypt_env
from tako_client.storage_secrets import load_credentials
from tako_common.config import LoadedConfig, env_routes, merged_vars
from tako_common.names import RESERVED_ENV
from tako_common.routes import parse_route
from tako_common.storages import S3Credentials

from .command import app_public_dir, dev_command_for
from .environ import TOOL_DIRS, DevPaths, dev_bindings, dev_environ, s3_without_credentials
from .session import DevPlan, free_port
from .settings import app_dev_dir


def dev_routes(app: str, declared: Sequence[str]) -> tuple[str, ...]:
    """``{app}.localhost`` first, then the declared development routes (each once)."""
    seen: dict[tuple[object, ...], str] = {}
    for text in (f"{app}.localhost", *declared):
        route = parse_route(text)
        seen.setdefault(route.key, route.text)
    return tuple(seen.values())


def _credentials(loaded: LoadedConfig) -> dict[str, S3Credentials]:
    development = loaded.config.envs.get(RESERVED_ENV)
    uses_s3 = development is not None and any(
        resource in loaded.config.storages for resource in development.storages.values()
    )
    return load_credentials(loaded.app_dir, RESERVED_ENV) if uses_s3 else {}


def make_plan(
    loaded: LoadedConfig, override: Sequence[str] | None, ready_timeout: float
) -> DevPlan:
    """Everything ``tako dev`` needs to run the app (creates its .tako/dev directories)."""
    app, app_dir = loaded.app_name, loaded.app_dir
    command = dev_command_for(loaded, override)
    credentials = _credentials(loaded)
    for resource in s3_without_credentials(loaded.config, credentials):
        output.warn(
            f"S3 storage {resource!r} has no development credentials: tako dev binds local "
            "storage instead (set them with `tako storages credentials "
            f"{resource} --env {RESERVED_ENV}`)"
        )
    bindings = dev_bindings(loaded.config, credentials)
    paths = DevPaths.under(app_dev_dir(app_dir))
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    for binding in bindings:
        if binding.provider == "local":
            paths.storage(binding.name).mkdir(parents=True, exist_ok=True)
    port = free_port()
    environ = dev_environ(
        base=dict(os.environ),
        app=app,
        app_dir=app_dir,
        runtime=command.runtime or _runtime_of(command.argv),
        variables=merged_vars(loaded, RESERVED_ENV, {}),
        secrets=decrypt_env(app_dir, RESERVED_ENV),
        bindings=bindings,
        paths=paths,
        port=port,
        existing_dirs=frozenset(d for d in TOOL_DIRS if (app_dir / d).is_dir()),
    )
    return DevPlan(
        app=app,
        app_dir=app_dir,
        routes=dev_routes(app, env_routes(loaded, RESERVED_ENV)),
        command=command,
        environ=environ,
        port=port,
        public_dir=app_public_dir(app_dir),
        ready_timeout=ready_timeout,
    )


def _runtime_of(argv: Sequence[str]) -> str | None:
    """The JS runtime a command runs with, when tako.toml names none (for NODE_ENV)."""
    program = os.path.basename(argv[0]) if argv else ""
    return {"node": "node", "npm": "node", "npx": "node", "pnpm": "node", "yarn": "node",
            "bun": "bun", "bunx": "bun", "deno": "deno"}.get(program)
