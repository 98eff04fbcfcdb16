"""The tako-server daemon: startup -> serve -> graceful shutdown (shaped like uvicorn).

Startup (in this order, any failure aborts with a clear message):

1. data dir layout (``apps/``, ``incoming/``), stale extraction staging dirs removed;
2. SQLite state opened and migrated (a newer schema refuses to start);
3. the secrets key (created 0600 on first start); stale deploy locks cleared;
4. supervisor, certificate manager (and the edge proxy when enabled);
5. every persisted app restored from SQLite (routes, desired instances), no redeploy;
6. the control socket bound last, so a client that can talk to it sees restored apps.

Shutdown on SIGTERM/SIGINT: stop accepting control connections, drain the edge, stop
every instance (SIGTERM, drain, SIGKILL), cancel background tasks, close the database.
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
from typing import Any

from tako_server import deployer
from tako_server.context import ServerContext, TaskGroup
from tako_server.control import ControlServer
from tako_server.handlers import Handlers
from tako_server.locks import DeployLocks
from tako_server.secrets_store import SecretsStore
from tako_server.settings import ServerSettings
from tako_server.state import StateStore
from tako_server.supervisor import Supervisor, SupervisorSettings
from tako_server.tls import ChallengeStore

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
    ) -> None:
        self.settings = settings
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

    def __repr__(self) -> str:
        return f"Daemon(data_dir={str(self.settings.data_dir)!r}, edge={self.with_edge})"

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or :meth:`request_stop`), then shut down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.startup()
            log.info("tako-server ready (pid %d, socket %s)", os.getpid(), self.settings.socket)
            await self._stopping.wait()
            log.info("shutting down")
        finally:
            await self.shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        self._stopping.set()

    async def startup(self) -> None:
        layout = self.settings.layout
        for path in (layout.data_dir, layout.apps_dir, layout.incoming_dir):
            path.mkdir(parents=True, exist_ok=True)
        for staging in layout.incoming_dir.glob(".extract-*"):
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
        for stale in locks.clear_stale():
            log.info("removed stale deploy lock %s", stale)
        if self.with_certs:
            self.ctx.certs = self.certs = self._build_certs()
            self.certs.start()
        problems = await deployer.restore_all(self.ctx)
        for problem in problems:
            log.error("restore: %s", problem)
        await self._wait_restored(self.supervisor_settings.startup_timeout)
        if self.with_edge:
            await self._start_edge()
        self.control = ControlServer(
            self.settings.socket, Handlers(self.ctx).dispatch, on_close=locks.release_connection
        )
        await self.control.start()

    def _build_certs(self) -> Any:
        from tako_server.tls import AcmeIssuer, CertManager, CertStore

        layout = self.settings.layout
        store = CertStore(layout.certs_dir)
        self.challenges = ChallengeStore()
        issuer = None
        if self.settings.acme_enabled:
            issuer = AcmeIssuer(
                layout.acme_dir,
                self.settings.directory_url,
                self.settings.acme_email,
                self.settings.acme_ca_bundle,
                self.challenges,
                store=store,
            )
        return CertManager(store, issuer, on_change=self._certs_changed)

    async def _start_edge(self) -> None:
        from tako_server.edge import Edge
        from tako_server.provider import DaemonEdgeProvider

        assert self.ctx is not None and self.supervisor is not None
        provider = DaemonEdgeProvider(self.ctx, self.supervisor, self.challenges)
        self.edge = Edge(
            provider,
            http_port=self.settings.http_port,
            https_port=self.settings.https_port,
            certs_dir=self.settings.layout.certs_dir,
            workers=self.settings.workers,
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

    async def shutdown(self) -> None:
        if self.control is not None:
            await self.control.stop()
            self.control = None
        if self.edge is not None:
            with contextlib.suppress(Exception):
                await self.edge.stop(EDGE_DRAIN_TIMEOUT)
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


def run_daemon(settings: ServerSettings, *, with_edge: bool = True) -> None:
    """Run the daemon on uvloop until it is told to stop."""
    import uvloop

    uvloop.run(Daemon(settings, with_edge=with_edge).run())
