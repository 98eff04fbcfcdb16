"""The one guard of state-changing requests, applied by dispatch where requests enter.

Rules (what a request model declares decides; see :mod:`tako_common.protocol.requests`):

- a request that ``mutates`` is refused while the server is upgrading, naming the
  command, the upgrade's owner and since when, before anything changes;
- while it runs it is counted in :attr:`MutationGuard.in_flight`; a takeover switches to
  upgrading mode and then waits for 0. The mode check and the count happen with no
  ``await`` in between, so no mutation slips in after the switch;
- an ``exclusive`` request (deploy, rollback, update_secrets, stop, scale, delete) is
  refused when another connection (or owner) holds the app's deploy lock, and runs as
  the app's one operation: a second one of the same app is refused as busy. The
  operation ends on every path (success, error, cancellation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tako_common.errors import TakoError
from tako_common.protocol import AppRef, Message
from tako_server.locks import DeployLocks
from tako_server.state import StateStore


class Upgrading(TakoError):
    code = "upgrading"


class MutationGuard:
    def __init__(self, state: StateStore, locks: DeployLocks) -> None:
        self._state = state
        self._locks = locks
        self.in_flight = 0

    def __repr__(self) -> str:
        return f"MutationGuard(in_flight={self.in_flight})"

    @contextmanager
    def admit(self, request: Message, connection: int) -> Iterator[None]:
        """Run the body under the guard of ``request`` (a no-op for read-only requests)."""
        if not request.mutates:
            yield
            return
        self.refuse_if_upgrading(str(getattr(request, "command", type(request).__name__)))
        self.in_flight += 1
        try:
            if request.exclusive and isinstance(request, AppRef):
                with self._app_operation(request, connection):
                    yield
            else:
                yield
        finally:
            self.in_flight -= 1

    @contextmanager
    def _app_operation(self, request: AppRef, connection: int) -> Iterator[None]:
        self._locks.check_access(request.app, request.env, request.lock_owner, connection)
        self._locks.begin_operation(request.key, str(getattr(request, "command", "")))
        try:
            yield
        finally:
            self._locks.end_operation(request.key)

    def refuse_if_upgrading(self, command: str) -> None:
        mode = self._state.server_mode()
        if mode.mode == "upgrading":
            raise Upgrading(
                f"server is upgrading (owner {mode.owner}, since {mode.since});"
                f" '{command}' is refused until the upgrade finishes",
                hint="retry shortly",
            )
