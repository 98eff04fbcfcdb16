"""The tako-server daemon: startup -> serve -> graceful shutdown (shaped like uvicorn).

Startup (in this order, any failure aborts with a clear message):

1. data dir layout (``apps/``, ``incoming/``), stale extraction staging dirs removed;
2. SQLite state opened and migrated (a newer schema refuses to start);
3. the secrets key (created 0600 on first start); stale deploy locks cleared;
4. routing state, supervisor, certificate manager (and the edge proxy when enabled);
5. every persisted app restored from SQLite (routes, desired instances), no redeploy;
   the routing state holds the restored routes and backends, and the edge starts with
   its snapshot (then gets every change pushed, :mod:`tako_server.routing`);
6. the control socket bound last, so a client that can talk to it sees restored apps;
   the backup scheduler (:mod:`tako_server.backups.service`) starts with it.

Once serving, systemd hears ``READY=1`` + ``MAINPID`` (:mod:`tako_server.notify`).

Shutdown on SIGTERM/SIGINT: stop accepting control connections, drain the edge, stop
every instance (SIGTERM, drain, SIGKILL), cancel background tasks, close the database.
App processes (instances and workflow workers) are left running instead (released, for
the next daemon to adopt) after a takeover and when the stop is a restart
(:mod:`tako_server.stopmode`); a ``kill -9`` leaves them running too. Start-up adopts
whatever a previous daemon left.

SIGHUP = graceful takeover, driven by :mod:`tako_server.takeover` (``docs/upgrade.md``);
this module only starts one while serving, adopts the listeners when it was started as
a successor (``inherited``), and tells the takeover module when it serves. A successor
leaves the predecessor's deploy locks and staging dirs alone (they are live).
One :class:`ServerSettings` object is built by the CLI and passed down; nothing here
reads the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from tako_common.tasks import TaskGroup
from tako_server import deployer
from tako_server.cgroups import CgroupTree
from tako_server.context import ServerContext, utc_iso
from tako_server.control import ControlServer
from tako_server.handlers import Handlers
from tako_server.isolation import isolation_enabled
from tako_server.locks import DeployLocks
from tako_server.notify import Notifier
from tako_server.observe import Observability, edge_config
from tako_server.oneoff_service import discard_connection
from tako_server.routing import RoutingState
from tako_server.secrets_store import SecretsStore
from tako_server.settings import ServerSettings
from tako_server.state import StateStore
from tako_server.stopmode import KEEP_APPS_MARKER, take_keep_marker
from tako_server.supervisor import Supervisor, SupervisorSettings
from tako_server.takeover import (
    LEGACY_RECORD,
    Listeners,
    Takeover,
    TakeoverHooks,
    TakeoverRecord,
    clear_dead_reload_mode,
    complete_handover,
)
from tako_server.tls import ChallengeStore
from tako_server.upgrade import READY_TIMEOUT, Inheritance
from tako_server.workflows.api import QueueApi
from tako_server.workflows.service import WorkflowService

if TYPE_CHECKING:
    from tako_server.edge import Edge, EdgeSnapshot
    from tako_server.tls import AcmeIssuer, CertManager
    from tako_server.tls.cloudflare import CloudflareApi

log = logging.getLogger("tako_server")

EDGE_DRAIN_TIMEOUT = 30.0


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
        self.record = TakeoverRecord.of_this_process(inherited)
        self.ctx: ServerContext | None = None
        self.control: ControlServer | None = None
        self.edge: Edge | None = None
        self.certs: CertManager | None = None
        self.observe: Observability | None = None
        self.supervisor: Supervisor | None = None
        self.routing = RoutingState(on_change=self._routes_changed)
        self.challenges: ChallengeStore | None = None
        self.takeover: Takeover | None = None  # built once serving (old side of a takeover)
        self.workflows_api: QueueApi | None = None
        self._stopping = asyncio.Event()
        self._change_seen = asyncio.Event()
        self._serving = False
        self._handover_done = False

    def __repr__(self) -> str:
        return (
            f"Daemon(data_dir={str(self.settings.data_dir)!r}, edge={self.with_edge},"
            f" serving={self._serving}, successor={self.successor_pid})"
        )

    @property
    def successor_pid(self) -> int | None:
        """The pid of the successor that serves now (None until a takeover succeeded)."""
        return self.takeover.successor_pid if self.takeover is not None else None

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
        """SIGHUP: start a takeover unless this process is not serving (or one runs)."""
        if self.takeover is None or not self._serving or self._stopping.is_set():
            log.warning("SIGHUP ignored: this server is not serving (starting or stopping)")
        else:
            self.takeover.request()

    def _announce_ready(self) -> None:
        assert self.ctx is not None and self.control is not None
        self.takeover = self._build_takeover(self.ctx, self.control)
        self._serving = True
        if self.inherited is not None:
            complete_handover(self.inherited, self.ctx.state, self.notifier)
            self._handover_done = True
            return
        pid = os.getpid()
        self.notifier.ready(f"serving (pid {pid})")
        log.info("tako-server ready (pid %d, socket %s)", pid, self.settings.socket)

    def _build_takeover(self, ctx: ServerContext, control: ControlServer) -> Takeover:
        def listeners() -> Listeners:
            return self.edge.listeners if self.edge is not None else {}

        supervisor = self.supervisor
        assert supervisor is not None

        async def release_apps() -> None:  # instances and workflow workers
            if ctx.workflows is not None:
                await ctx.workflows.release()
            await supervisor.release()

        async def reclaim_apps() -> None:
            await supervisor.reclaim()
            if ctx.workflows is not None:
                await ctx.workflows.reclaim()

        hooks = TakeoverHooks(
            listeners,
            lambda: ctx.guard.in_flight,
            self.request_stop,
            release_apps=release_apps,
            reclaim_apps=reclaim_apps,
        )
        return Takeover(
            self.record,
            hooks,
            state=ctx.state,
            control=control,
            notifier=self.notifier,
            clock=utc_iso,
            legacy_path=self.settings.data_dir / LEGACY_RECORD,
            timeout=self.takeover_timeout,
        )

    async def startup(self) -> None:
        layout = self.settings.layout
        for path in (layout.data_dir, layout.apps_dir, layout.incoming_dir):
            path.mkdir(parents=True, exist_ok=True)
        takeover = self.inherited is not None
        for staging in [] if takeover else layout.incoming_dir.glob(".extract-*"):
            shutil.rmtree(staging, ignore_errors=True)
        state = StateStore.open(layout.state_db)
        for db_file in layout.data_dir.glob(layout.state_db.name + "*"):
            db_file.chmod(0o600)  # variables in plaintext; the -wal/-shm files too
        locks = DeployLocks(layout)
        self.supervisor = Supervisor(
            self.supervisor_settings, routing=self.routing, on_change=self._change_seen.set
        )
        self.ctx = ServerContext(
            settings=self.settings,
            state=state,
            secrets=SecretsStore.open(layout.secrets_key, state),
            supervisor=self.supervisor,
            locks=locks,
            tasks=self.tasks,
            routing=self.routing,
            socket_path=str(self.settings.socket),
            pid=os.getpid(),
            takeover=self.record,
        )
        self.ctx.workflows = self._build_workflows()
        for stale in [] if takeover else locks.clear_stale():  # the predecessor's are live
            log.info("removed stale deploy lock %s", stale)
        if not takeover:
            clear_dead_reload_mode(state)
        self.ctx.cgroups = self._cgroups()
        if self.with_certs:
            self.ctx.certs = self.certs = self._build_certs()
            self.certs.start()
        running = {r.key for r in state.list_apps() if r.state == "running"}
        await self.ctx.workflows.restore_all(running)
        problems = await deployer.restore_all(self.ctx)
        for problem in problems:
            log.error("restore: %s", problem)
        await self._wait_restored(self.supervisor_settings.startup_timeout)
        self.observe = Observability(self.settings, self.supervisor, self.ctx.events)
        if self.certs is not None:
            self.observe.certs = self.certs.store
        if self.with_edge:
            await self._start_edge()
        elif self.inherited is not None:  # no edge: its sockets go, the ready pipe stays
            self.inherited.close_listeners()
        handlers = Handlers(self.ctx)
        self.tasks.spawn(handlers.backups.run_scheduler(), name="backup-scheduler")
        await self._start_workflows_api(self.ctx.workflows)
        await self.observe.start()
        self.control = ControlServer(
            self.settings.socket,
            handlers.dispatch,
            on_close=self._connection_closed,
        )
        await self.control.start()

    def _build_workflows(self) -> WorkflowService:
        supervisor = self.supervisor
        assert supervisor is not None
        return WorkflowService(
            self.settings.data_dir,
            self.settings.workflows_port,
            log_for=supervisor.log,
            credentials=self._credentials,
        )

    def _credentials(self, app: str, env: str) -> dict[str, str]:
        assert self.ctx is not None
        return self.ctx.credentials.get(app, env)

    async def _start_workflows_api(self, workflows: WorkflowService) -> None:
        """The queue's loopback API (a busy port is logged: workers cannot reach it)."""
        self.workflows_api = QueueApi(workflows, self.settings.workflows_port)
        try:
            await self.workflows_api.start()
        except OSError as exc:
            log.error("workflows API: cannot listen on 127.0.0.1:%d: %s",
                      self.settings.workflows_port, exc)
        workflows.start()
    def _cgroups(self) -> CgroupTree | None:
        """Per-app limits need root and a writable cgroup tree (v2, or v1 hierarchies) with
        memory, cpu and pids."""
        self.settings.data_dir.chmod(0o711)  # crossed by app users, listed by no one
        if not isolation_enabled(self.settings.app_users, os.geteuid()):
            return None
        tree = CgroupTree.detect()
        if tree is None:
            log.warning(
                "no writable cgroup v2 or v1 memory/cpu/pids controllers: apps run without limits"
            )
        else:
            log.info("per-app limits in cgroup v%d: %r", tree.version, tree)
        return tree

    def _connection_closed(self, connection: int) -> None:
        """A control connection closed: its deploy locks and unused staged releases go."""
        assert self.ctx is not None
        discard_connection(self.ctx, connection)
        self.ctx.locks.release_connection(connection)

    def _build_certs(self) -> CertManager:
        from tako_server.tls import CertManager, CertStore
        from tako_server.tls.origin_ca import OriginCaIssuer

        layout = self.settings.layout
        store = CertStore(layout.certs_dir)
        self.challenges = ChallengeStore()
        issuer: AcmeIssuer | None = None
        if self.settings.acme_enabled:
            settings, challenges = self.settings, self.challenges

            def make_issuer() -> AcmeIssuer:
                from tako_server.tls import AcmeIssuer

                return AcmeIssuer(
                    layout.acme_dir,
                    settings.directory_url,
                    settings.acme_email,
                    settings.acme_ca_bundle,
                    challenges,
                    store=store,
                    dns_propagation=settings.cloudflare_dns_propagation,
                )

            # the proxy stands in for the issuer (it builds one on first use)
            issuer = cast("AcmeIssuer", _LazyIssuer(make_issuer))
        return CertManager(
            store,
            issuer,
            on_change=self._certs_changed,
            origin_ca=OriginCaIssuer(store),
            cloudflare=self._cloudflare_api,
        )

    def _cloudflare_api(self, token: str) -> CloudflareApi:
        """A Cloudflare API client for one ``ssl.cloudflare`` token (imports requests)."""
        from tako_server.tls.cloudflare import CloudflareApi

        api_url, bundle = self.settings.cloudflare_api_url, self.settings.cloudflare_ca_bundle
        return CloudflareApi(token, api_url, ca_bundle=bundle)

    async def _start_edge(self) -> None:
        from tako_server.edge import Edge
        from tako_server.provider import DaemonEdgeHooks

        assert self.supervisor is not None
        hooks = DaemonEdgeHooks(self.supervisor, self.challenges)
        listeners: Listeners = {}
        if self.inherited is not None:
            listeners = {
                "http": self.inherited.listeners_for("http", self.settings.http_port),
                "https": self.inherited.listeners_for("https", self.settings.https_port),
            }
        edge = Edge(
            hooks,
            http_port=self.settings.http_port,
            https_port=self.settings.https_port,
            certs_dir=self.settings.layout.certs_dir,
            workers=self.settings.workers,
            listeners=listeners,
            config=edge_config(self.settings),
        )
        edge.update(self.routing.snapshot)  # from here on, every change is pushed
        self.edge = edge
        await edge.start()
        if self.observe is not None:
            self.observe.edge = edge

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

    def _routes_changed(self, snapshot: EdgeSnapshot) -> None:
        if self.edge is not None:
            self.edge.update(snapshot)

    def _certs_changed(self, domain: str) -> None:
        if self.edge is not None:
            self.edge.certs_changed()

    async def shutdown(self) -> None:
        handed_over = self.successor_pid is not None
        if self.takeover is not None:
            await self.takeover.cancel()
        if not handed_over and self._serving:
            self.notifier.stopping()
        self._serving = False
        if self.control is not None:
            await self.control.stop()
            self.control = None
        if self.observe is not None:
            await self.observe.stop()
            self.observe = None
        if self.edge is not None:
            with contextlib.suppress(Exception):
                await self.edge.stop(self.drain_timeout)
            self.edge = None
        keeps = self.ctx is not None and self._keeps_apps(handed_over)
        workflows = self.ctx.workflows if self.ctx is not None else None
        if workflows is not None:
            if keeps:
                await workflows.release()  # the next tako-server adopts them
            await workflows.stop_workers()  # workers first: they finish through the API
        if self.workflows_api is not None:
            await self.workflows_api.stop()
            self.workflows_api = None
        if workflows is not None:
            await workflows.close()  # after the API: no request finds a closed store
        if self.ctx is not None:
            if self.supervisor is not None and keeps:
                await self.supervisor.release()  # the next tako-server adopts them
            await self.ctx.supervisor.shutdown()
        if self.certs is not None:
            await self.certs.close()
            self.certs = None
        await self.tasks.cancel_all()
        if self.ctx is not None:
            self.ctx.state.close()
            self.ctx = None


    def _keeps_apps(self, handed_over: bool) -> bool:
        """Leave the app processes running on exit: after a takeover, when this process
        is a successor that never took over (its predecessor reclaims them), or when the
        stop is a restart (``tako-server prepare-stop`` left the marker, ``docs/upgrade.md``)."""
        if handed_over or (self.inherited is not None and not self._handover_done):
            return True
        if take_keep_marker(self.settings.data_dir / KEEP_APPS_MARKER):
            log.info("keeping app processes running for the next tako-server (restart)")
            return True
        return False


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

    def __init__(self, factory: Callable[[], AcmeIssuer]) -> None:
        self._factory = factory
        self._real: AcmeIssuer | None = None

    def __repr__(self) -> str:
        return f"_LazyIssuer(loaded={self._real is not None})"

    async def close(self) -> None:
        real: Any = self._real  # close() may be sync or async, whichever issuer this is
        if real is not None:
            result = real.close()
            if asyncio.iscoroutine(result):
                await result

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            self._real = self._factory()
        return getattr(self._real, name)
