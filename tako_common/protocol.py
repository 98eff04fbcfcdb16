"""The management protocol between ``tako`` and ``tako-server``: messages and framing.

This module owns every message shape used by both sides. Transport: JSON lines over the
server's Unix socket (reached by the CLI through SSH ``direct-streamlocal``). Rules:

- one request per line, one response per line, except streams (``logs`` with
  ``follow=true``: ``ok`` lines with ``data.lines`` until the client closes);
- a frame (one line) is at most :data:`MAX_FRAME_BYTES` (1 MiB) including the newline;
- one connection may carry many requests; a bad line gets an error response and the
  connection stays usable;
- ``hello`` carries :data:`PROTOCOL_VERSION`; a different major version is refused;
- every request is validated here (pydantic, ``extra="forbid"``) before the server acts:
  app and env names, versions, sha256 digests, paths.

Responses are ``{"status": "ok", "data": {...}}`` or
``{"status": "error", "code": "...", "message": "...", "hint": ...}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
)
from pydantic import (
    ValidationError as PydanticValidationError,
)

from tako_common.errors import ProtocolError, TakoError
from tako_common.names import (
    is_valid_env_var_name,
    validate_app_name,
    validate_env_name,
    validate_version,
)

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 1024 * 1024

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_OWNER_RE = re.compile(r"[A-Za-z0-9._@:-]{1,128}")


def _check_sha256(value: str) -> str:
    if not _SHA256_RE.fullmatch(value):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    return value


def _check_env_map(value: dict[str, str]) -> dict[str, str]:
    for key, item in value.items():
        if not is_valid_env_var_name(key):
            raise ValueError(f"invalid variable name {key!r}: use [A-Za-z_][A-Za-z0-9_]*")
        if "\x00" in item:
            raise ValueError(f"value of {key} contains a NUL byte (not allowed in environments)")
    return value


def _check_owner(value: str) -> str:
    if not _OWNER_RE.fullmatch(value):
        raise ValueError("owner must be 1-128 characters of [A-Za-z0-9._@:-]")
    return value


def _check_artifact_name(value: str) -> str:
    if "/" in value or "\\" in value or value in (".", "..") or not value.endswith(".tar.zst"):
        raise ValueError(
            "artifact must be a file name inside the server's incoming directory, "
            "ending in .tar.zst"
        )
    return value


def _check_subdir(value: str) -> str:
    parts = value.split("/")
    if (
        value.startswith("/")
        or any(p in ("..",) for p in parts)
        or "\\" in value
        or "\x00" in value
    ):
        raise ValueError("app_subdir must be a relative path inside the release ('.' for the root)")
    return value


def _as_value_error(check: Callable[[str], str]) -> Callable[[str], str]:
    """Wrap a names.py validator so pydantic reports its message as a field error."""

    def run(value: str) -> str:
        try:
            return check(value)
        except TakoError as exc:
            raise ValueError(exc.message) from exc

    return run


_app = _as_value_error(validate_app_name)
_env = _as_value_error(validate_env_name)
_ver = _as_value_error(validate_version)


AppName = Annotated[str, AfterValidator(_app)]
EnvName = Annotated[str, AfterValidator(_env)]
Version = Annotated[str, AfterValidator(_ver)]
Sha256 = Annotated[str, AfterValidator(_check_sha256)]
EnvMap = Annotated[dict[str, str], AfterValidator(_check_env_map)]
Owner = Annotated[str, AfterValidator(_check_owner)]
ArtifactName = Annotated[str, AfterValidator(_check_artifact_name)]
SubDir = Annotated[str, AfterValidator(_check_subdir)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _AppRef(_Message):
    """Every app-scoped command names the remote identity ``{app}/{env}``."""

    app: AppName
    env: EnvName

    @property
    def key(self) -> str:
        return f"{self.app}/{self.env}"


# --------------------------------------------------------------------------- requests


class HelloRequest(_Message):
    command: Literal["hello"] = "hello"
    protocol_version: int = Field(ge=0)
    client_version: str = ""


class ServerInfoRequest(_Message):
    command: Literal["server_info"] = "server_info"


class ReleaseManifest(_Message):
    """What the server needs to run a release; written (without secrets) to ``app.json``."""

    runtime: Literal["bun", "node", "deno", "python", "go", "binary"]
    runtime_version: str | None = None
    main: str = Field(min_length=1, max_length=1024)
    start: list[str] | None = None
    install: str | None = None
    app_subdir: SubDir = "."
    commit: str | None = None
    commit_message: str | None = Field(default=None, max_length=4096)
    git_dirty: bool = False


class DeployRequest(_AppRef):
    command: Literal["deploy"] = "deploy"
    version: Version
    artifact: ArtifactName
    sha256: Sha256
    routes: list[str] = Field(min_length=1)
    manifest: ReleaseManifest
    vars: EnvMap = Field(default_factory=dict)
    secrets: EnvMap = Field(default_factory=dict)
    instances: int | None = Field(default=None, ge=0, le=64)
    idle_timeout: int = Field(default=300, ge=0, le=7 * 24 * 3600)
    owner: Owner | None = None


class StatusRequest(_Message):
    command: Literal["status"] = "status"
    app: AppName | None = None
    env: EnvName | None = None


class ListRequest(_Message):
    command: Literal["list"] = "list"


class RoutesRequest(_Message):
    command: Literal["routes"] = "routes"


class ListReleasesRequest(_AppRef):
    command: Literal["list_releases"] = "list_releases"


class RollbackRequest(_AppRef):
    command: Literal["rollback"] = "rollback"
    version: Version


class StopRequest(_AppRef):
    command: Literal["stop"] = "stop"


class DeleteRequest(_AppRef):
    command: Literal["delete"] = "delete"


class ScaleRequest(_AppRef):
    command: Literal["scale"] = "scale"
    instances: int = Field(ge=0, le=64)


class UpdateSecretsRequest(_AppRef):
    command: Literal["update_secrets"] = "update_secrets"
    secrets: EnvMap


class LogsRequest(_AppRef):
    command: Literal["logs"] = "logs"
    lines: int = Field(default=100, ge=0, le=100_000)
    follow: bool = False


class EnterUpgradingRequest(_Message):
    command: Literal["enter_upgrading"] = "enter_upgrading"
    owner: Owner


class ExitUpgradingRequest(_Message):
    command: Literal["exit_upgrading"] = "exit_upgrading"
    owner: Owner


class LockRequest(_AppRef):
    """Take the per-app deploy lock; it is released by ``unlock`` or when the connection closes."""

    command: Literal["lock"] = "lock"
    owner: Owner


class UnlockRequest(_AppRef):
    command: Literal["unlock"] = "unlock"
    owner: Owner


class HasArtifactRequest(_Message):
    """Is ``incoming/{sha256}.tar.zst`` already on the server? (then the upload is skipped)"""

    command: Literal["has_artifact"] = "has_artifact"
    sha256: Sha256


Request = Annotated[
    HelloRequest
    | ServerInfoRequest
    | DeployRequest
    | StatusRequest
    | ListRequest
    | RoutesRequest
    | ListReleasesRequest
    | RollbackRequest
    | StopRequest
    | DeleteRequest
    | ScaleRequest
    | UpdateSecretsRequest
    | LogsRequest
    | EnterUpgradingRequest
    | ExitUpgradingRequest
    | LockRequest
    | UnlockRequest
    | HasArtifactRequest,
    Field(discriminator="command"),
]

COMMANDS: tuple[str, ...] = (
    "hello",
    "server_info",
    "deploy",
    "status",
    "list",
    "routes",
    "list_releases",
    "rollback",
    "stop",
    "delete",
    "scale",
    "update_secrets",
    "logs",
    "enter_upgrading",
    "exit_upgrading",
    "lock",
    "unlock",
    "has_artifact",
)

#: Commands refused while the server is in upgrading mode.
MUTATING_COMMANDS = frozenset(
    {"deploy", "rollback", "stop", "delete", "scale", "update_secrets", "lock"}
)

_REQUEST_ADAPTER: TypeAdapter[Request] = TypeAdapter(Request)

# --------------------------------------------------------------------------- responses (data)


class _Data(BaseModel):
    """Response payloads ignore fields they do not know, so a newer server that adds a
    field never breaks an older CLI (requests stay strict: ``extra="forbid"``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class HelloData(_Data):
    protocol_version: int
    server_version: str
    capabilities: list[str]


class ServerInfoData(_Data):
    server_version: str
    mode: Literal["normal", "upgrading"]
    upgrade_owner: str | None = None
    pid: int
    data_dir: str
    incoming_dir: str
    socket: str
    http_port: int
    https_port: int
    disk_free_bytes: int
    acme_enabled: bool
    acme_directory_url: str | None = None


class InstanceStatus(_Data):
    id: int
    state: Literal["starting", "healthy", "unhealthy", "draining", "stopped", "failed"]
    version: str
    pid: int | None = None
    port: int | None = None
    uptime_secs: float = 0.0
    in_flight: int = 0
    requests_total: int = 0
    restarts: int = 0


class CertStatus(_Data):
    host: str
    state: Literal["issued", "pending", "failed", "self_signed", "needs_dns01", "none"]
    not_after: str | None = None
    reason: str | None = None


class AppStatus(_Data):
    app: str
    env: str
    version: str | None
    state: Literal["running", "idle", "deploying", "stopped", "error"]
    desired_instances: int
    healthy_instances: int
    instances: list[InstanceStatus] = Field(default_factory=list)
    routes: list[str] = Field(default_factory=list)
    idle_timeout: int = 300
    deployed_at: str | None = None
    last_error: str | None = None
    certificates: list[CertStatus] = Field(default_factory=list)


class StatusData(_Data):
    apps: list[AppStatus]


class AppRoutes(_Data):
    app: str
    env: str
    routes: list[str]


class RoutesData(_Data):
    routes: list[AppRoutes]


class ReleaseInfo(_Data):
    version: str
    current: bool
    deployed_at: str | None = None
    commit_message: str | None = None
    git_dirty: bool | None = None


class ReleasesData(_Data):
    app: str
    env: str
    releases: list[ReleaseInfo]


class DeployData(_Data):
    app: str
    env: str
    version: str
    new_app: bool
    instances: int
    replaced: int = 0
    routes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class LogsData(_Data):
    lines: list[str]


# --------------------------------------------------------------------------- framing


def encode_frame(message: BaseModel | dict[str, Any]) -> bytes:
    """Serialise one message as a JSON line; refuse frames over the cap."""
    if isinstance(message, BaseModel):
        text = message.model_dump_json(exclude_none=False)
    else:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    data = text.encode("utf-8") + b"\n"
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(
            f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
            code="frame_too_large",
        )
    return data


class FrameDecoder:
    """Splits a byte stream into JSON-line frames (sans-I/O).

    ``feed(data)`` yields each complete line (without the newline) or, for a line over
    the cap, a :class:`ProtocolError`; after an oversized line the decoder discards bytes
    up to the next newline and carries on, so the connection stays usable.
    """

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> Iterator[bytes | ProtocolError]:
        self._buf += data
        while True:
            idx = self._buf.find(b"\n")
            if idx < 0:
                if len(self._buf) >= self._max:
                    if not self._discarding:
                        yield _too_large(self._max)
                    self._discarding = True
                    self._buf.clear()
                return
            line = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            if self._discarding:
                self._discarding = False
                continue
            if len(line) + 1 > self._max:
                yield _too_large(self._max)
                continue
            yield line

    @property
    def pending(self) -> int:
        return len(self._buf)

    def __repr__(self) -> str:
        return f"FrameDecoder(pending={len(self._buf)}, discarding={self._discarding})"


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError(f"frame exceeds the {limit}-byte limit", code="frame_too_large")


def parse_request(line: bytes | str) -> Request:
    """Parse and validate one request line; :class:`ProtocolError` names what is wrong."""
    try:
        raw = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"invalid JSON: {exc}", code="bad_json") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("a request must be a JSON object", code="bad_request")
    command = raw.get("command")
    if command not in COMMANDS:
        raise ProtocolError(
            f"unknown command {command!r}; known: {', '.join(COMMANDS)}", code="unknown_command"
        )
    try:
        return _REQUEST_ADAPTER.validate_python(raw)
    except PydanticValidationError as exc:
        raise ProtocolError(
            f"invalid {command} request: {_describe(exc)}", code="invalid_request"
        ) from exc


