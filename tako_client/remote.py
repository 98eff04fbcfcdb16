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
  so do sessions (``exec``, ``run_release``: :class:`RemoteSession`, frames both ways);
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
    BackupFetchData,
    BackupFetchDoneData,
    BackupFetchDoneRequest,
    BackupFetchRequest,
    BackupListData,
    BackupListRequest,
    BackupNowData,
    BackupNowRequest,
    BackupRestoreData,
    BackupRestoreRequest,
    BackupStatusData,
    BackupStatusRequest,
    DeleteData,
    DeleteRequest,
    DeployData,
    DeployRequest,
    DiscardData,
    DiscardRequest,
    EnterUpgradingRequest,
    EofInput,
    ExecRequest,
    ExitUpgradingRequest,
    HasArtifactRequest,
    HelloData,
    HelloRequest,
    ListReleasesRequest,
    LockData,
    LockRequest,
    LogsData,
    LogsRequest,
    MaintenanceData,
    MaintenanceRequest,
    NormalModeData,
    PrepareData,
    PrepareRequest,
    ReleasesData,
    ResizeInput,
    Response,
    RollbackRequest,
    RunReleaseRequest,
    ScaleData,
    ScaleRequest,
    SecretsData,
    ServerInfoData,
    ServerInfoRequest,
    SessionExit,
    SessionOutput,
    SessionStarted,
    StatusData,
    StatusRequest,
    StdinInput,
    UnlockData,
    UnlockRequest,
    UpdateSecretsRequest,
    UpgradingData,
    WorkflowEnqueueRequest,
    WorkflowRetryRequest,
    WorkflowRunData,
    WorkflowRunsData,
    WorkflowRunsRequest,
    WorkflowsData,
    WorkflowsRequest,
    check_hello,
    encode_frame,
    parse_event,
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
        message = response.message or "tako-server reported an error"
        hint = response.hint
        if response.code == "invalid_request" and "Extra inputs are not permitted" in message:
            hint = hint or (
                "this tako-server is older than your tako and does not know that field: "
                "upgrade it first (`tako servers upgrade NAME`)"
            )
        raise RemoteError(message, code=response.code or RemoteError.code, hint=hint)
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

    async def scale(
        self, app: str, env: str, instances: int, group: str | None = None
    ) -> ScaleData:
        request = ScaleRequest(app=app, env=env, instances=instances, group=group)
        return await self.call(request, ScaleData)

    async def maintenance(
        self, app: str, env: str, enabled: bool, message: str = ""
    ) -> MaintenanceData:
        request = MaintenanceRequest(app=app, env=env, enabled=enabled, message=message)
        return await self.call(request, MaintenanceData)

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

    async def prepare(self, request: DeployRequest) -> PrepareData:
        """A deploy's first half on this server: the release extracted and prepared."""
        prepare = PrepareRequest.model_validate({**request.model_dump(), "command": "prepare"})
        return await self.call(prepare, PrepareData)

    async def discard(self, app: str, env: str, version: str, owner: str | None) -> DiscardData:
        request = DiscardRequest(app=app, env=env, version=version, owner=owner)
        return await self.call(request, DiscardData)

    async def run_release(self, request: RunReleaseRequest) -> RemoteSession:
        return await self._open_session(request)

    async def exec(self, request: ExecRequest) -> RemoteSession:
        return await self._open_session(request)

    async def _open_session(self, request: BaseModel) -> RemoteSession:
        """Send a session's request on its own control stream and read its first answer."""
        channel = await self.connection.open_control(self.socket_path)
        try:
            await channel.send(encode_frame(request))
            data = raise_for_error(parse_response(await channel.receive(REQUEST_TIMEOUT)))
            started = parse_data(SessionStarted, data, str(getattr(request, "command", "")))
        except BaseException:
            await channel.close()
            raise
        return RemoteSession(channel, started)

    async def workflows(self, app: str, env: str) -> WorkflowsData:
        return await self.call(WorkflowsRequest(app=app, env=env), WorkflowsData)

    async def workflow_runs(
        self, app: str, env: str, group: str | None, failed: bool, limit: int
    ) -> WorkflowRunsData:
        request = WorkflowRunsRequest(app=app, env=env, group=group, failed=failed, limit=limit)
        return await self.call(request, WorkflowRunsData)

    async def workflow_retry(self, app: str, env: str, run_id: int) -> WorkflowRunData:
        request = WorkflowRetryRequest(app=app, env=env, run_id=run_id)
        return await self.call(request, WorkflowRunData)

    async def workflow_enqueue(self, request: WorkflowEnqueueRequest) -> WorkflowRunData:
        return await self.call(request, WorkflowRunData)

    async def backup_now(self, app: str, env: str) -> BackupNowData:
        return await self.call(BackupNowRequest(app=app, env=env), BackupNowData)

    async def backup_list(self, app: str, env: str) -> BackupListData:
        return await self.call(BackupListRequest(app=app, env=env), BackupListData)

    async def backup_status(self, app: str, env: str) -> BackupStatusData:
        return await self.call(BackupStatusRequest(app=app, env=env), BackupStatusData)

    async def backup_fetch(self, app: str, env: str, backup_id: str) -> BackupFetchData:
        request = BackupFetchRequest(app=app, env=env, backup_id=backup_id)
        return await self.call(request, BackupFetchData)

    async def backup_fetch_done(self, app: str, env: str, backup_id: str) -> BackupFetchDoneData:
        request = BackupFetchDoneRequest(app=app, env=env, backup_id=backup_id)
        return await self.call(request, BackupFetchDoneData)

    async def backup_restore(self, app: str, env: str, backup_id: str) -> BackupRestoreData:
        request = BackupRestoreRequest(app=app, env=env, backup_id=backup_id)
        return await self.call(request, BackupRestoreData)

    async def enter_upgrading(self, owner: str) -> UpgradingData:
        return await self.call(EnterUpgradingRequest(owner=owner), UpgradingData)

    async def exit_upgrading(self, owner: str) -> NormalModeData:
        return await self.call(ExitUpgradingRequest(owner=owner), NormalModeData)


class RemoteSession:
    """One running session (``exec``, ``run_release``) on its own control stream.

    :meth:`events` yields the server's output events and ends after the exit event;
    :meth:`send` sends input frames (one at a time); :meth:`close` ends the session (the
    server then stops the process if it still runs).
    """

    def __init__(self, channel: ControlChannel, started: SessionStarted) -> None:
        self._channel = channel
        self._send_lock = asyncio.Lock()
        self.started = started

    def __repr__(self) -> str:
        return f"RemoteSession({self._channel.where}, pid={self.started.pid})"

    async def events(
        self, *, timeout: float | None = None
    ) -> AsyncGenerator[SessionOutput | SessionExit, None]:
        """Events until the exit event; ``timeout`` bounds the wait for each one."""
        while True:
            data = raise_for_error(parse_response(await self._channel.receive(timeout)))
            event = parse_event(data)
            yield event
            if isinstance(event, SessionExit):
                return

    async def send(self, frame: StdinInput | EofInput | ResizeInput) -> None:
        async with self._send_lock:
            await self._channel.send(encode_frame(frame))

    async def close(self) -> None:
        await self._channel.close()
