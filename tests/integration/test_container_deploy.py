"""Container releases through a real tako-server: deploy, rollback, failures, delete.

The app image is built with ``podman build`` FROM the busybox base made locally (no
registry), saved with ``podman save`` and shipped inside a ``.tar.zst`` artifact as
``image.tar``, exactly as ``tako deploy`` does. The server talks to a private rootful
Podman API service (``TAKO_CONTAINER_SOCKET``).
"""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.helpers import podman as pm
from tests.helpers.artifacts import place_artifact
from tests.integration.conftest import ControlClient, ServerProcess, deploy_message

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(pm.skip_reason() is not None, reason=str(pm.skip_reason())),
]
APP = {"app": "boxes", "env": "production"}
KEY = "boxes/production"
CONTAINERFILE = """FROM {base}
RUN mkdir -p /www && echo {version} > /www/v.txt
CMD ["/bin/sh", "-c", "env > /tmp/env.txt; cp /www/v.txt /tmp/; echo serving {version}; \
httpd -f -p $HOST:$PORT -h /tmp & trap 'kill $!; exit 0' TERM; wait"]
"""


@pytest.fixture(scope="module")
def podman_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("podman")
    pm.ensure_cgroups()
    pm.ensure_base_image(root)
    with pm.podman_service(root / "podman.sock") as sock:
        yield sock
    pm.remove_containers(f"tako.app={KEY}")
    for ref in pm.podman("images", "--format", "{{.Repository}}:{{.Tag}}").split():
        if ref.startswith(("localhost/tako/boxes-", "localhost/tako-test/app-")):
            pm.podman("rmi", "-f", ref)


@pytest.fixture
def server(
    server_factory: Callable[..., ServerProcess], podman_socket: Path
) -> Iterator[ServerProcess]:
    yield server_factory(env={"TAKO_CONTAINER_SOCKET": str(podman_socket)}).start()


def container_artifact(tmp_path: Path, version: str, cmd: str | None = None) -> bytes:
    """``podman build`` + ``podman save`` packed as the client packs it (image.tar)."""
    ctx = tmp_path / f"ctx-{version}"
    ctx.mkdir(exist_ok=True)
    text = CONTAINERFILE.format(base=pm.BASE_IMAGE, version=version)
    if cmd is not None:
        text = text.split("CMD", 1)[0] + f'CMD ["/bin/sh", "-c", "{cmd}"]\n'
    (ctx / "Containerfile").write_text(text)
    tag = f"localhost/tako-test/app-{version}:1"
    pm.podman("build", "--pull=never", "-q", "-t", tag, "-f", str(ctx / "Containerfile"), str(ctx))
    image = tmp_path / f"image-{version}.tar"
    pm.podman("save", "-o", str(image), tag)
    pm.podman("rmi", tag)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(image, "image.tar")
    return zstandard.ZstdCompressor(level=3).compress(buf.getvalue())


def manifest(version: str, read_only: bool = True) -> dict[str, Any]:
    return {
        "runtime": "container",
        "main": "Containerfile",
        "container": {"built_tag": f"boxes:{version}", "read_only": read_only},
    }


def deploy(
    control: ControlClient, server: ServerProcess, data: bytes, version: str
) -> dict[str, Any]:
    name, digest = place_artifact(data, server.incoming)
    return control.request(
        deploy_message(
            name,
            digest,
            **APP,
            version=version,
            manifest=manifest(version),
            vars={"GREETING": "hi"},
            secrets={"API_KEY": "k-123"},
        )
    )


def status(control: ControlClient) -> dict[str, Any]:
    [app] = control.ok({"command": "status", **APP})["apps"]
    result: dict[str, Any] = app
    return result


