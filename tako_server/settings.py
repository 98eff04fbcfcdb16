"""Server settings: the one object built at start-up and passed down (never a global).

This module is the ONLY reader of the environment in ``tako-server``. Precedence, lowest
first: built-in defaults < ``{data_dir}/server-config.toml`` < environment (``TAKO_*``) <
command-line flags (passed as keyword arguments to :func:`load_settings`).

The config file is optional; its shape is::

    [server]
    http_port = 80
    https_port = 443
    workers = 2
    release_timeout = 600     # seconds a deploy's release command may run

    [acme]
    email = "ops@example.com"
    staging = false
    directory_url = "https://acme-v02.api.letsencrypt.org/directory"
    ca_bundle = "/etc/ssl/pebble.pem"
    enabled = true

    [storage]
    ca_bundle = "/etc/ssl/private-s3.pem"   # S3 endpoints of storages and backups

    [cloudflare]                      # DNS-01 and Origin CA (docs/tls.md)
    api_url = "https://api.cloudflare.com/client/v4"
    ca_bundle = "/etc/ssl/cf-standin.pem"
    dns_propagation = 10              # seconds between the TXT records and validation

    [source_ip]                       # docs/source-ip.md
    trusted_proxies = ["10.0.0.0/8"]  # may send X-Forwarded-* (and PROXY headers)
    proxy_protocol = false            # accept PROXY v1/v2 headers from trusted_proxies
    cloudflare_ranges = "/etc/tako/cloudflare-ranges.txt"  # default: the shipped list

    [apps."web/production"]                 # limits of one app ([server] app_* defaults)
    memory_mb = 512
    cpu_percent = 100
    pids_max = 256

Environment names: ``TAKO_DATA_DIR TAKO_SOCKET TAKO_HTTP_PORT TAKO_HTTPS_PORT TAKO_WORKERS
TAKO_RELEASE_TIMEOUT TAKO_ACME_EMAIL TAKO_ACME_STAGING TAKO_ACME_DIRECTORY_URL TAKO_ACME_CA_BUNDLE
TAKO_ACME_ENABLED TAKO_STORAGE_CA_BUNDLE TAKO_CLOUDFLARE_API_URL TAKO_CLOUDFLARE_CA_BUNDLE
TAKO_CLOUDFLARE_DNS_PROPAGATION TAKO_SOURCE_IP_TRUSTED_PROXIES TAKO_SOURCE_IP_PROXY_PROTOCOL
TAKO_SOURCE_IP_CLOUDFLARE_RANGES TAKO_LOG_LEVEL TAKO_WORKFLOWS_PORT TAKO_APP_USERS
TAKO_APP_MEMORY_MB TAKO_APP_CPU_PERCENT TAKO_APP_PIDS_MAX``. Rules: unknown keys and bad
values are refused with the file, line and key path (:class:`ConfigError`); nothing is
silently fixed.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tako_common.config.lines import KeyLines
from tako_common.errors import ConfigError
from tako_common.layout import DEFAULT_DATA_DIR, DEFAULT_SOCKET, ServerLayout

Port = int
#: ``{app}/{env}`` (the names' rules of :mod:`tako_common.names`)
_NAME = r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
AppKey = Annotated[str, StringConstraints(pattern=rf"^{_NAME}/{_NAME}$")]
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


class AppLimitsSection(BaseModel):
    """``[apps."{app}/{env}"]``: limits of one app (unset = the ``[server]`` default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    memory_mb: int | None = Field(default=None, ge=16, le=1024 * 1024)
    cpu_percent: int | None = Field(default=None, ge=1, le=100_000)
    pids_max: int | None = Field(default=None, ge=8, le=1_000_000)



def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def _inherited_path() -> str:
    return os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _inherited_home() -> str | None:
    return os.environ.get("HOME") or None


def _inherited_lang() -> str | None:
    return os.environ.get("LANG") or None


class ServerSettings(BaseSettings):
    """Every knob of the daemon; frozen once loaded."""

    model_config = SettingsConfigDict(env_prefix="TAKO_", extra="forbid", frozen=True)

    data_dir: Path = Path(str(DEFAULT_DATA_DIR))
    socket: Path = Path(str(DEFAULT_SOCKET))
    http_port: Port = Field(default=80, ge=0, le=65535)
    https_port: Port = Field(default=443, ge=0, le=65535)
    workers: int = Field(default_factory=_default_workers, ge=0, le=256)
    #: seconds a deploy's release command may run (``tako deploy --release-timeout`` wins)
    release_timeout: int = Field(default=600, ge=1, le=7 * 24 * 3600)
    acme_enabled: bool = True
    acme_email: str | None = None
    acme_staging: bool = False
    acme_directory_url: str | None = None
    acme_ca_bundle: Path | None = None
    #: CA bundle that S3 endpoints of storages and backups are verified with (tests; a
    #: private S3 server); unset = the system's trusted roots
    storage_ca_bundle: Path | None = None
    #: the Cloudflare API (DNS-01 records, Origin CA); tests point it at a local stand-in
    cloudflare_api_url: str = "https://api.cloudflare.com/client/v4"
    cloudflare_ca_bundle: Path | None = None
    cloudflare_dns_propagation: float = Field(default=10.0, ge=0, le=600)
    #: source_ip (docs/source-ip.md): proxies whose X-Forwarded-* (and PROXY headers, when
    #: ``proxy_protocol``) are believed; Cloudflare's ranges file (default: shipped list)
    source_ip_trusted_proxies: list[str] = Field(default_factory=list, max_length=1024)
    source_ip_proxy_protocol: bool = False
    source_ip_cloudflare_ranges: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # the edge (docs/server.md, "Edge settings"); metrics are off unless a port is set
    metrics_port: Port | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    #: the workflows job-queue API, on 127.0.0.1 only (docs/workflows.md)
    workflows_port: Port = Field(default=7433, ge=1, le=65535)
    access_log: Literal["on", "off"] = "on"
    access_log_sample: float = Field(default=1.0, gt=0.0, le=1.0)
    access_log_query: bool = False
    access_log_max_mb: int = Field(default=50, ge=1, le=100_000)
    access_log_keep: int = Field(default=5, ge=0, le=100)
    client_requests: int = Field(default=256, ge=0)
    client_connections: int = Field(default=512, ge=0)
    send_timeout: float = Field(default=60.0, gt=0)
    upgrade_drain: float = Field(default=20.0, ge=0)
    #: where pinned bun/deno/node versions are downloaded from (an npm registry or mirror)
    runtime_registry: str = "https://registry.npmjs.org"
    # container releases (docs/containers.md): the Podman API socket and per-instance limits
    container_socket: Path = Path("/var/run/tako/podman.sock")
    container_memory_mb: int = Field(default=512, ge=16, le=1024 * 1024)
    container_pids_limit: int = Field(default=512, ge=8, le=1_000_000)
    # per-app users and limits (docs/server.md, "Security"): "auto" = when running as root
    app_users: Literal["auto", "on", "off"] = "auto"
    app_memory_mb: int = Field(default=1024, ge=16, le=1024 * 1024)
    app_cpu_percent: int = Field(default=200, ge=1, le=100_000)
    app_pids_max: int = Field(default=1024, ge=8, le=1_000_000)
    #: per-app overrides of the three limits, keyed ``{app}/{env}`` (``[apps."web/production"]``)
    app_limits: dict[str, AppLimitsSection] = Field(default_factory=dict)
    # what app processes inherit from the server's own environment (PATH, HOME, LANG only)
    inherited_path: str = Field(default_factory=_inherited_path)
    inherited_home: str | None = Field(default_factory=_inherited_home)
    inherited_lang: str | None = Field(default_factory=_inherited_lang)

    @field_validator("source_ip_trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR range") from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, ConfigFileSource(settings_cls))

    @property
    def layout(self) -> ServerLayout:
        return ServerLayout(self.data_dir)

    @property
    def access_log_path(self) -> Path | None:
        return self.data_dir / "logs" / "access.log" if self.access_log == "on" else None

    @property
    def inherited_env(self) -> dict[str, str]:
        env = {"PATH": self.inherited_path}
        if self.inherited_home:
            env["HOME"] = self.inherited_home
        if self.inherited_lang:
            env["LANG"] = self.inherited_lang
        return env

    @property
    def directory_url(self) -> str:
        """The ACME directory in effect: explicit URL, else Let's Encrypt (staging or not)."""
        if self.acme_directory_url:
            return self.acme_directory_url
        return LETS_ENCRYPT_STAGING if self.acme_staging else LETS_ENCRYPT


