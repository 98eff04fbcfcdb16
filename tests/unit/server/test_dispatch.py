"""Dispatch: the handler table derived from the protocol and the one mutation guard."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tako_common.errors import TakoError
from tako_common.protocol import COMMANDS, MUTATING_COMMANDS, LogsData, parse_request
from tako_common.tasks import TaskGroup
from tako_server.context import ServerContext
from tako_server.handlers import Handlers
from tako_server.locks import DeployLocks
from tako_server.secrets_store import SecretsStore
from tako_server.settings import ServerSettings
from tako_server.state import StateStore
from tests.unit.common.test_protocol_registry import SAMPLES


class NoSupervisor:
    """The guard decides before any handler runs; nothing here is ever called."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"supervisor.{name} used by a guard test")


@pytest.fixture
def handlers(tmp_path: Path) -> Handlers:
    settings = ServerSettings(data_dir=tmp_path, socket=tmp_path / "tako.sock")
    state = StateStore.open(tmp_path / "state.sqlite3")
    ctx = ServerContext(
        settings=settings,
        state=state,
        secrets=SecretsStore.open(tmp_path / "secret.key", state),
        supervisor=NoSupervisor(),  # type: ignore[arg-type]
        locks=DeployLocks(settings.layout),
        tasks=TaskGroup(),
    )
    return Handlers(ctx)


class Recorder:
    """A stand-in handler: records calls, optionally waits for ``release`` or raises."""

    def __init__(self, raises: TakoError | None = None) -> None:
        self.calls: list[str] = []
        self.release: asyncio.Event | None = None
        self.raises = raises

    async def __call__(self, req: Any, connection: int) -> LogsData:
        self.calls.append(req.command)
        if self.release is not None:
            await self.release.wait()
        if self.raises is not None:
            raise self.raises
        return LogsData(lines=[req.command])


def request(command: str) -> Any:
    return parse_request(json.dumps({"command": command, **SAMPLES[command]}))


def test_the_handler_table_covers_exactly_the_commands(handlers: Handlers) -> None:
    assert list(handlers.table) == list(COMMANDS)
    defined = {name.removeprefix("on_") for name in dir(Handlers) if name.startswith("on_")}
    assert defined == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
async def test_upgrading_mode_refuses_every_mutating_command_and_allows_the_others(
    handlers: Handlers, command: str
) -> None:
    handlers.ctx.state.set_server_mode("upgrading", "upgrade-7", "2026-01-01T00:00:00Z")
    recorder = Recorder()
    handlers.table[command] = recorder
    reply = await handlers.dispatch(request(command), connection=1)
    if command in MUTATING_COMMANDS:
        assert reply["code"] == "upgrading", reply
        assert f"'{command}' is refused" in reply["message"] and "upgrade-7" in reply["message"]
        assert recorder.calls == []
    else:
        assert reply == {"status": "ok", "data": {"lines": [command]}}
        assert recorder.calls == [command]
    assert handlers.ctx.guard.in_flight == 0


@pytest.mark.parametrize("command", sorted(MUTATING_COMMANDS))
async def test_a_mutating_command_is_counted_in_flight_until_it_ends(
    handlers: Handlers, command: str
) -> None:
    recorder = Recorder(raises=TakoError("boom", code="x"))
    recorder.release = asyncio.Event()
    handlers.table[command] = recorder
    running = asyncio.create_task(handlers.dispatch(request(command), connection=1))
    await asyncio.sleep(0)
    assert handlers.ctx.guard.in_flight == 1
    recorder.release.set()
    assert (await running)["code"] == "x"
    assert handlers.ctx.guard.in_flight == 0
    assert not handlers.ctx.locks.is_busy("web/production")


@pytest.mark.parametrize("command", ["deploy", "rollback", "update_secrets", "stop", "scale"])
async def test_an_exclusive_command_is_refused_while_another_operation_of_the_app_runs(
    handlers: Handlers, command: str
) -> None:
    first = Recorder()
    first.release = asyncio.Event()
    handlers.table["delete"] = first
    handlers.table[command] = second = Recorder()
    running = asyncio.create_task(handlers.dispatch(request("delete"), connection=1))
    await asyncio.sleep(0)
    reply = await handlers.dispatch(request(command), connection=2)
    assert reply["code"] == "busy"
    assert reply["message"] == (
        f"a delete of web/production is already in progress; '{command}' refused"
    )
    assert second.calls == []
    first.release.set()
    assert (await running)["status"] == "ok"
    assert (await handlers.dispatch(request(command), connection=2))["status"] == "ok"


async def test_an_exclusive_command_is_refused_when_another_connection_holds_the_lock(
    handlers: Handlers,
) -> None:
    assert (await handlers.dispatch(request("lock"), connection=1))["status"] == "ok"
    handlers.table["scale"] = recorder = Recorder()
    reply = await handlers.dispatch(request("scale"), connection=2)
    assert reply["code"] == "locked" and "alice@laptop:1" in reply["message"]
    assert (await handlers.dispatch(request("scale"), connection=1))["status"] == "ok"
    assert recorder.calls == ["scale"]


async def test_a_deploy_acts_for_its_owner_across_connections(handlers: Handlers) -> None:
    assert (await handlers.dispatch(request("lock"), connection=1))["status"] == "ok"
    handlers.table["deploy"] = Recorder()
    line = {"command": "deploy", **SAMPLES["deploy"], "owner": "alice@laptop:1"}
    reply = await handlers.dispatch(parse_request(json.dumps(line)), connection=2)
    assert reply["status"] == "ok"
