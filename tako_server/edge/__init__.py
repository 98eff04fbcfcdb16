"""The edge proxy of tako-server: every request from the internet enters here.

Public API (see ``/tmp/tako-notes/interfaces.md`` "Edge API")::

    Edge(provider, *, http_port, https_port, certs_dir, workers, host="0.0.0.0",
         config=EdgeConfig(), public_https_port=None)
        await start(); notify(); certs_changed(); await stop(drain_timeout)
        .http_port / .https_port are the bound ports after start() (0 = pick one)
    EdgeProvider (Protocol), EdgeSnapshot, EdgeApp, Backend, EdgeConfig

Layout: pure cores (:mod:`.policy`, :mod:`.static`, :mod:`.activity`, :mod:`.snapshot`,
the routing decision :mod:`.decide` and the exchange state machine :mod:`.lifecycle`)
beside thin I/O shells, the protocol-level forwarder (:mod:`.protocol`, :mod:`.exchange`,
:mod:`.proxy`, :mod:`.upstream`, :mod:`.staticsend`, :mod:`.runtime`) that talk through
:mod:`.links`; :mod:`.workers` and :mod:`.server` own processes and the channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import EdgeConfig
    from .server import Edge, EdgeError, EdgeProvider
    from .snapshot import Backend, EdgeApp, EdgeSnapshot

__all__ = ["Backend", "Edge", "EdgeApp", "EdgeError", "EdgeConfig", "EdgeProvider", "EdgeSnapshot"]
_HOMES = {
    "Backend": "snapshot",
    "EdgeApp": "snapshot",
    "EdgeSnapshot": "snapshot",
    "EdgeConfig": "runtime",
    "Edge": "server",
    "EdgeError": "server",
    "EdgeProvider": "server",
}


def __getattr__(name: str) -> Any:
    """Lazy exports: a worker process (``python -m tako_server.edge``) imports only what
    it serves with, never the main-process side (server, supervisor types)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{home}"), name)
