"""The supervisor runs container releases exactly like processes (Podman API, aiodocker).

A rootful Podman API service on a temp socket; the image is the busybox base made locally
(no registry) and each instance serves ``busybox httpd`` on ``$PORT``. Requests go to
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tako_server.supervisor import LaunchSpec, RolloutError
from tako_server.supervisor.spec import ContainerRun
from tests.helpers import podman as pm
from tests.integration.supervisor_apps.harness import (
    http_get,
    running_supervisor,
    wait_for,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(pm.skip_reason() is not None, reason=str(pm.skip_reason())),
]
KEY = "boxes/production"
# writes its environment as JSON-ish lines into /tmp/www, then serves it on $PORT
SERVE = (
    "mkdir -p /tmp/www && env > /tmp/www/env.txt && echo $APP_VERSION > /tmp/www/v.txt"
    " && echo started $APP_VERSION && httpd -f -v -p $HOST:$PORT -h /tmp/www"
    " & trap 'kill $!; exit 0' TERM; wait"
)


@pytest.fixture(scope="module")
def podman_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("podman")
    pm.ensure_cgroups()
    pm.ensure_base_image(root)
    with pm.podman_service(root / "podman.sock") as sock:
        yield sock
    pm.remove_containers(f"tako.app={KEY}")


def container_spec(
    root: Path, socket: Path, version: str = "v1", command: str = SERVE, **run: object
) -> LaunchSpec:
    workdir = root / "releases" / version
    workdir.mkdir(parents=True, exist_ok=True)
    return LaunchSpec(
        app="boxes",
        env="production",
        version=version,
        workdir=workdir,
        command=["/bin/sh", "-c", command],
        environ={"APP_VERSION": version, "TAKO_ENV": "production", "SECRET_TOKEN": "s3cr3t"},
        log_dir=root / "logs",
        container=replace(ContainerRun(image=pm.BASE_IMAGE, socket=socket), **run),  # type: ignore[arg-type]
    )


def env_of(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


async def test_container_instance_serves_port_on_loopback_with_env_limits_and_logs(
    tmp_path: Path, podman_socket: Path
) -> None:
    async with running_supervisor() as sup:
        result = await sup.deploy(container_spec(tmp_path, podman_socket), 1, 300)
        assert result.instances == 1
        [backend] = sup.backends(KEY)
        status, text = await http_get(backend.port, "/env.txt")
        assert status == 200
        env = env_of(text)
        assert env["PORT"] == str(backend.port) and env["HOST"] == "0.0.0.0"
        assert env["TAKO_INSTANCE"] == str(backend.instance_id)
        assert env["SECRET_TOKEN"] == "s3cr3t" and env["TAKO_ENV"] == "production"
        inspect = json.loads(
            pm.podman("ps", "--filter", f"label=tako.app={KEY}", "--format", "json")
        )
        [info] = inspect
        cid = info["Id"]
        details = json.loads(pm.podman("inspect", cid))[0]
        host = details["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["Memory"] == 512 * 1024 * 1024 and host["PidsLimit"] == 512
        bindings = details["NetworkSettings"]["Ports"][f"{backend.port}/tcp"]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
        # a read-only root file system refuses writes outside /tmp
        out = pm.podman("exec", cid, "/bin/sh", "-c", "touch /x 2>&1 || echo refused")
        assert "refused" in out or "Read-only" in out
        log_dir = tmp_path / "logs"
        await wait_for(
            lambda: "started v1" in (log_dir / "current.log").read_text(), 5, "the app's log line"
        )
        await sup.remove(KEY)
        assert pm.podman("ps", "-aq", "--filter", f"label=tako.app={KEY}").strip() == ""


async def test_rolling_update_crash_restart_and_scale_to_zero_of_containers(
    tmp_path: Path, podman_socket: Path
) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(container_spec(tmp_path, podman_socket, "v1"), 2, 300)
        assert len(sup.backends(KEY)) == 2
        await sup.deploy(container_spec(tmp_path, podman_socket, "v2"), 2, 300)
        backends = sup.backends(KEY)
        assert len(backends) == 2
        for backend in backends:
            assert (await http_get(backend.port, "/v.txt"))[1].strip() == "v2"
        # a crash: the container is killed from outside; the supervisor restarts it
        victim = backends[0]
        cids = pm.podman("ps", "-q", "--filter", f"label=tako.app={KEY}").split()
        pm.podman("kill", cids[0])
        await wait_for(
            lambda: len(sup.backends(KEY)) == 2 and victim not in sup.backends(KEY),
            20,
            "a restarted instance",
        )
        await sup.scale(KEY, 0)
        assert len(sup.backends(KEY)) <= 1  # one warm instance until the idle timeout
        await sup.remove(KEY)


async def test_container_that_exits_at_once_fails_the_rollout_and_old_keeps_serving(
    tmp_path: Path, podman_socket: Path
) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(container_spec(tmp_path, podman_socket, "v1"), 1, 300)
        [old] = sup.backends(KEY)
        with pytest.raises(RolloutError) as info:
            await sup.deploy(
                container_spec(tmp_path, podman_socket, "v2", "echo bye-now; exit 3"), 1, 300
            )
        assert any("bye-now" in line for line in info.value.log_tail)
        assert sup.backends(KEY) == [old]
        assert (await http_get(old.port, "/v.txt"))[1].strip() == "v1"
        await sup.remove(KEY)


async def test_image_that_does_not_listen_on_port_times_out_and_missing_image_fails(
    tmp_path: Path, podman_socket: Path
) -> None:
    async with running_supervisor() as sup:
        await sup.deploy(container_spec(tmp_path, podman_socket, "v1"), 1, 300)
        [old] = sup.backends(KEY)
        with pytest.raises(RolloutError):
            await sup.deploy(
                container_spec(tmp_path, podman_socket, "v2", "exec httpd -f -p 0.0.0.0:1"), 1, 300
            )
        assert sup.backends(KEY) == [old]
        with pytest.raises(RolloutError) as info:
            await sup.deploy(
                container_spec(tmp_path, podman_socket, "v3", image="localhost/nope:1"), 1, 300
            )
        assert "localhost/nope:1" in str(info.value)
        assert sup.backends(KEY) == [old]
        await asyncio.sleep(0)
        await sup.remove(KEY)
