"""The tako-server daemon: startup -> serve -> graceful shutdown (shaped like uvicorn).

Startup (in this order, any failure aborts with a clear message):

1. data dir layout (``apps/``, ``incoming/``), stale extraction staging dirs removed;
2. SQLite state opened and migrated (a newer schema refuses to start);
3. the secrets key (created 0600 on first start); stale deploy locks cleared;
4. supervisor, certificate manager (and the edge proxy when enabled);
5. every persisted app restored from SQLite (routes, desired instances), no redeploy;
6. the control socket bound last, so a client that can talk to it sees restored apps.

Once serving, systemd hears ``READY=1`` + ``MAINPID`` (:mod:`tako_server.notify`).

Shutdown on SIGTERM/SIGINT: stop accepting control connections, drain the edge, stop
every instance (SIGTERM, drain, SIGKILL), cancel background tasks, close the database.

SIGHUP = graceful takeover (:mod:`tako_server.upgrade`, ``docs/upgrade.md``): one at a
time; upgrading mode is entered unless a client already holds it; in-flight mutating
commands finish first; a successor is started with this process's listeners and, once
it serves, this process shuts down as above (without ``STOPPING=1``). A failed takeover
leaves this process serving. Each takeover's outcome is written to
``{data_dir}/takeover.json`` (``from_pid``, ``state`` started|failed|succeeded,
``successor_pid``, ``reason``, ``at``) so ``tako servers restart`` can tell a failed
takeover from a slow one without reading logs. A process started as a successor
(``inherited``) adopts the listeners, leaves the predecessor's deploy locks alone, and
tells it when it serves.
One :class:`ServerSettings` object is built by the CLI and passed down; nothing here
reads the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Callable
from typing import Any

from tako_common.errors import TakoError
from tako_server import deployer
from tako_server.context import ServerContext, TaskGroup, utc_iso
from tako_server.control import ControlServer
from tako_server.handlers import Handlers
from tako_server.locks import DeployLocks
from tako_server.notify import Notifier
from tako_server.secrets_store import SecretsStore
from tako_server.settings import ServerSettings
from tako_server.state import StateStore
from tako_server.supervisor import Supervisor, SupervisorSettings
from tako_server.tls import ChallengeStore
from tako_server.upgrade import (
    READY_TIMEOUT,
    Inheritance,
    Successor,
    TakeoverError,
    current_successor_argv,
    reload_owner,
)

log = logging.getLogger("tako_server")

EDGE_DRAIN_TIMEOUT = 30.0
MUTATIONS_WAIT = 120.0  # a takeover waits this long for running deploys to finish


class Daemon:
    """One server process. ``with_edge=False`` runs without the HTTP(S) proxy (tests)."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        with_edge: bool = True,
        with_certs: bool = True,
        supervisor_settings: SupervisorSettings | None = None,
        inherited: Inheritance | None = None,
        notifier: Notifier | None = None,
        takeover_timeout: float = READY_TIMEOUT,
        drain_timeout: float = EDGE_DRAIN_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.inherited = inherited
        self.notifier = notifier or Notifier(None)
        self.takeover_timeout = takeover_timeout
        self.drain_timeout = drain_timeout
        self.with_edge = with_edge
        self.with_certs = with_certs
        self.supervisor_settings = supervisor_settings or SupervisorSettings()
        self.tasks = TaskGroup()
        self.ctx: ServerContext | None = None
        self.control: ControlServer | None = None
        self.edge: Any = None
        self.certs: Any = None
        self.supervisor: Supervisor | None = None
        self.challenges: ChallengeStore | None = None
        self._stopping = asyncio.Event()
        self._change_seen = asyncio.Event()
        self._serving = False
        self._takeover: asyncio.Task[None] | None = None
        self.successor_pid: int | None = None  # set once a successor serves

    def __repr__(self) -> str:
        return (
            f"Daemon(data_dir={str(self.settings.data_dir)!r}, edge={self.with_edge},"
            f" serving={self._serving}, successor={self.successor_pid})"
        )

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or :meth:`request_stop`), then shut down."""
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGHUP: self.request_takeover,
        }
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        try:
            try:
                await self.startup()
            except BaseException:
                if self.inherited is not None:
                    self.inherited.close()  # the predecessor sees EOF at once
                raise
            self._announce_ready()
            await self._stopping.wait()
            log.info("shutting down")
        finally:
            await self.shutdown()
            for sig in handlers:
                loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        self._stopping.set()

    def request_takeover(self) -> None:
        """SIGHUP: start a takeover unless one runs or this process is not serving."""
        if not self._serving or self._stopping.is_set():
            log.warning("SIGHUP ignored: this server is not serving (starting or stopping)")
        elif self._takeover is not None and not self._takeover.done():
            log.warning("SIGHUP ignored: a takeover is already in progress")
        else:
            self._takeover = self.tasks.spawn(self._run_takeover(), name="takeover")

    def _announce_ready(self) -> None:
        pid = os.getpid()
        self._serving = True
        inherited = self.inherited
        if inherited is None:
            self.notifier.ready(f"serving (pid {pid})")
            log.info("tako-server ready (pid %d, socket %s)", pid, self.settings.socket)
            return
        self.notifier.ready(f"serving (pid {pid}, took over from pid {inherited.from_pid})")
        inherited.signal_ready()
        log.info("tako-server ready (pid %d), took over from pid %d", pid, inherited.from_pid)
        assert self.ctx is not None
        mode = self.ctx.state.server_mode()
        if mode.mode == "upgrading" and mode.owner == inherited.owner:
            self.ctx.state.set_server_mode("normal", None, None)

    async def startup(self) -> None:
        layout = self.settings.layout
        for path in (layout.data_dir, layout.apps_dir, layout.incoming_dir):
            path.mkdir(parents=True, exist_ok=True)
        takeover = self.inherited is not None
        for staging in [] if takeover else layout.incoming_dir.glob(".extract-*"):
            shutil.rmtree(staging, ignore_errors=True)
        state = StateStore.open(layout.state_db)
        locks = DeployLocks(layout)
        self.supervisor = Supervisor(self.supervisor_settings, on_change=self._changed)
        self.ctx = ServerContext(
            settings=self.settings,
            state=state,
            secrets=SecretsStore.open(layout.secrets_key, state),
            supervisor=self.supervisor,
            locks=locks,
            tasks=self.tasks,
            socket_path=str(self.settings.socket),
            pid=os.getpid(),
            notify=self._changed,
        )
        for stale in [] if takeover else locks.clear_stale():  # the predecessor's are live
            log.info("removed stale deploy lock %s", stale)
        if not takeover:
            _clear_dead_reload_mode(state)
        if self.with_certs:
            self.ctx.certs = self.certs = self._build_certs()
            self.certs.start()
        problems = await deployer.restore_all(self.ctx)
        for problem in problems:
            log.error("restore: %s", problem)
        await self._wait_restored(self.supervisor_settings.startup_timeout)
        if self.with_edge:
            await self._start_edge()
        elif self.inherited is not None:
            self.inherited.close()
        self.control = ControlServer(
            self.settings.socket,
            Handlers(self.ctx).dispatch,
            on_close=locks.release_connection,
        )
        await self.control.start()

    @property
    def _mutations(self) -> int:
        """Mutating commands running now (counted by the dispatch guard; a takeover waits for 0)."""
        return self.ctx.guard.in_flight if self.ctx is not None else 0

    def _build_certs(self) -> Any:
        from tako_server.tls import CertManager, CertStore

        layout = self.settings.layout
        store = CertStore(layout.certs_dir)
        self.challenges = ChallengeStore()
        issuer = None
        if self.settings.acme_enabled:
            settings, challenges = self.settings, self.challenges

            def make_issuer() -> Any:
                from tako_server.tls import AcmeIssuer

                return AcmeIssuer(
                    layout.acme_dir,
                    settings.directory_url,
                    settings.acme_email,
                    settings.acme_ca_bundle,
                    challenges,
                    store=store,
                )

            issuer = _LazyIssuer(make_issuer)
        return CertManager(store, issuer, on_change=self._certs_changed)

    async def _start_edge(self) -> None:
        from tako_server.edge import Edge
        from tako_server.provider import DaemonEdgeProvider

        assert self.ctx is not None and self.supervisor is not None
        provider = DaemonEdgeProvider(self.ctx, self.supervisor, self.challenges)
        listeners = {}
        if self.inherited is not None:
            listeners = {
                "http": self.inherited.listeners_for("http", self.settings.http_port),
                "https": self.inherited.listeners_for("https", self.settings.https_port),
            }
        self.edge = Edge(
            provider,
            http_port=self.settings.http_port,
            https_port=self.settings.https_port,
            certs_dir=self.settings.layout.certs_dir,
            workers=self.settings.workers,
            listeners=listeners,
        )
        await self.edge.start()

    async def _wait_restored(self, timeout: float) -> None:
        """Wait (bounded) until every restored app that wants instances has a routable one
        or failed, so the edge does not answer 503 right after a restart."""
        assert self.supervisor is not None
        supervisor = self.supervisor
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def pending() -> list[str]:
            keys = []
            for key in supervisor.keys():
                runtime = supervisor.status(key)
                if runtime is None or runtime.desired == 0 or runtime.state in ("error", "stopped"):
                    continue
                if not supervisor.backends(key):
                    keys.append(key)
            return keys

        while waiting := pending():
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("apps not ready after restore: %s", ", ".join(waiting))
                return
            self._change_seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._change_seen.wait(), min(remaining, 0.5))

    def _changed(self) -> None:
        self._change_seen.set()
        if self.edge is not None:
            self.edge.notify()

    def _certs_changed(self, domain: str) -> None:
        if self.edge is not None:
            self.edge.certs_changed()

    # ------------------------------------------------------------------ takeover (old side)

    async def _run_takeover(self) -> None:
        assert self.ctx is not None
        state = self.ctx.state
        owner = reload_owner(os.getpid())
        owns_mode = state.server_mode().mode == "normal"
        if owns_mode:
            state.set_server_mode("upgrading", owner, utc_iso())
        self.notifier.status("takeover: starting a new tako-server")
        self._record_takeover("started")
        successor: Successor | None = None
        try:
            await self._wait_mutations(MUTATIONS_WAIT)
            listeners = self.edge.listeners if self.edge is not None else {}
            successor = Successor(
                current_successor_argv(), listeners, timeout=self.takeover_timeout
            )
            self.successor_pid = await successor.start()
        except (TakoError, OSError) as exc:
            self.successor_pid = None
            reason = exc.message if isinstance(exc, TakoError) else f"{type(exc).__name__}: {exc}"
            log.error("takeover failed, pid %d keeps serving: %s", os.getpid(), reason)
            if self.control is not None and self.control.reclaim():
                log.info("control socket reclaimed by pid %d", os.getpid())
            mode = state.server_mode()
            if owns_mode and mode.mode == "upgrading" and mode.owner == owner:
                state.set_server_mode("normal", None, None)
            self.notifier.status(f"serving (pid {os.getpid()}); takeover failed: {reason}")
            self._record_takeover("failed", reason=reason)
            return
        except asyncio.CancelledError:
            if successor is not None:  # stopping mid-takeover: the successor must not stay
                await successor.abort()
            mode = state.server_mode()
            if owns_mode and mode.mode == "upgrading" and mode.owner == owner:
                state.set_server_mode("normal", None, None)
            raise
        log.info(
            "takeover: pid %d serves now; pid %d drains and exits", self.successor_pid, os.getpid()
        )
        self._record_takeover("succeeded", successor=self.successor_pid)
        self.request_stop()

    def _record_takeover(
        self, state: str, *, reason: str | None = None, successor: int | None = None
    ) -> None:
        record = {
            "from_pid": os.getpid(),
            "state": state,
            "successor_pid": successor,
            "reason": reason,
            "at": utc_iso(),
        }
        path = self.settings.data_dir / "takeover.json"
        tmp = path.with_name(f".takeover.json.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(record) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write %s: %s", path, exc)

    async def _wait_mutations(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._mutations > 0:
            if loop.time() >= deadline:
                raise TakeoverError(
                    f"{self._mutations} deploy-type command(s) still running after"
                    f" {timeout:.0f}s; takeover not started"
                )
            await asyncio.sleep(0.1)

    async def shutdown(self) -> None:
        handed_over = self.successor_pid is not None
        if self._takeover is not None and not self._takeover.done():
            self._takeover.cancel()
            await asyncio.gather(self._takeover, return_exceptions=True)
        if not handed_over and self._serving:
            self.notifier.stopping()
        self._serving = False
        if self.control is not None:
            await self.control.stop()
            self.control = None
        if self.edge is not None:
            with contextlib.suppress(Exception):
                await self.edge.stop(self.drain_timeout)
            self.edge = None
        if self.ctx is not None:
            await self.ctx.supervisor.shutdown()
        if self.certs is not None:
            await self.certs.close()
            self.certs = None
        await self.tasks.cancel_all()
        if self.ctx is not None:
            self.ctx.state.close()
            self.ctx = None


def run_daemon(
    settings: ServerSettings,
    *,
    with_edge: bool = True,
    inherited: Inheritance | None = None,
    notifier: Notifier | None = None,
) -> None:
    """Run the daemon on uvloop until it is told to stop (or a successor took over)."""
    import uvloop

    daemon = Daemon(settings, with_edge=with_edge, inherited=inherited, notifier=notifier)
    uvloop.run(daemon.run())


class _LazyIssuer:
    """Builds the ACME issuer (and imports acme/josepy/requests, ~8 MiB) on first use, so
    a server whose routes are all local hosts, or already certified, never loads them."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._real: Any = None

    def __repr__(self) -> str:
        return f"_LazyIssuer(loaded={self._real is not None})"

    async def close(self) -> None:
        if self._real is not None:
            result = self._real.close()
            if asyncio.iscoroutine(result):
                await result

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            self._real = self._factory()
        return getattr(self._real, name)


def _clear_dead_reload_mode(state: StateStore) -> None:
    """Upgrading mode taken by a server's own SIGHUP reload (owner ``reload-<pid>``) dies
    with that process: a fresh start after a crash mid-takeover must not refuse every
    deploy forever. Modes held by a client (``tako servers upgrade``) are left alone."""
    mode = state.server_mode()
    owner = mode.owner or ""
    if mode.mode != "upgrading" or not owner.startswith("reload-"):
        return
    pid = owner.removeprefix("reload-")
    if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
        log.warning("leaving upgrading mode held by %s: that process is gone", owner)
        state.set_server_mode("normal", None, None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
