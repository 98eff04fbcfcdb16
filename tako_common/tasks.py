"""Background tasks: :func:`spawn` is the one way to start one; :class:`TaskGroup` keeps
a set of them that can be cancelled together.

Rules:

- every background task in ``tako_server`` and ``tako_client`` starts through
  :func:`spawn` (ruff bans a bare ``asyncio.create_task`` elsewhere, rule ``TID251`` in
  ``pyproject.toml``);
- a spawned task has a name (it shows in logs and in ``asyncio`` debug output);
- a reference is kept until the task finishes: the event loop holds tasks only weakly,
  so an unreferenced task can be garbage-collected mid-flight;
- an exception other than cancellation is logged once, with the task's name, when the
  task finishes (nobody may ever await it); cancellation is not an error;
- a caller that must cancel or await its tasks keeps its own handles, e.g. in a
  :class:`TaskGroup` (the daemon cancels its group at shutdown).

Shared by both sides, so it imports neither.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("tako.tasks")

T = TypeVar("T")

#: Every spawned task that has not finished yet (the strong references).
_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Start ``coro`` as a named background task whose failure is logged, not lost."""
    task = asyncio.create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def running_names() -> list[str]:
    """Names of the spawned tasks that have not finished (sorted; for reprs and tests)."""
    return sorted(task.get_name() for task in _running)


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s failed", task.get_name(), exc_info=exc)


class TaskGroup:
    """Background tasks started with :func:`spawn` that are cancelled together."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"TaskGroup({sorted(t.get_name() for t in self._tasks)})"

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = spawn(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_all(self) -> None:
        """Cancel every task of the group and wait until they all finished."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
