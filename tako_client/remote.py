"""The management-protocol client: typed requests to one tako-server over an SSH connection.

Rules:

- :class:`RemoteServer` is the CLI's only API to a server: every command calls one of its
  typed methods (one per protocol command the CLI uses) and gets a typed answer model
  from :mod:`tako_common.protocol`; no caller builds a request dict or reads a response
  dict. :meth:`RemoteServer.request` and :meth:`RemoteServer.stream` are the raw
  transport under those methods;
- one control stream per :class:`RemoteServer`, opened on first use; requests on it are
  sent one at a time (a lock), so a deploy lock taken with ``lock`` lives as long as the
  stream (the server releases it when the stream closes);
- streams (``logs --follow``) get their own control stream, closed when iteration stops;
- every response is parsed with :func:`tako_common.protocol.parse_response`; an ``error``
  response becomes :class:`RemoteError` carrying the server's ``code`` and ``hint``; an
  answer of the wrong shape is a :class:`ProtocolError` naming the command;
- timeouts come from the protocol's registry: commands whose model is ``slow`` wait
  :data:`DEPLOY_TIMEOUT`, the others :data:`REQUEST_TIMEOUT`;
- ``hello`` checks the protocol version with :func:`check_hello` before anything else.
Message shapes are owned by :mod:`tako_common.protocol`; this module adds none.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from tako_client.ssh import DEFAULT_SOCKET, Connection, ControlChannel
from tako_common import __version__
from tako_common.errors import ProtocolError, RemoteError
from tako_common.protocol import (
    PROTOCOL_VERSION,
    SLOW_COMMANDS,
    ArtifactData,
    DeleteData,
    DeleteRequest,
    DeployData,
    DeployRequest,
    EnterUpgradingRequest,
    ExitUpgradingRequest,
    HasArtifactRequest,
    HelloData,
    HelloRequest,
    ListReleasesRequest,
    LockData,
    LockRequest,
    LogsData,
    LogsRequest,
    NormalModeData,
    ReleasesData,
    Response,
    RollbackRequest,
    ScaleData,
    ScaleRequest,
    SecretsData,
    ServerInfoData,
    ServerInfoRequest,
    StatusData,
    StatusRequest,
    UnlockData,
    UnlockRequest,
    UpdateSecretsRequest,
    UpgradingData,
    check_hello,
    encode_frame,
    parse_response,
)

M = TypeVar("M", bound=BaseModel)

REQUEST_TIMEOUT = 60.0
#: Commands that prepare releases or roll instances (prep, health checks, draining) may
#: take minutes; their models are ``slow`` and they get this timeout unless the caller
#: gives one.
DEPLOY_TIMEOUT = 900.0


def default_timeout(message: BaseModel | dict[str, Any]) -> float:
    if isinstance(message, dict):
        command = message.get("command")
    else:
        command = getattr(message, "command", "")
    return DEPLOY_TIMEOUT if command in SLOW_COMMANDS else REQUEST_TIMEOUT


def raise_for_error(response: Response) -> Any:
    """The ``data`` of an ``ok`` response; :class:`RemoteError` for an ``error`` one."""
    if response.status == "error":
        raise RemoteError(
            response.message or "tako-server reported an error",
            code=response.code or RemoteError.code,
            hint=response.hint,
        )
    return response.data


def parse_data(model: type[M], data: Any, command: str) -> M:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ProtocolError(
            f"tako-server answered {command} with an unexpected shape: {exc.errors()[0]['msg']}",
            hint="the CLI and tako-server versions may differ; upgrade the older one",
        ) from exc


class RemoteServer:
    """Requests to one tako-server; use as ``async with RemoteServer(conn) as server``."""

    def __init__(self, connection: Connection, *, socket_path: str = DEFAULT_SOCKET) -> None:
        self.connection = connection
        self.socket_path = socket_path
        self._channel: ControlChannel | None = None
        self._lock = asyncio.Lock()
        self.hello_data: HelloData | None = None

    def __repr__(self) -> str:
        state = "open" if self._channel is not None else "idle"
        return f"RemoteServer({self.where}, {state})"

    @property
    def where(self) -> str:
        return self.connection.target.display

    async def __aenter__(self) -> RemoteServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    # -- core ----------------------------------------------------------------------------

    async def request(
        self, message: BaseModel | dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Send one request and return the ``data`` of its response (slow commands get
        :data:`DEPLOY_TIMEOUT` by default)."""
        if timeout is None:
            timeout = default_timeout(message)
        frame = encode_frame(message)
        async with self._lock:
            if self._channel is None:
                self._channel = await self.connection.open_control(self.socket_path)
            try:
                await self._channel.send(frame)
                line = await self._channel.receive(timeout)
            except BaseException:
                await self.close()  # a late answer must never be read as the next one's
                raise
        return raise_for_error(parse_response(line))

    async def call(self, message: BaseModel, model: type[M], *, timeout: float | None = None) -> M:
        """:meth:`request` and validate the data as ``model``."""
        command = str(getattr(message, "command", type(message).__name__))
        return parse_data(model, await self.request(message, timeout=timeout), command)

    async def stream(self, message: BaseModel | dict[str, Any]) -> AsyncGenerator[Any, None]:
        """Yield the ``data`` of each response line of a streaming request on its own channel.

        The channel closes when the generator does: wrap it in ``contextlib.aclosing`` to
        close it as soon as the caller stops iterating.
        """
        channel = await self.connection.open_control(self.socket_path)
        try:
            await channel.send(encode_frame(message))
            while True:
                yield raise_for_error(parse_response(await channel.receive()))
        finally:
            await channel.close()

    # -- commands ------------------------------------------------------------------------

    async def hello(self) -> HelloData:
        """Say hello and refuse a server speaking another protocol version."""
        request = HelloRequest(protocol_version=PROTOCOL_VERSION, client_version=__version__)
        data = await self.call(request, HelloData)
        check_hello(PROTOCOL_VERSION, data.protocol_version)
        self.hello_data = data
        return data

    async def server_info(self) -> ServerInfoData:
        return await self.call(ServerInfoRequest(), ServerInfoData)

    async def status(self, app: str | None = None, env: str | None = None) -> StatusData:
        return await self.call(StatusRequest(app=app, env=env), StatusData)

    async def list_releases(self, app: str, env: str) -> ReleasesData:
        return await self.call(ListReleasesRequest(app=app, env=env), ReleasesData)

    async def deploy(self, request: DeployRequest, *, timeout: float | None = None) -> DeployData:
        return await self.call(request, DeployData, timeout=timeout)

    async def rollback(self, app: str, env: str, version: str) -> DeployData:
        request = RollbackRequest(app=app, env=env, version=version)
        return await self.call(request, DeployData)

    async def delete(self, app: str, env: str) -> DeleteData:
        return await self.call(DeleteRequest(app=app, env=env), DeleteData)

    async def scale(self, app: str, env: str, instances: int) -> ScaleData:
        request = ScaleRequest(app=app, env=env, instances=instances)
        return await self.call(request, ScaleData)

    async def update_secrets(self, app: str, env: str, secrets: dict[str, str]) -> SecretsData:
        request = UpdateSecretsRequest(app=app, env=env, secrets=secrets)
        return await self.call(request, SecretsData)

    async def logs(self, app: str, env: str, lines: int = 100) -> LogsData:
        return await self.call(LogsRequest(app=app, env=env, lines=lines), LogsData)

    async def follow_logs(self, app: str, env: str, lines: int = 100) -> AsyncGenerator[str, None]:
        """Log lines as they come (the history first) until the caller stops iterating."""
        request = LogsRequest(app=app, env=env, lines=lines, follow=True)
        async with aclosing(self.stream(request)) as stream:  # closes its channel at once
            async for data in stream:
                for line in parse_data(LogsData, data, "logs").lines:
                    yield line

    async def lock(self, app: str, env: str, owner: str) -> LockData:
        return await self.call(LockRequest(app=app, env=env, owner=owner), LockData)

    async def unlock(self, app: str, env: str, owner: str) -> UnlockData:
        return await self.call(UnlockRequest(app=app, env=env, owner=owner), UnlockData)

    async def has_artifact(self, sha256: str) -> bool:
        """Does the server already hold ``incoming/{sha256}.tar.zst``? (skips the upload)"""
        return (await self.call(HasArtifactRequest(sha256=sha256), ArtifactData)).present

    async def enter_upgrading(self, owner: str) -> UpgradingData:
        return await self.call(EnterUpgradingRequest(owner=owner), UpgradingData)

    async def exit_upgrading(self, owner: str) -> NormalModeData:
        return await self.call(ExitUpgradingRequest(owner=owner), NormalModeData)
