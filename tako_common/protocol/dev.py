"""The dev edge protocol: ``tako dev`` sessions and commands <-> the local dev edge.

The dev edge is the small HTTPS front ``tako dev`` starts on the developer's machine (the
server's edge code, run by :mod:`tako_server.devedge`); it is not ``tako-server``, so its
messages live here, apart from the management registry of :mod:`.requests`.

Transport: JSON lines over ``$TAKO_HOME/dev/edge.sock`` (a Unix socket in a 0700
directory), framed and parsed like the management protocol (:mod:`.framing`: the 1 MiB
line cap, strict JSON, ``ok``/``error`` envelopes).

Conversation rules:

- ``register`` opens a *session*: one reply (:class:`DevRegistered` or an error), then the
  connection stays open. The client sends ``state`` lines (never answered); the edge sends
  :class:`DevEvent` lines (``stop``: leave now; ``log``: a line for the developer).
  ``leave`` ends the session with a :class:`DevLeft` reply; a closed connection ends it
  too, and the app's routes go at once;
- ``list`` and ``stop`` are one request, one reply, one connection;
- the edge process's first stdout line is an envelope: ``ok`` with
  :class:`DevEdgeStarted`, or ``error`` (``code`` ``port_in_use`` names the port and,
  when it can, the process holding it);
- requests are strict (unknown fields refused, integers are JSON integers); every
  refusal names the rule it broke.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic import ValidationError as PydanticValidationError

from tako_common.errors import ProtocolError, TakoError
from tako_common.hosts import normalize_host
from tako_common.protocol.fields import AppName, Count, Flag
from tako_common.protocol.framing import describe, loads_strict
from tako_common.protocol.responses import Data
from tako_common.routes import parse_route

#: The certificate "domain" that serves clients without a matching name (see tls/store).
DEFAULT_CERT = "default"
MAX_ROUTES = 64
MAX_PEM = 64 * 1024
DevStateName = Literal["starting", "up", "down"]


def _route(value: str) -> str:
    try:
        return parse_route(value).text
    except TakoError as exc:
        raise ValueError(exc.message) from exc


def _absolute(value: str) -> str:
    if not os.path.isabs(value) or "\x00" in value or len(value) > 4096:
        raise ValueError("must be an absolute path (at most 4096 characters, no NUL)")
    return value


def _cert_domain(value: str) -> str:
    name = normalize_host(value)
    if name == DEFAULT_CERT:
        return name
    try:
        parse_route(name)
    except TakoError as exc:
        raise ValueError(f"certificate domain: {exc.message}") from exc
    if "/" in name:
        raise ValueError("a certificate domain is a host, without a path")
    return name


def _pem(value: str) -> str:
    if "-----BEGIN " not in value or len(value) > MAX_PEM:
        raise ValueError(f"must be one PEM document of at most {MAX_PEM} bytes")
    return value


RouteText = Annotated[str, AfterValidator(_route)]
AbsPath = Annotated[str, AfterValidator(_absolute)]
CertDomain = Annotated[str, AfterValidator(_cert_domain)]
Pem = Annotated[str, AfterValidator(_pem)]
Port = Annotated[Count, Field(ge=1, le=65535)]


class DevMessage(BaseModel):
    """Base of every dev edge request: strict about fields, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DevCertificate(DevMessage):
    """A certificate the client issued from its local CA, for one host (or ``default``)."""

    domain: CertDomain
    cert_pem: Pem
    key_pem: Pem = Field(repr=False)


class DevRegister(DevMessage):
    """Open a session: route ``routes`` to the app ``app`` while this connection lives."""

    command: Literal["register"] = "register"
    client_version: str = Field(min_length=1, max_length=64)
    app: AppName
    routes: list[RouteText] = Field(min_length=1, max_length=MAX_ROUTES)
    app_dir: AbsPath
    public_dir: AbsPath | None = None
    pid: Count = Field(ge=1)
    certificates: list[DevCertificate] = Field(default_factory=list, max_length=MAX_ROUTES + 1)


class DevState(DevMessage):
    """The session's app changed state: ``up`` on ``port``, ``starting``, or ``down``."""

    command: Literal["state"] = "state"
    state: DevStateName
    port: Port | None = None
    message: str = Field(default="", max_length=1024)

    @model_validator(mode="after")
    def _port_when_up(self) -> DevState:
        if self.state == "up" and self.port is None:
            raise ValueError("state 'up' needs the port the app listens on")
        return self


class DevLeave(DevMessage):
    """End the session (the reply says how many apps are left)."""

    command: Literal["leave"] = "leave"


class DevList(DevMessage):
    """The apps served right now."""

    command: Literal["list"] = "list"


class DevStop(DevMessage):
    """Stop one app's ``tako dev`` (``app``) or every one (``all``)."""

    command: Literal["stop"] = "stop"
    app: AppName | None = None
    all: Flag = False

    @model_validator(mode="after")
    def _one_target(self) -> DevStop:
        if (self.app is None) == (not self.all):
            raise ValueError("name one app or set all, not both and not neither")
        return self


DevRequest = Annotated[
    DevRegister | DevState | DevLeave | DevList | DevStop, Field(discriminator="command")
]
DEV_COMMANDS = ("register", "state", "leave", "list", "stop")
_ADAPTER: TypeAdapter[DevRequest] = TypeAdapter(DevRequest)


def parse_dev_request(line: bytes | str) -> DevRequest:
    """One dev edge request line, validated; :class:`ProtocolError` names what is wrong."""
    raw = loads_strict(line)
    if not isinstance(raw, dict):
        raise ProtocolError("a request must be a JSON object", code="bad_request")
    command = raw.get("command")
    if command not in DEV_COMMANDS:
        raise ProtocolError(
            f"unknown dev edge command {command!r}; known: {', '.join(DEV_COMMANDS)}",
            code="unknown_command",
        )
    try:
        return _ADAPTER.validate_python(raw)
    except PydanticValidationError as exc:
        raise ProtocolError(
            f"invalid {command} request: {describe(exc)}", code="invalid_request"
        ) from exc


# --------------------------------------------------------------------------- replies


class DevAppInfo(Data):
    """One app the dev edge serves."""

    name: str
    urls: list[str]
    state: str
    port: int | None = None
    pid: int
    app_dir: str
    message: str = ""


class DevRegistered(Data):
    urls: list[str]
    https_port: int
    http_port: int
    edge_pid: int


class DevListing(Data):
    apps: list[DevAppInfo]
    https_port: int
    http_port: int
    edge_pid: int
    version: str


class DevStopped(Data):
    stopped: list[str]


class DevLeft(Data):
    remaining: int


class DevEdgeStarted(Data):
    """The dev edge's start-up report (its first stdout line)."""

    https_port: int
    http_port: int
    pid: int
    version: str
    notes: list[str] = Field(default_factory=list)


class DevEvent(Data):
    """Edge -> session: ``stop`` (leave now; ``text`` says who asked) or ``log``."""

    event: Literal["stop", "log"]
    text: str = ""


__all__ = [
    "DEFAULT_CERT",
    "DevAppInfo",
    "DevCertificate",
    "DevEdgeStarted",
    "DevEvent",
    "DevLeave",
    "DevLeft",
    "DevList",
    "DevListing",
    "DevRegister",
    "DevRegistered",
    "DevRequest",
    "DevState",
    "DevStateName",
    "DevStop",
    "DevStopped",
    "parse_dev_request",
]
