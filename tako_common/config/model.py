"""The shape of tako.toml as immutable pydantic models (the current, non-legacy form).

Rules kept here are the ones that concern a single value: types (strict: TOML types are
never coerced), allowed words, DNS-friendly names, ``runtime[@version]``, https URLs,
route syntax, non-negative numbers. Every model forbids unknown keys. Rules that relate
several values (``route`` xor ``routes``, storage references, ``container`` exclusions...)
live in :mod:`tako_common.config.rules`; legacy forms are rewritten into this shape by
:mod:`tako_common.config.legacy` before validation; ``[vars]`` is normalised into
:class:`VarsConfig` by :mod:`tako_common.config.variables`.

Validators raise ``PydanticCustomError("tako_rule", ...)`` so the message is shown as is.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from tako_common.errors import ValidationError
from tako_common.images import check_local_pattern, parse_remote_pattern
from tako_common.names import NAME_RULE, is_valid_name
from tako_common.routes import parse_route

RUNTIMES = ("bun", "node", "deno", "python", "go")
JS_RUNTIMES = ("bun", "node", "deno")
PACKAGE_MANAGERS = ("bun", "npm", "pnpm", "yarn")
SSL_PROVIDERS = ("letsencrypt", "cloudflare")
SOURCE_IP_MODES = ("auto", "direct", "cloudflare-proxy", "trusted-proxy")
IMAGE_FORMATS = ("webp", "avif", "jpeg", "png")
DEFAULT_IDLE_TIMEOUT = 300
DEFAULT_CONCURRENCY = 10
DEFAULT_LOCAL_IMAGE_PATTERNS = ("/**",)
RULE_TYPE = "tako_rule"

_RUNTIME_RE = re.compile(r"([a-z]+)(?:@([0-9A-Za-z][0-9A-Za-z.+_-]*))?")


def rule_error(message: str) -> PydanticCustomError:
    """A pydantic error whose message is exactly ``message`` (no 'Value error,' prefix)."""
    return PydanticCustomError(RULE_TYPE, message)


def _non_empty(value: str) -> str:
    if not value.strip():
        raise rule_error("must not be empty")
    return value


def _app_name(value: str) -> str:
    if not is_valid_name(value):
        raise rule_error(f"invalid app name {value!r}: {NAME_RULE}")
    return value


def split_runtime(value: str) -> tuple[str, str | None]:
    """``"bun@1.2.3"`` -> ``("bun", "1.2.3")``; raises ``ValidationError`` for unknown runtimes."""
    match = _RUNTIME_RE.fullmatch(value)
    if match is None or match.group(1) not in RUNTIMES:
        raise ValidationError(
            f"invalid runtime {value!r}: use one of {', '.join(RUNTIMES)}, optionally @version "
            "(e.g. bun@1.2.3)"
        )
    return match.group(1), match.group(2)


def _runtime(value: str) -> str:
    try:
        split_runtime(value)
    except ValidationError as exc:
        raise rule_error(exc.message) from exc
    return value


def _https_url(value: str) -> str:
    rest = value[len("https://"):] if value.startswith("https://") else None
    if not rest or rest.startswith("/"):
        raise rule_error(f"must be an https:// URL with a host (got {value!r})")
    return value


def _check_route(value: str) -> str:
    """Route syntax: a host (exact or ``*.`` wildcard) with an optional path; never path-only."""
    try:
        parse_route(value)
    except ValidationError as exc:
        raise rule_error(exc.message) from exc
    return value


def _local_pattern(value: str) -> str:
    try:
        return check_local_pattern(value)
    except ValueError as exc:
        raise rule_error(str(exc)) from None


def _remote_pattern(value: str) -> str:
    try:
        parse_remote_pattern(value)
    except ValueError as exc:
        raise rule_error(str(exc)) from None
    return value


NonEmpty = Annotated[str, AfterValidator(_non_empty)]
AppName = Annotated[str, AfterValidator(_app_name)]
Runtime = Annotated[str, AfterValidator(_runtime)]
HttpsUrl = Annotated[str, AfterValidator(_https_url)]
RouteText = Annotated[str, AfterValidator(_check_route)]
Command = Annotated[list[NonEmpty], Field(min_length=1)]
LocalPattern = Annotated[str, AfterValidator(_local_pattern)]
RemotePattern = Annotated[str, AfterValidator(_remote_pattern)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BackupConfig(_Model):
    """``[envs.<env>].backup``: where backups go (a declared, private S3 storage), how
    often (hours between scheduled backups) and how many are kept (daily, weekly)."""

    storage: NonEmpty
    interval_hours: int = Field(default=24, ge=1, le=24 * 7)
    keep_daily: int = Field(default=7, ge=1, le=366)
    keep_weekly: int = Field(default=4, ge=0, le=520)


class EnvConfig(_Model):
    """``[envs.<env>]``: one deploy environment."""

    route: RouteText | None = None
    routes: list[RouteText] | None = None
    servers: list[NonEmpty] = Field(default_factory=list)
    idle_timeout: int = Field(default=DEFAULT_IDLE_TIMEOUT, ge=0)
    ssl: Literal["letsencrypt", "cloudflare"] = "letsencrypt"
    source_ip: Literal["auto", "direct", "cloudflare-proxy", "trusted-proxy"] = "auto"
    storages: dict[str, NonEmpty] = Field(default_factory=dict)
    backup: BackupConfig | None = None
    release: str | None = None

    @property
    def route_list(self) -> list[str]:
        """The routes of this environment, whichever key declared them."""
        if self.route is not None:
            return [self.route]
        return list(self.routes or [])


class VarsConfig(_Model):
    """``[vars]`` split into common variables and ``[vars.<env>]`` tables (values are strings)."""

    common: dict[str, str] = Field(default_factory=dict)
    per_env: dict[str, dict[str, str]] = Field(default_factory=dict)


class BuildConfig(_Model):
    """``[build]``: one simple build step run in ``cwd`` (inside the project)."""

    install: NonEmpty | None = None
    run: NonEmpty | None = None
    cwd: NonEmpty | None = None
    include: list[NonEmpty] | None = None
    exclude: list[NonEmpty] | None = None


class BuildStage(_Model):
    """One ``[[build_stages]]`` entry; ``cwd`` may use ``..`` inside the source workspace."""

    name: NonEmpty | None = None
    cwd: NonEmpty | None = None
    install: NonEmpty | None = None
    run: NonEmpty
    exclude: list[NonEmpty] | None = None


class ImagesConfig(_Model):
    """``[images]``: the image optimizer's allow-lists and output choices."""

    remote_patterns: list[RemotePattern] = Field(default_factory=list)
    local_patterns: list[LocalPattern] = Field(
        default_factory=lambda: list(DEFAULT_LOCAL_IMAGE_PATTERNS)
    )
    sizes: list[Annotated[int, Field(gt=0, le=16384)]] | None = Field(default=None, min_length=1)
    qualities: list[Annotated[int, Field(ge=1, le=100)]] | None = Field(
        default=None, min_length=1
    )
    formats: list[Literal["webp", "avif", "jpeg", "png"]] | None = Field(
        default=None, min_length=1
    )


