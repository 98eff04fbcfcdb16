"""The release step of a deploy (``prepare``, ``run_release``, ``discard``) and ``exec``.

Rules:

- ``prepare`` does a deploy's first half (routes checked, artifact verified, release
  extracted and prepared, exactly as ``deploy`` would) and stages the release
  (:mod:`tako_server.staging`); nothing switches, no instance starts;
- ``run_release`` runs the app's release command with ``/bin/sh -c`` in a staged
  release's working directory, with the environment its instances will get
  (:func:`tako_server.launch.instance_environ`: vars, secrets, storage bindings,
  ``TAKO_*``), stopped after ``timeout`` seconds (the request's, else the server's
  ``release_timeout``); it is an exclusive command, so the deploy lock covers it;
- ``discard`` removes a staged release the deploy created (never the current release,
  never one that existed before); so does the closing of the connection that staged it;
- ``exec`` runs a command in the app's current release with the same environment
  (its stored vars, secrets and storage bindings); refused when the app has no release
  here;
- one-offs run through :mod:`tako_server.oneoff` (same user and process rules as
  instances); their argv, command text and environment are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets as random_tokens
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from tako_common.errors import TakoError
from tako_common.protocol import (
    DiscardData,
    DiscardRequest,
    ExecRequest,
    PrepareData,
    PrepareRequest,
    RunReleaseRequest,
    SessionExit,
    SessionStarted,
    StorageBinding,
)
from tako_server import deployer, releases
from tako_server.context import ServerContext
from tako_server.isolation import isolation_for
from tako_server.launch import ReleaseRef, container_run, ensure_data_dirs, instance_environ
from tako_server.oneoff import OneOffProcess, OneOffSession, OneOffSpec
from tako_server.staging import StagedRelease
from tako_server.supervisor.container import host_ulimits
from tako_server.supervisor.spec import ContainerRun

log = logging.getLogger(__name__)

#: The shell that runs a release command (``release`` in tako.toml is a command line).
SHELL = "/bin/sh"


class NotPrepared(TakoError):
    code = "not_prepared"


class OneOffService:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def __repr__(self) -> str:
        return f"OneOffService({self.ctx.staging!r})"

    async def prepare(self, req: PrepareRequest, connection: int) -> PrepareData:
        ctx = self.ctx
        deployer.normalize_routes(ctx, req.key, req.routes)  # conflicts refused before any work
        archive = await asyncio.to_thread(
            releases.verify_artifact, ctx.layout, req.artifact, req.sha256
        )
        reused = deployer.is_reusable(ctx, req.app, req.env, req.version)
        async with deployer.staged_release(ctx, req, archive) as release:
            log.info("prepared %s version %s (reused: %s)", req.key, req.version, reused)
        replaced = ctx.staging.put(StagedRelease(release, req, not reused, connection))
        if replaced is not None:
            await asyncio.to_thread(_remove_staged, ctx, replaced)
        return PrepareData(app=req.app, env=req.env, version=req.version, reused=reused)

    async def run_release(self, req: RunReleaseRequest) -> OneOffSession:
        ctx = self.ctx
        staged = ctx.staging.get(req.key, req.version)
        if staged is None:
            raise NotPrepared(
                f"release {req.version} of {req.key} is not prepared on this server",
                hint="a deploy sends prepare before run_release (on the same server)",
            )
        timeout = req.timeout or ctx.settings.release_timeout
        release = staged.release
        storages = staged.request.storages
        environ = _environ(ctx, release, staged.request.vars, staged.request.secrets, storages)
        label = f"release command of {req.key}@{req.version}"
        spec = self._in_container(
            release, OneOffSpec([SHELL, "-c", req.run], release.workdir, environ, label)
        )
        process = await OneOffProcess.start(spec)
        log.info("%s started (pid %d, timeout %ds)", label, process.pid, timeout)
        return OneOffSession(
            process,
            _started(release, process, timeout=timeout),
            timeout=float(timeout),
            on_exit=lambda result: _log_exit(label, result),
        )

    async def discard(self, req: DiscardRequest) -> DiscardData:
        staged = self.ctx.staging.pop(req.key, req.version)
        removed = False
        if staged is not None:
            removed = await asyncio.to_thread(_remove_staged, self.ctx, staged)
        return DiscardData(app=req.app, env=req.env, version=req.version, removed=removed)

    async def exec(self, req: ExecRequest) -> OneOffSession:
        ctx = self.ctx
        record = deployer.require_app(ctx, req.app, req.env)
        release = deployer.release_of(ctx, record)
        if not release.workdir.is_dir():
            raise deployer.NotDeployed(
                f"the current release {record.version} of {req.key} is missing on this server",
                hint="deploy again",
            )
        secrets = ctx.secrets.get(req.app, req.env)
        storages = ctx.storage.get(req.app, req.env).storages
        environ = _environ(ctx, release, record.vars, secrets, storages)
        if req.tty:
            environ["TERM"] = req.term or "xterm"
        label = f"exec in {req.key}@{record.version}"
        spec = OneOffSpec(
            list(req.argv),
            release.workdir,
            environ,
            label,
            tty=req.tty,
            stdin=req.stdin,
            cols=req.cols,
            rows=req.rows,
        )
        process = await OneOffProcess.start(self._in_container(release, spec))
        log.info("%s started (pid %d, tty %s)", label, process.pid, req.tty)
        return OneOffSession(
            process,
            _started(release, process, tty=req.tty),
            on_exit=lambda result: _log_exit(label, result),
        )


    def _in_container(self, release: ReleaseRef, spec: OneOffSpec) -> OneOffSpec:
        """A container release runs its one-offs in a new container of the release's image,
        through Podman's remote client on the same API socket (sessions, terminals and
        signals then work exactly as for a process)."""
        if release.manifest.container is None:  # as the app's user when the server is root
            isolation = isolation_for(self.ctx.settings, release, self.ctx.cgroups)
            return replace(spec, isolation=isolation)
        host = deployer.container_host(self.ctx)
        run = container_run(release, host)
        assert run is not None
        keys = [name for name in spec.environ if name != "PATH"]  # the client needs the host's
        argv = container_oneoff_argv(
            release.key, run, spec.argv, keys, tty=spec.tty, stdin=spec.stdin
        )
        inherited = self.ctx.settings.inherited_env
        client_env = {**inherited, **spec.environ, "PATH": inherited["PATH"]}
        return replace(spec, argv=argv, environ=client_env)


def container_oneoff_argv(
    key: str,
    run: ContainerRun,
    argv: Sequence[str],
    env_keys: Sequence[str],
    *,
    tty: bool,
    stdin: bool,
) -> list[str]:
    """``podman --url ... run --rm ...`` for a one-off of a container release (pure).

    Values of the environment never appear in the argv (``-e KEY`` takes them from the
    client's environment), so ``ps`` shows no secret."""
    out = ["podman", "--url", f"unix://{run.socket}", "run", "--rm", "--label", f"tako.app={key}"]
    out += ["--label", "tako.oneoff=1", "--memory", f"{run.memory_mb}m"]
    out += ["--pids-limit", str(run.pids_limit)]
    for limit in host_ulimits(run.pids_limit):  # what the instances get
        out += ["--ulimit", f"{limit['Name']}={limit['Soft']}:{limit['Hard']}"]
    if run.read_only:
        out += ["--read-only", "--tmpfs", "/tmp"]
    if tty or stdin:
        out.append("-i")
    if tty:
        out.append("-t")
    for path in run.mounts:
        out += ["-v", f"{path}:{path}"]
    for name in env_keys:
        out += ["-e", name]
    out += ["--entrypoint", argv[0], run.image, *argv[1:]]
    return out


def discard_connection(ctx: ServerContext, connection: int) -> None:
    """The connection that staged releases closed without deploying them: remove them.

    Called from the control socket's close hook (synchronous): each directory is moved
    out of the releases at once (a rename), and deleted in the background.
    """
    for staged in ctx.staging.take_connection(connection):
        trash = _move_away(ctx, staged)
        if trash is not None:
            log.info("removing %s@%s: its deploy went away", staged.key, staged.version)
            ctx.tasks.spawn(
                asyncio.to_thread(shutil.rmtree, trash, True), f"tako-discard-{trash.name}"
            )


def _environ(
    ctx: ServerContext,
    release: ReleaseRef,
    variables: Mapping[str, str],
    secrets: Mapping[str, str],
    storages: Sequence[StorageBinding],
) -> dict[str, str]:
    """What an instance of ``release`` gets, minus HOST, PORT and TAKO_INSTANCE."""
    ensure_data_dirs(release, storages)
    server_env = ctx.settings.inherited_env
    return instance_environ(release, variables, secrets, server_env, storages=storages)


def _started(
    release: ReleaseRef, process: OneOffProcess, *, tty: bool = False, timeout: int | None = None
) -> SessionStarted:
    return SessionStarted(
        app=release.app,
        env=release.env,
        version=release.version,
        workdir=str(release.workdir),
        pid=process.pid,
        tty=tty,
        timeout=timeout,
    )


def _log_exit(label: str, result: SessionExit) -> None:
    how = "timed out" if result.timed_out else f"exited {result.exit_code}"
    log.info("%s %s after %.1fs", label, how, result.duration)


def _remove_staged(ctx: ServerContext, staged: StagedRelease) -> bool:
    """Delete a staged release the deploy created; False when it must stay."""
    trash = _move_away(ctx, staged)
    if trash is None:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    layout = ctx.layout
    app, env = staged.release.app, staged.release.env
    deployer.remove_if_empty(
        [layout.apps_dir / app, layout.app_dir(app, env), layout.releases_dir(app, env)]
    )
    return True


def _move_away(ctx: ServerContext, staged: StagedRelease) -> Path | None:
    """Rename a created, non-current staged release into ``incoming/`` (atomic, quick)."""
    release = staged.release
    if not staged.created or not release.release_dir.exists():
        return None
    current = releases.current_version(ctx.layout.current_link(release.app, release.env))
    if current == release.version:
        return None
    trash = ctx.layout.incoming_dir / f".discard-{random_tokens.token_hex(8)}"
    try:
        os.replace(release.release_dir, trash)
    except OSError as exc:
        log.warning("cannot move %s away: %s", release.release_dir, exc)
        return None
    return trash