def _describe(exc: PydanticValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"][1:] if p != err["loc"][0]) or ".".join(
            str(p) for p in err["loc"]
        )
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def ok(data: BaseModel | dict[str, Any] | None = None) -> dict[str, Any]:
    """An ``ok`` response envelope."""
    if isinstance(data, BaseModel):
        payload: Any = data.model_dump(mode="json")
    else:
        payload = data if data is not None else {}
    return {"status": "ok", "data": payload}


def error(message: str, *, code: str = "error", hint: str | None = None) -> dict[str, Any]:
    """An ``error`` response envelope."""
    return {"status": "error", "code": code, "message": message, "hint": hint}


def error_from(exc: TakoError) -> dict[str, Any]:
    return error(exc.message, code=exc.code, hint=exc.hint)


class Response(_Data):
    status: Literal["ok", "error"]
    data: Any = None
    code: str | None = None
    message: str | None = None
    hint: str | None = None


def parse_response(line: bytes | str) -> Response:
    """Parse one response line (client side)."""
    try:
        return Response.model_validate_json(line)
    except PydanticValidationError as exc:
        raise ProtocolError(f"invalid response from tako-server: {_describe(exc)}") from exc


def check_hello(client_version: int, server_version: int) -> None:
    """Refuse to talk across protocol versions; the message says which side to upgrade."""
    if client_version != server_version:
        newer = "tako-server" if server_version < client_version else "the tako CLI"
        raise ProtocolError(
            f"protocol version mismatch: client={client_version} server={server_version}",
            code="version_mismatch",
            hint=f"upgrade {newer} so both speak the same protocol",
        )