class StorageConfig(_Model):
    """``[storages.<name>]``: non-secret metadata of an S3-compatible bucket."""

    provider: Literal["s3"]
    bucket: NonEmpty
    endpoint: HttpsUrl
    region: NonEmpty
    force_path_style: bool = False
    public_base_url: HttpsUrl | None = None


class WorkflowGroup(_Model):
    """Settings of one workflow group (``run`` command, worker count, concurrency)."""

    run: Command | None = None
    workers: int | None = Field(default=None, ge=0)
    concurrency: int | None = Field(default=None, ge=1)


class WorkflowsConfig(WorkflowGroup):
    """``[workflows]`` (or ``[servers.<name>.workflows]``): defaults plus named groups.

    Sub-tables are groups: ``[workflows.email]`` lands in ``groups["email"]``.
    """

    groups: dict[str, WorkflowGroup] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split_groups(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "groups" in data and not isinstance(data["groups"], dict):
            raise rule_error("unknown key 'groups'; name a group with a [workflows.<group>] table")
        scalars = {key: value for key, value in data.items() if not isinstance(value, dict)}
        groups = {key: value for key, value in data.items() if isinstance(value, dict)}
        return {**scalars, "groups": groups}


class ServerConfig(_Model):
    """``[servers.<name>]`` in tako.toml: per-server overrides (workflows)."""

    workflows: WorkflowsConfig | None = None


class TakoConfig(_Model):
    """A whole tako.toml (current form)."""

    name: AppName | None = None
    runtime: Runtime | None = None
    package_manager: Literal["bun", "npm", "pnpm", "yarn"] | None = None
    preset: NonEmpty | None = None
    main: NonEmpty | None = None
    app_root: NonEmpty | None = None
    dev: Command | None = None
    start: Command | None = None
    assets: list[NonEmpty] | None = None
    container: NonEmpty | None = None
    #: container releases: ``false`` gives the container a writable root file system
    container_read_only: bool | None = None
    release: str | None = None
    envs: dict[str, EnvConfig] = Field(default_factory=dict)
    vars: VarsConfig = Field(default_factory=VarsConfig)
    build: BuildConfig | None = None
    build_stages: list[BuildStage] | None = None
    images: ImagesConfig | None = None
    storages: dict[str, StorageConfig] = Field(default_factory=dict)
    workflows: WorkflowsConfig | None = None
    servers: dict[str, ServerConfig] = Field(default_factory=dict)

    @property
    def runtime_name(self) -> str | None:
        return split_runtime(self.runtime)[0] if self.runtime else None

    @property
    def runtime_version(self) -> str | None:
        return split_runtime(self.runtime)[1] if self.runtime else None