class _ServerSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    http_port: Port | None = None
    https_port: Port | None = None
    workers: int | None = None
    release_timeout: int | None = None
    metrics_port: Port | None = None
    metrics_host: str | None = None
    workflows_port: Port | None = None
    access_log: Literal["on", "off"] | None = None
    access_log_sample: float | None = None
    access_log_query: bool | None = None
    access_log_max_mb: int | None = None
    access_log_keep: int | None = None
    client_requests: int | None = None
    client_connections: int | None = None
    send_timeout: float | None = None
    upgrade_drain: float | None = None
    app_users: Literal["auto", "on", "off"] | None = None
    app_memory_mb: int | None = None
    app_cpu_percent: int | None = None
    app_pids_max: int | None = None
    runtime_registry: str | None = None


class _AcmeSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str | None = None
    staging: bool | None = None
    directory_url: str | None = None
    ca_bundle: Path | None = None
    enabled: bool | None = None


class _StorageSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ca_bundle: Path | None = None


class _CloudflareSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_url: str | None = None
    ca_bundle: Path | None = None
    dns_propagation: float | None = None


class _SourceIpSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trusted_proxies: list[str] | None = None
    proxy_protocol: bool | None = None
    cloudflare_ranges: Path | None = None
class _ContainerSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    socket: Path | None = None
    memory_mb: int | None = None
    pids_limit: int | None = None


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server: _ServerSection = Field(default_factory=_ServerSection)
    acme: _AcmeSection = Field(default_factory=_AcmeSection)
    storage: _StorageSection = Field(default_factory=_StorageSection)
    cloudflare: _CloudflareSection = Field(default_factory=_CloudflareSection)
    source_ip: _SourceIpSection = Field(default_factory=_SourceIpSection)
    apps: dict[AppKey, AppLimitsSection] = Field(default_factory=dict)
    container: _ContainerSection = Field(default_factory=_ContainerSection)


