"""A deploy with a release command: prepare everywhere, run it once on the leader, roll out.

Steps on every server, in parallel (the lock, preflight and upload of
:func:`tako_client.deploy.deploy_to_server` come first): ``prepare`` (the release is
extracted and prepared, nothing switches), then wait for the :class:`ReleaseGate`, then
``deploy`` (the server adopts the prepared release and rolls out). The leader, the first
server of the environment in tako.toml, runs the command between its ``prepare`` and its
wait (``run_release``, output streamed here as ``leader | line``) and opens the gate.

Rules:

- the command runs exactly once per deploy, on the leader, after the leader prepared the
  release and before any server starts its rolling update; under the deploy lock (the
  leader's ``run_release`` acts for the lock's owner), so two deploys never run it at once;
- it fails when it exits non-zero or runs past its timeout (``--release-timeout``, else
  the server's ``release_timeout``, default 10 minutes). Then, and when the leader fails
  before the command could run, the gate stays shut: every server sends ``discard`` for
  the release it prepared, nothing switches, ``current`` stays, and the summary names the
  command and shows its last output lines;
- another server that fails before the gate only fails itself; once the gate is open
  each server rolls out on its own, as a deploy without a release command does;
- rollbacks never run the command (docs/cli.md says why).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from tako_client import output
from tako_client.deploy import DeployError, ServerChannel
from tako_client.fanout import HostResult, fan_out
from tako_client.global_config import ServerEntry
from tako_client.oneoff import OutputSink, relay
from tako_client.remote import RemoteServer
from tako_client.sessions import Session, open_session
from tako_client.ssh import SshClient
from tako_common.errors import TakoError
from tako_common.protocol import DeployRequest, RunReleaseRequest, SessionExit

T = TypeVar("T")

#: The capability a server announces when it runs release commands.
CAPABILITY = "release_command"


class ReleaseFailed(DeployError):
    code = "release_failed"


class ReleaseAborted(DeployError):
    code = "release_aborted"


@dataclass(frozen=True)
class ReleaseStep:
    """The release command of a deploy, the server that runs it, and its timeout."""

    command: str
    leader: str
    timeout: int | None = None


def leader_of(servers: Sequence[str]) -> str:
    """The environment's leader: the first of its servers, in tako.toml order."""
    if not servers:
        raise TakoError("an environment without servers has no leader to run its release")
    return servers[0]


def release_step(
    command: str | None, servers: Sequence[str], timeout: int | None
) -> ReleaseStep | None:
    """The step of a deploy whose environment resolves to ``command`` (None: no step)."""
    if not command:
        return None
    return ReleaseStep(command, leader_of(servers), timeout)


def release_failure(
    step: ReleaseStep, result: SessionExit, tail: list[str], timeout: int | None = None
) -> ReleaseFailed | None:
    """The error of a finished release command (``timeout``: the limit the server applied);
    ``None`` when it succeeded."""
    if result.exit_code == 0 and not result.timed_out:
        return None
    if result.timed_out:
        what = f"timed out after {timeout}s" if timeout else "timed out"
    else:
        what = f"failed with exit code {result.exit_code}"
        if result.signal:
            what += f" ({result.signal})"
    lines = "\n".join(f"    {line}" for line in tail) if tail else "    (it printed nothing)"
    return ReleaseFailed(
        f"release command `{step.command}` {what} on {step.leader}",
        hint=f"last output lines:\n{lines}\nno server switched: each keeps its current release",
    )


@dataclass
class ReleaseGate:
    """Shut until the leader's release command succeeded; then open for every server.

    ``shut(reason)`` keeps it shut for good (the command failed or could not run); the
    first decision wins, later ones are ignored.
    """

    _decided: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None

    def open(self) -> None:
        self._decided.set()

    def shut(self, reason: str) -> None:
        if not self._decided.is_set():
            self.reason = reason
            self._decided.set()

    @property
    def is_decided(self) -> bool:
        return self._decided.is_set()

    async def wait(self) -> str | None:
        """``None`` when the servers may roll out; else why they may not."""
        await self._decided.wait()
        return self.reason


class ReleaseCoordinator:
    """Runs the step on each server between its upload and its rollout."""

    def __init__(self, step: ReleaseStep) -> None:
        self.step = step
        self.gate = ReleaseGate()

    def __repr__(self) -> str:
        return f"ReleaseCoordinator({self.step.leader}, decided={self.gate.is_decided})"

    def hook(self, name: str) -> Callable[[ServerChannel, DeployRequest], Awaitable[None]]:
        """What ``deploy_to_server`` runs on server ``name`` before its ``deploy``."""

        async def before_rollout(channel: ServerChannel, request: DeployRequest) -> None:
            await self._before_rollout(name, channel.remote, request)

        return before_rollout

    async def _before_rollout(
        self, name: str, server: RemoteServer, request: DeployRequest
    ) -> None:
        _require_capability(server)
        await server.prepare(request)
        if name == self.step.leader:
            failure = await self._run_command(server, request)
            if failure is not None:
                self.gate.shut(f"the release command failed on {self.step.leader}")
                await _discard(server, request)
                raise failure
            self.gate.open()
        reason = await self.gate.wait()
        if reason is not None:
            await _discard(server, request)
            raise ReleaseAborted(
                f"deploy aborted: {reason}", hint="nothing switched on this server"
            )

    async def _run_command(
        self, server: RemoteServer, request: DeployRequest
    ) -> ReleaseFailed | None:
        step = self.step
        run = RunReleaseRequest(
            app=request.app,
            env=request.env,
            version=request.version,
            run=step.command,
            timeout=step.timeout,
            owner=request.owner,
        )
        output.section("Release")
        output.line(f"{step.leader}: running `{step.command}`")
        session = await server.run_release(run)
        sink = OutputSink(prefix=step.leader)
        result = await relay(session, sink)
        failure = release_failure(step, result, sink.tail.as_list(), session.started.timeout)
        if failure is None:
            output.success(f"release command finished on {step.leader} ({result.duration:.1f}s)")
        else:
            output.error(failure.message)
        return failure

    def leader_failed(self, exc: BaseException) -> None:
        """The leader failed before its command decided anything: nobody may roll out."""
        why = exc.message if isinstance(exc, TakoError) else f"{type(exc).__name__}: {exc}"
        self.gate.shut(f"the release command could not run on {self.step.leader} ({why})")


def _require_capability(server: RemoteServer) -> None:
    capabilities = server.hello_data.capabilities if server.hello_data else []
    if CAPABILITY not in capabilities:
        raise DeployError(
            f"tako-server on {server.where} cannot run release commands (it is too old)",
            hint="upgrade it with `tako servers upgrade NAME`, or remove `release` from tako.toml",
        )


async def _discard(server: RemoteServer, request: DeployRequest) -> None:
    """Best effort: the server also drops the release when this connection closes."""
    with contextlib.suppress(TakoError, OSError):
        await server.discard(request.app, request.env, request.version, request.owner)


async def on_servers(
    client: SshClient,
    servers: Sequence[ServerEntry],
    operation: Callable[[Session], Awaitable[T]],
    coordinator: ReleaseCoordinator,
) -> list[HostResult[T]]:
    """:func:`tako_client.sessions.on_servers`, telling the coordinator when the leader
    fails at any point (its connection included), so no server waits for it forever."""

    async def one(entry: ServerEntry) -> T:
        try:
            async with open_session(client, entry) as session:
                return await operation(session)
        except BaseException as exc:
            if entry.name == coordinator.step.leader:
                coordinator.leader_failed(exc)
            raise

    return await fan_out(servers, lambda e: e.name, one)
