"""The edge proxy of tako-server: every request from the internet enters here.

Public API::

    Edge(hooks, *, http_port, https_port, certs_dir, workers, host="0.0.0.0",
         config=EdgeConfig(), public_https_port=None, listeners=None)
        update(snapshot); await start(); certs_changed(); await stop(drain_timeout)
        .http_port / .https_port are the bound ports after start() (0 = pick one)
    EdgeHooks (Protocol: what the edge asks of the rest), ColdStartError, ColdStartKind,
    EdgeSnapshot, EdgeApp, Backend (the one backend value of the server), EdgeConfig

Layout: pure cores (:mod:`.policy`, :mod:`.static`, :mod:`.activity`, :mod:`.snapshot`,
the routing decision :mod:`.decide`, the exchange state machine :mod:`.lifecycle`, the
channel's typed :mod:`.messages`) beside thin I/O shells, the protocol-level forwarder
(:mod:`.http1`, :mod:`.exchange`, :mod:`.proxy`, :mod:`.upstream`, :mod:`.staticsend`,
:mod:`.runtime`) that talk through :mod:`.links`; :mod:`.workers` and :mod:`.server` own
processes and the channel. The one interface to the rest of the server is
:class:`.hooks.EdgeHooks`; the edge imports nothing of the supervisor or the command
side (an import-linter contract in ``pyproject.toml``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hooks import ColdStartError, ColdStartKind, EdgeHooks
    from .runtime import EdgeConfig
    from .server import Edge, EdgeError
    from .snapshot import Backend, EdgeApp, EdgeSnapshot

__all__ = [
    "Backend",
    "ColdStartError",
    "ColdStartKind",
    "Edge",
    "EdgeApp",
    "EdgeConfig",
    "EdgeError",
    "EdgeHooks",
    "EdgeSnapshot",
]
_HOMES = {
    "Backend": "snapshot",
    "EdgeApp": "snapshot",
    "EdgeSnapshot": "snapshot",
    "ColdStartError": "hooks",
    "ColdStartKind": "hooks",
    "EdgeHooks": "hooks",
    "EdgeConfig": "runtime",
    "Edge": "server",
    "EdgeError": "server",
}


def __getattr__(name: str) -> Any:
    """Lazy exports: a worker process (``python -m tako_server.edge``) imports only what
    it serves with, never the main-process side (server, supervisor types)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{home}"), name)