def read_config_file(path: Path) -> dict[str, Any]:
    """Flat settings from ``server-config.toml`` ({} when the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from exc
    try:
        parsed = _ConfigFile.model_validate(raw)
    except ValidationError as exc:
        lines = KeyLines.build(text)
        issues = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
            line = lines.line_of(loc)
            where = f"{path}:{line}" if line else str(path)
            key = ".".join(str(p) for p in loc)
            issues.append(f"{where}: {key}: {err['msg']}")
        raise ConfigError(issues, hint="see docs/server.md for the settings file") from exc
    flat: dict[str, Any] = {}
    for key, value in parsed.server.model_dump(exclude_none=True).items():
        flat[key] = value
    for key, value in parsed.acme.model_dump(exclude_none=True).items():
        flat[f"acme_{key}"] = value
    for key, value in parsed.storage.model_dump(exclude_none=True).items():
        flat[f"storage_{key}"] = value
    for key, value in parsed.cloudflare.model_dump(exclude_none=True).items():
        flat[f"cloudflare_{key}"] = value
    for key, value in parsed.source_ip.model_dump(exclude_none=True).items():
        flat[f"source_ip_{key}"] = value
    if parsed.apps:
        flat["app_limits"] = dict(parsed.apps)
    for key, value in parsed.container.model_dump(exclude_none=True).items():
        flat[f"container_{key}"] = value
    return flat


class ConfigFileSource(PydanticBaseSettingsSource):
    """Reads ``server-config.toml`` from the data dir chosen by the higher sources."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data_dir = self.current_state.get("data_dir") or str(DEFAULT_DATA_DIR)
        return read_config_file(ServerLayout(Path(data_dir)).server_config)


def load_settings(**overrides: Any) -> ServerSettings:
    """Build the settings; ``overrides`` are CLI flags (``None`` values are ignored)."""
    flags = {key: value for key, value in overrides.items() if value is not None}
    try:
        return ServerSettings(**flags)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            issues.append(f"setting {key} (flag, TAKO_{key.upper()} or config file): {err['msg']}")
        raise ConfigError(issues) from exc
