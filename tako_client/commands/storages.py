"""``tako storages add | credentials | ls``: storage bindings and their S3 credentials.

Rules:

- ``add BINDING --env ENV`` binds ``BINDING`` in ``[envs.ENV].storages`` of tako.toml to a
  resource: ``--provider local`` uses the built-in ``local`` storage (single-server
  environments only); else the S3 resource ``--resource`` (default: the binding name),
  declared as ``[storages.RESOURCE]`` from ``--bucket --endpoint --region
  [--force-path-style] [--public-base-url]`` when it is new, reused when it exists (a
  flag that contradicts the declaration is refused); its key pair is asked for when the
  environment has none for it yet;
- ``credentials RESOURCE --env ENV`` sets or rotates the key pair of a declared S3
  resource (also one used only for backups); servers get it with the next deploy;
- key pairs come from a prompt on a terminal (the secret hidden and confirmed) or, in
  CI, two lines of stdin (access key id, then secret access key); ``--access-key-id`` may
  give the (non-secret) id as a flag; the secret never travels in argv or output;
- the edited tako.toml is validated before it is written; nothing is written when any
  check fails; missing metadata without a terminal is an error naming the flags;
- ``ls`` shows every binding and backup target per environment and whether its
  credentials are set (no key needed).
"""

from __future__ import annotations

import sys

import tomlkit
import typer

from tako_client import output
from tako_client.appctx import load_app
from tako_client.commands.servers import align
from tako_client.storage_secrets import credential_table, set_credentials
from tako_common.config import LOCAL_STORAGE, LoadedConfig, load_config_text
from tako_common.errors import ConfigError, ValidationError
from tako_common.storages import S3Credentials

EnvOpt = typer.Option("production", "--env", "-e", help="Environment.")
ConfigOpt = typer.Option(None, "--config", "-c", help="Path to tako.toml (app dir = its parent).")