def get(control: ControlClient, path: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        healthy = [i for i in status(control)["instances"] if i["state"] == "healthy"]
        if healthy:
            try:
                url = f"http://127.0.0.1:{healthy[0]['port']}{path}"
                with urllib.request.urlopen(url, timeout=5) as r:
                    return str(r.read().decode())
            except OSError as exc:
                last = exc
        time.sleep(0.1)
    raise AssertionError(f"no healthy instance answered {path}: {last}")


def images() -> list[str]:
    out = pm.podman("images", "--format", "{{.Repository}}:{{.Tag}}")
    return sorted(ref for ref in out.split() if ref.startswith("localhost/tako/boxes-"))


def test_deploy_rollback_failures_and_delete_of_a_container_app(
    server: ServerProcess, tmp_path: Path
) -> None:
    with server.client() as control:
        reply = deploy(control, server, container_artifact(tmp_path, "v1"), "v1")
        assert reply["status"] == "ok", reply
        assert get(control, "/v.txt").strip() == "v1"
        env = dict(line.split("=", 1) for line in get(control, "/env.txt").splitlines())
        assert env["GREETING"] == "hi" and env["API_KEY"] == "k-123"
        assert env["TAKO_APP_NAME"] == "boxes" and env["TAKO_BUILD"] == "v1"
        assert "PATH" not in env or not env["PATH"].startswith(str(server.data_dir))
        release = server.data_dir / "apps/boxes/production/releases/v1"
        assert not (release / "image.tar").exists(), "the archive goes once loaded"
        assert json.loads((release / "app.json").read_text())["image"].endswith(":v1")
        assert images() == ["localhost/tako/boxes-production:v1"]
        info = control.ok({"command": "server_info"})
        assert info["containers"].startswith("podman ")

        assert deploy(control, server, container_artifact(tmp_path, "v2"), "v2")["status"] == "ok"
        assert get(control, "/v.txt").strip() == "v2"
        # a container that exits at once: the deploy fails with its last words, v2 serves
        # (one that never listens is in test_supervisor_containers: 30 s here)
        crash = container_artifact(tmp_path, "v3", "echo crashing-now; exit 4")
        failed = deploy(control, server, crash, "v3")
        assert failed["status"] == "error", failed
        assert any("crashing-now" in line for line in failed["data"]["log_tail"])
        assert "localhost/tako/boxes-production:v3" not in images()
        assert get(control, "/v.txt").strip() == "v2"
        # a corrupted archive: refused by its checksum before anything changes
        name, digest = place_artifact(container_artifact(tmp_path, "v4"), server.incoming)
        (server.incoming / name).write_bytes(b"corrupted" * 10)
        bad = control.request(
            deploy_message(name, digest, **APP, version="v4", manifest=manifest("v4"))
        )
        assert bad["status"] == "error" and "sha256" in bad["message"]

        control.ok({"command": "rollback", **APP, "version": "v1"})
        assert get(control, "/v.txt").strip() == "v1"
        control.ok({"command": "scale", **APP, "instances": 2})
        assert len([i for i in status(control)["instances"] if i["state"] == "healthy"]) == 2

        control.ok({"command": "delete", **APP})
        assert images() == []
        assert pm.podman("ps", "-aq", "--filter", f"label=tako.app={KEY}").strip() == ""


def test_container_release_survives_a_server_restart(server: ServerProcess, tmp_path: Path) -> None:
    with server.client() as control:
        assert deploy(control, server, container_artifact(tmp_path, "r1"), "r1")["status"] == "ok"
    server.restart()
    with server.client() as control:
        assert get(control, "/v.txt").strip() == "r1"
    # a crashed server leaves its containers running: the next start adopts them
    before = pm.podman("ps", "-q", "--filter", f"label=tako.app={KEY}").split()
    assert len(before) == 1
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait(timeout=10)
    assert pm.podman("ps", "-q", "--filter", f"label=tako.app={KEY}").split() == before
    server.start()
    with server.client() as control:
        assert get(control, "/v.txt").strip() == "r1"
        assert pm.podman("ps", "-q", "--filter", f"label=tako.app={KEY}").split() == before
        control.ok({"command": "delete", **APP})
    assert os.path.exists(server.data_dir)


def test_a_takeover_keeps_the_old_container_serving_until_it_ends(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A SIGHUP takeover of a server running a container app completes: the old container
    answers every request until the successor serves (the successor must not remove the
    containers its predecessor still serves with), the predecessor exits 0, and the app
    answers through the successor afterwards. (A server without the edge once closed
    the ready pipe with its unused listeners, so the predecessor gave the takeover up.)"""
    from tests.integration.test_upgrade import server_pids, stop_pid

    with server.client() as control:
        assert deploy(control, server, container_artifact(tmp_path, "t1"), "t1")["status"] == "ok"
        assert get(control, "/v.txt").strip() == "t1"
        [port] = [i["port"] for i in status(control)["instances"] if i["state"] == "healthy"]
    old = server.proc
    assert old is not None
    link = os.readlink(server.socket)

    def moved() -> bool:  # the control link names the successor: it serves
        try:
            return os.readlink(server.socket) != link
        except FileNotFoundError:  # the link is being replaced
            return False

    try:
        old.send_signal(signal.SIGHUP)
        ok, failures = 0, []
        deadline = time.monotonic() + 60
        while not moved() and "takeover failed" not in server.output():
            assert time.monotonic() < deadline, "the successor did not serve within 60 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v.txt", timeout=2) as r:
                    ok += r.read().strip() == b"t1"
            except OSError as exc:
                if not moved():  # once the successor serves, the old container may go
                    failures.append(repr(exc))
            time.sleep(0.05)
        assert failures == [] and ok > 0, f"{len(failures)} failed, {ok} ok: {failures[:3]}"
        deadline = time.monotonic() + 30  # the predecessor drains and exits, or gives up
        while old.poll() is None and "takeover failed" not in server.output():
            assert time.monotonic() < deadline, "the predecessor neither exited nor gave up"
            time.sleep(0.1)
        assert "takeover failed" not in server.output(), server.output()[-2000:]
        assert old.wait(timeout=30) == 0, "the predecessor did not end the takeover cleanly"
        assert "took over from pid" in server.output()
        [successor] = server_pids(server.data_dir)
        assert os.readlink(server.socket).endswith(f"-{successor}.sock")
        with server.client() as control:
            assert get(control, "/v.txt").strip() == "t1"
            control.ok({"command": "delete", **APP})
    finally:
        for pid in server_pids(server.data_dir):
            if pid != old.pid:
                stop_pid(pid)
