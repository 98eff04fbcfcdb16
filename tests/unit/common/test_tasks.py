"""Background tasks: named, referenced until done, failures logged; groups cancel together."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tako_common.tasks import TaskGroup, running_names, spawn


async def test_a_spawned_task_is_named_and_referenced_until_it_finishes() -> None:
    release = asyncio.Event()
    task = spawn(release.wait(), name="waiter")
    assert task.get_name() == "waiter" and "waiter" in running_names()
    release.set()
    assert await task is True
    assert "waiter" not in running_names()


async def test_a_failure_is_logged_with_the_task_name(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    task = spawn(boom(), name="exploder")
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "background task exploder failed"
    assert record.exc_info is not None and str(record.exc_info[1]) == "boom"


async def test_cancellation_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    task = spawn(asyncio.Event().wait(), name="cancelled")
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_group_cancels_its_tasks_and_forgets_finished_ones() -> None:
    group = TaskGroup()
    waiting = group.spawn(asyncio.Event().wait(), "waiting")
    done = group.spawn(asyncio.sleep(0), "done")
    await done
    await asyncio.sleep(0)
    assert len(group) == 1 and "waiting" in repr(group)
    await group.cancel_all()
    assert waiting.cancelled() and len(group) == 0