storages_app = typer.Typer(
    name="storages",
    help="Bind storages to the app and set their credentials.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    storages_app.command("add", help="Bind a storage (S3 or local) in an environment.")(add)
    storages_app.command("credentials", help="Set or rotate an S3 resource's key pair.")(
        credentials
    )
    storages_app.command("ls", help="List bindings, resources and credentials.")(ls)
    storages_app.command("list", hidden=True)(ls)
    app.add_typer(storages_app, name="storages")


def _interactive() -> bool:
    return sys.stdin.isatty()


def read_key_pair(resource: str, env: str, access_key_id: str | None) -> S3Credentials:
    """The key pair from prompts (terminal) or two stdin lines; never from argv (secret)."""
    if _interactive():
        key_id = access_key_id or str(typer.prompt(f"Access key ID of {resource} ({env})"))
        secret = str(
            typer.prompt(
                f"Secret access key of {resource} ({env})",
                hide_input=True,
                confirmation_prompt=True,
            )
        )
    else:
        key_id = access_key_id or sys.stdin.readline().rstrip("\r\n")
        secret = sys.stdin.readline().rstrip("\r\n")
    for value, what in ((key_id, "access key ID"), (secret, "secret access key")):
        if not value.strip() or any(c in value for c in "\r\n\x00"):
            raise ValidationError(
                f"the {what} of {resource} is empty or not one line",
                hint="pipe the access key ID and the secret access key on two lines of stdin, "
                "or run in a terminal",
            )
    return S3Credentials(key_id.strip(), secret.strip())


def _resource_table(values: dict[str, object]) -> tomlkit.items.Table:
    table = tomlkit.table()
    for key, value in values.items():
        if value is not None:
            table[key] = value
    return table


def _declare(
    doc: tomlkit.TOMLDocument, loaded: LoadedConfig, resource: str, wanted: dict[str, object]
) -> bool:
    """Declare ``[storages.RESOURCE]`` (True) or check the existing one agrees (False)."""
    existing = loaded.config.storages.get(resource)
    if existing is not None:
        for key, value in wanted.items():
            if value is not None and value != getattr(existing, key):
                raise ValidationError(
                    f"storage {resource!r} is already declared with {key} = "
                    f"{getattr(existing, key)!r}, not {value!r}",
                    hint=f"edit [storages.{resource}] in tako.toml, or pick another --resource",
                )
        return False
    missing = [k for k in ("bucket", "endpoint", "region") if wanted.get(k) is None]
    if missing and not _interactive():
        raise ValidationError(
            f"storage {resource!r} is new: it needs {', '.join(missing)}",
            hint="pass " + " ".join(f"--{k} VALUE" for k in missing),
        )
    for key in missing:
        wanted[key] = str(typer.prompt(f"{key.capitalize()} of {resource}"))
    if "storages" not in doc:
        doc.add(tomlkit.nl())
        doc["storages"] = tomlkit.table(is_super_table=True)
    doc["storages"][resource] = _resource_table({"provider": "s3", **wanted})
    return True


def _bind(doc: tomlkit.TOMLDocument, env: str, binding: str, resource: str) -> None:
    table = doc["envs"][env]
    if "storages" not in table:
        table["storages"] = tomlkit.inline_table()
    table["storages"][binding] = resource


def _checked(loaded: LoadedConfig, doc: tomlkit.TOMLDocument) -> str:
    """The edited text, validated as a whole tako.toml (refused: nothing is written)."""
    text = tomlkit.dumps(doc)
    try:
        load_config_text(text, loaded.path)
    except ConfigError as exc:
        raise ConfigError(exc.issues, hint="tako.toml was not changed") from exc
    return text


def add(
    binding: str = typer.Argument(..., help="Binding name the app sees (e.g. uploads)."),
    env: str = EnvOpt,
    provider: str = typer.Option("s3", "--provider", help="s3 or local."),
    resource: str | None = typer.Option(None, "--resource", help="S3 resource (default: BINDING)."),
    bucket: str | None = typer.Option(None, "--bucket"),
    endpoint: str | None = typer.Option(None, "--endpoint", help="https://host[:port]"),
    region: str | None = typer.Option(None, "--region"),
    force_path_style: bool | None = typer.Option(None, "--force-path-style/--virtual-host-style"),
    public_base_url: str | None = typer.Option(None, "--public-base-url"),
    access_key_id: str | None = typer.Option(None, "--access-key-id", help="Not secret."),
    config: str | None = ConfigOpt,
) -> None:
    """Bind a storage in ENV (declaring the S3 resource when new) and set its key pair."""
    ctx = load_app(config, None, env)
    loaded = ctx.loaded
    if provider not in ("s3", "local"):
        raise ValidationError(f"unknown provider {provider!r}: use s3 or local")
    if env not in loaded.config.envs:
        raise ValidationError(f"environment {env!r} is not declared in tako.toml")
    doc = tomlkit.parse(loaded.path.read_text(encoding="utf-8"))
    target = LOCAL_STORAGE if provider == "local" else (resource or binding)
    if provider == "local" and any(
        v is not None for v in (resource, bucket, endpoint, region, public_base_url)
    ):
        raise ValidationError("--provider local takes no --resource or S3 options")
    new = provider == "s3" and _declare(
        doc,
        loaded,
        target,
        {
            "bucket": bucket,
            "endpoint": endpoint,
            "region": region,
            "force_path_style": force_path_style,
            "public_base_url": public_base_url,
        },
    )
    _bind(doc, env, binding, target)
    text = _checked(loaded, doc)
    if provider == "s3" and target not in credential_table(ctx.app_dir).get(env, []):
        key = set_credentials(ctx.app_dir, env, target, read_key_pair(target, env, access_key_id))
        output.detail(f"credentials of {target} for {env} encrypted with the key from {key.source}")
    elif provider == "s3":
        output.detail(
            f"{target} already has credentials for {env} "
            f"(rotate them with `tako storages credentials {target} --env {env}`)"
        )
    loaded.path.write_text(text, encoding="utf-8")
    where = (
        "local storage" if provider == "local" else f"{'new ' if new else ''}S3 storage {target}"
    )
    output.success(f"bound {binding} to {where} in {env}; deploy to hand it to the app")


def credentials(
    resource: str = typer.Argument(..., help="A declared [storages.NAME] S3 resource."),
    env: str = EnvOpt,
    access_key_id: str | None = typer.Option(None, "--access-key-id", help="Not secret."),
    config: str | None = ConfigOpt,
) -> None:
    """Set or rotate the key pair of an S3 resource for ENV (taken by the next deploy)."""
    ctx = load_app(config, None, env)
    declared = ctx.loaded.config.storages
    if resource not in declared:
        raise ValidationError(
            f"storage {resource!r} is not declared in tako.toml "
            f"(declared: {', '.join(sorted(declared)) or 'none'})",
            hint=f"declare it with `tako storages add BINDING --resource {resource} ...` or "
            f"add [storages.{resource}]",
        )
    rotated = resource in credential_table(ctx.app_dir).get(env, [])
    key = set_credentials(ctx.app_dir, env, resource, read_key_pair(resource, env, access_key_id))
    output.success(f"credentials of {resource} {'rotated' if rotated else 'set'} for {env}")
    output.detail(f"encrypted with the key from {key.source}; `tako deploy --env {env}` sends them")


def ls(config: str | None = ConfigOpt) -> None:
    """Bindings and backup targets per environment, and whether credentials are set."""
    ctx = load_app(config, None, "development")
    cfg = ctx.loaded.config
    creds = credential_table(ctx.app_dir)
    rows = [("ENV", "BINDING", "RESOURCE", "PROVIDER", "BUCKET", "CREDENTIALS")]
    for env_name, env in sorted(cfg.envs.items()):
        uses = [(b, r) for b, r in env.storages.items()]
        if env.backup is not None:
            uses.append(("(backup)", env.backup.storage))
        for binding, resource in uses:
            declared = cfg.storages.get(resource)
            has = (
                "-"
                if declared is None
                else "set"
                if resource in creds.get(env_name, [])
                else ("MISSING")
            )
            rows.append(
                (
                    env_name,
                    binding,
                    resource,
                    "local" if declared is None else "s3",
                    declared.bucket if declared else "-",
                    has,
                )
            )
    if len(rows) == 1:
        output.line("No storages. Bind one with `tako storages add BINDING --env ENV`.")
        return
    for row in align(rows):
        output.line(row)
    missing = [r for r in rows[1:] if r[-1] == "MISSING"]
    if missing:
        output.warn(
            "deploys of these environments stop until credentials are set: "
            + ", ".join(sorted({f"{r[0]}:{r[2]}" for r in missing}))
        )
