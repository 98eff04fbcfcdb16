"""A restore that finds the app's containers, with a real :class:`AppRunner` and a real
Podman service: a paused container never hangs the restore (it is force-removed after a
bounded wait), an engine that cannot list containers fails the restore (no duplicates
start beside unsupervised ones), and ``tako delete``'s removal takes the log cursors too.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tako_server import podman
from tako_server.supervisor import runner as runner_module
from tako_server.supervisor.container import CURSORS_DIR, ContainerError
from tako_server.supervisor.logs import AppLog
from tako_server.supervisor.runner import AppRunner
from tako_server.supervisor.spec import ContainerRun, LaunchSpec, SupervisorSettings
from tests.helpers import podman as pm
from tests.integration.test_container_deploy import KEY, podman_socket

__all__ = ["podman_socket"]

pytestmark = pytest.mark.timeout(60)
needs_podman = pytest.mark.skipif(pm.skip_reason() is not None, reason=str(pm.skip_reason()))


def launch(tmp_path: Path, socket: Path) -> LaunchSpec:
    app, env = KEY.split("/")
    return LaunchSpec(
        app=app, env=env, version="v1", workdir=tmp_path, command=[], environ={},
        log_dir=tmp_path / "logs", container=ContainerRun(pm.BASE_IMAGE, socket),
    )


def labelled_container() -> str:
    """A container with the labels of instance 1 of the app's release v1."""
    return pm.podman(
        "run", "-d", "--label", f"tako.app={KEY}", "--label", "tako.version=v1",
        "--label", "tako.instance=1", "--label", "tako.port=45678",
        "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
        "--stop-timeout", "1", pm.BASE_IMAGE, "sleep", "300",
    ).strip()


def app_containers() -> list[str]:
    return pm.podman("ps", "-aq", "--no-trunc", "--filter", f"label=tako.app={KEY}").split()


async def test_a_restore_that_cannot_list_the_containers_fails(tmp_path: Path) -> None:
    runner = AppRunner(KEY, SupervisorSettings(), AppLog(tmp_path / "logs"), on_change=None,
                       clock=time.monotonic)
    try:
        with pytest.raises(ContainerError, match="no container engine socket"):
            await runner.adopt(launch(tmp_path, tmp_path / "missing.sock"), False)
    finally:
        await runner.close()


@needs_podman
async def test_a_paused_container_is_force_removed_and_the_restore_ends(
    tmp_path: Path, podman_socket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "BURY_WAIT", 1.0, raising=False)
    box = labelled_container()
    runner = AppRunner(KEY, SupervisorSettings(), AppLog(tmp_path / "logs"), on_change=None,
                       clock=time.monotonic)
    try:
        pm.podman("pause", box)
        adopted = await asyncio.wait_for(runner.adopt(launch(tmp_path, podman_socket), False), 20)
        assert adopted == ()
        assert box not in app_containers()
        assert list((tmp_path / "logs" / CURSORS_DIR).glob("*.cursor")) == []
    finally:
        await runner.close()
        pm.remove_containers(f"tako.app={KEY}")


@needs_podman
async def test_removing_the_app_containers_takes_their_log_cursors(
    tmp_path: Path, podman_socket: Path
) -> None:
    box = labelled_container()
    try:
        cursors = tmp_path / "logs" / CURSORS_DIR
        cursors.mkdir(parents=True)
        (cursors / f"{box}.cursor").write_bytes(b"\0" * 16)
        assert await podman.remove_app_containers(podman_socket, KEY, tmp_path / "logs") == 1
        assert app_containers() == []
        assert list(cursors.iterdir()) == []
    finally:
        pm.remove_containers(f"tako.app={KEY}")
