"""``tako workflows ls | runs | retry RUN_ID | enqueue GROUP``: the app's workflow queue.

Rules:

- ``ls`` asks every server of the environment (or ``--server``) for its groups: workers
  wanted and running, restarts, and runs queued / running / failed / done (a shared
  PostgreSQL queue shows the same counts on every server);
- ``runs``, ``retry`` and ``enqueue`` ask one server (the first, or ``--server``): a
  single-server environment's queue lives there, a multi-server one's in PostgreSQL;
- ``enqueue`` parses ``--payload`` as JSON before connecting: malformed JSON or a group
  not in tako.toml is refused locally, naming the rule, and nothing is sent;
- any server's failure is printed with its reason and the exit code is 1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer

from tako_client import output
from tako_client.appctx import AppContext, load_app, servers_of
from tako_client.commands.servers import align
from tako_client.fanout import HostResult, failed
from tako_client.global_config import ServerEntry
from tako_client.sessions import Session, on_servers
from tako_client.ssh import SshClient
from tako_common.config import workflow_groups
from tako_common.errors import ValidationError
from tako_common.protocol import (
    WorkflowEnqueueRequest,
    WorkflowRunData,
    WorkflowRunInfo,
    WorkflowRunsData,
    WorkflowsData,
)

EnvOpt = typer.Option("production", "--env", "-e", help="Environment.")
ConfigOpt = typer.Option(None, "--config", "-c", help="Path to tako.toml (app dir = its parent).")
ServerOpt = typer.Option(None, "--server", "-s", help="Only this server.")
T = TypeVar("T")

workflows_app = typer.Typer(name="workflows", help="Background workers and their job queue.")


def register(app: typer.Typer) -> None:
    workflows_app.command("ls", help="Groups, workers and run counts per server.")(ls)
    workflows_app.command("runs", help="Recent runs, newest first.")(runs)
    workflows_app.command("retry", help="Queue a failed run again.")(retry)
    workflows_app.command("enqueue", help="Enqueue a run of a group.")(enqueue)
    app.add_typer(workflows_app, name="workflows")



def _run(
    servers: list[ServerEntry], operation: Callable[[Session], Awaitable[T]], what: str
) -> list[HostResult[T]]:
    results = asyncio.run(on_servers(SshClient.from_env(), servers, operation))
    _fail_if_any(results, what)
    return results


def _fail_if_any(results: Sequence[HostResult[Any]], what: str) -> None:
    bad = failed(results)
    for result in bad:
        assert result.error is not None
        output.error(f"{result.server}: {result.error.message}", result.error.hint)
    if bad:
        output.error(f"{what} failed on {len(bad)} of {len(results)} server(s)")
        raise typer.Exit(1)


def ls(env: str = EnvOpt, server: str | None = ServerOpt, config: str | None = ConfigOpt) -> None:
    """Every server's workflow groups: workers and runs by state."""
    ctx = load_app(config, None, env)

    async def one(session: Session) -> WorkflowsData:
        return await session.remote.workflows(ctx.app, env)

    for result in _run(servers_of(ctx, server), one, "listing"):
        assert result.value is not None
        output.section(f"{result.server} ({result.value.storage} queue)")
        rows: list[tuple[str, ...]] = [
            ("GROUP", "WORKERS", "RUNNING", "QUEUED", "IN PROGRESS", "FAILED", "DONE")
        ]
        for g in result.value.groups:
            wanted = "0 (on demand)" if g.workers == 0 else str(g.workers)
            rows.append((g.name, wanted, str(g.running), str(g.queued), str(g.running_runs),
                         str(g.failed), str(g.done)))
        for row in align(rows):
            output.line(row)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _run_row(run: WorkflowRunInfo) -> tuple[str, ...]:
    error = (run.last_error or "").splitlines()[0][:80] if run.last_error else ""
    attempts = f"{run.attempts}/{run.retries + 1}"
    return (str(run.id), run.group, run.state, attempts, _when(run.created_at), error)


def runs(
    env: str = EnvOpt,
    group: str | None = typer.Option(None, "--group", "-g", help="Only this group."),
    only_failed: bool = typer.Option(False, "--failed", help="Only runs that failed for good."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="At most this many."),
    server: str | None = ServerOpt,
    config: str | None = ConfigOpt,
) -> None:
    """Recent runs (newest first), with attempts and the last error."""
    ctx = load_app(config, None, env)
    if group is not None:
        _check_group(ctx, group)

    async def one(session: Session) -> WorkflowRunsData:
        return await session.remote.workflow_runs(ctx.app, env, group, only_failed, limit)

    data = _run(servers_of(ctx, server)[:1], one, "listing runs")[0].value
    assert data is not None
    if not data.runs:
        output.line("No runs." if not only_failed else "No failed runs.")
        return
    rows: list[tuple[str, ...]] = [("ID", "GROUP", "STATE", "ATTEMPTS", "CREATED", "LAST ERROR")]
    rows += [_run_row(run) for run in data.runs]
    for row in align(rows):
        output.line(row)


def retry(
    run_id: int = typer.Argument(..., min=1, help="The run to queue again."),
    env: str = EnvOpt,
    server: str | None = ServerOpt,
    config: str | None = ConfigOpt,
) -> None:
    """Queue a failed run again, with a fresh count of retries."""
    ctx = load_app(config, None, env)

    async def one(session: Session) -> WorkflowRunData:
        return await session.remote.workflow_retry(ctx.app, env, run_id)

    data = _run(servers_of(ctx, server)[:1], one, "retry")[0].value
    assert data is not None
    output.success(f"run {data.run.id} of {data.run.group} is queued again")


def enqueue(
    group: str = typer.Argument(..., help="The workflow group."),
    payload: str = typer.Option("null", "--payload", "-p", help="The run's payload (JSON)."),
    delay: float = typer.Option(0.0, "--delay", min=0.0, help="Seconds before it may run."),
    key: str | None = typer.Option(None, "--key", help="Idempotency key (enqueued once)."),
    env: str = EnvOpt,
    server: str | None = ServerOpt,
    config: str | None = ConfigOpt,
) -> None:
    """Enqueue a run of GROUP."""
    ctx = load_app(config, None, env)
    _check_group(ctx, group)
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise ValidationError(
            f"--payload is not valid JSON: {exc}", hint="""e.g. --payload '{"to": "a@b.c"}'"""
        ) from exc

    async def one(session: Session) -> WorkflowRunData:
        request = WorkflowEnqueueRequest(
            app=ctx.app, env=env, group=group, payload=value, delay=delay, idempotency_key=key
        )
        return await session.remote.workflow_enqueue(request)

    data = _run(servers_of(ctx, server)[:1], one, "enqueue")[0].value
    assert data is not None
    if data.created:
        output.success(f"run {data.run.id} of {group} enqueued")
    else:
        output.line(f"run {data.run.id} of {group} already exists with key {key!r} (not added)")


def _check_group(ctx: AppContext, group: str) -> None:
    groups = workflow_groups(ctx.loaded)
    if group not in groups:
        known = ", ".join(groups) or "none"
        raise ValidationError(
            f"unknown workflow group {group!r} (tako.toml groups: {known})",
            hint="groups are the [workflows.<group>] tables of tako.toml",
        )
