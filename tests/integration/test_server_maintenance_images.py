"""Maintenance mode and ``[images]`` through a REAL ``tako-server run`` with its edge: the
control socket, the state database, a restart, a redeploy and a rollback, with real app
processes; requests go through the server's edge on loopback (``*.localhost`` hosts are
served on plain HTTP as if they were HTTPS).
"""

from __future__ import annotations

import http.client
import io
import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.integration.conftest import APPS_DIR, ControlClient, ServerProcess, deploy_message

APP = {"app": "web", "env": "production"}
HOST = "web.localhost"


def artifact(server: ServerProcess, tmp_path: Path, files: dict[str, bytes]) -> tuple[str, str]:
    src = tmp_path / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(APPS_DIR / "pyapp", src)
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return place_artifact(tar_zst_from_dir(src), server.incoming)


def via_edge(
    server: ServerProcess, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": HOST, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def wait_status(server: ServerProcess, status: int, path: str = "/", timeout: float = 15) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        got, _, body = via_edge(server, path)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"{path}: {got}, not {status}: {body[:200]!r}"
        time.sleep(0.05)


def app_status(client: ControlClient) -> dict[str, Any]:
    apps = client.ok({"command": "status", **APP})["apps"]
    assert len(apps) == 1
    result: dict[str, Any] = apps[0]
    return result


def test_maintenance_answers_503_keeps_instances_and_outlives_restart_and_redeploy(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(edge=True).start()
    page = b"<html><body>planned work</body></html>"
    name, digest = artifact(server, tmp_path, {"public/503.html": page})
    with server.client() as c:
        c.ok(deploy_message(name, digest))
        assert b"build=v1" in wait_status(server, 200)
        reply = c.request({"command": "maintenance", **APP, "enabled": True, "message": "x" * 1001})
        assert reply["status"] == "error" and "longer than 1000" in reply["message"]
        on = c.ok({"command": "maintenance", **APP, "enabled": True, "message": "ignored"})
        assert on["enabled"] is True and on["since"]
        assert wait_status(server, 503) == page  # the release's own page
        status = app_status(c)
        assert status["maintenance"] is True and status["maintenance_since"] == on["since"]
        pids = [i["pid"] for i in status["instances"]]
        assert status["healthy_instances"] == 1  # the instance keeps running
        port = status["instances"][0]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as direct:
            assert b"build=v1" in direct.read()
    _, headers, _ = via_edge(server)
    assert headers["retry-after"] == "60" and headers["cache-control"] == "no-store"

    server.restart()
    assert wait_status(server, 503) == page  # kept in the state database
    name, digest = artifact(server, tmp_path, {"public/other.txt": b"v2"})
    with server.client() as c:
        c.ok(deploy_message(name, digest, version="v2"))  # a release without 503.html
        body = wait_status(server, 503)
        assert b"planned work" not in body and b"Down for maintenance" in body
        assert app_status(c)["maintenance"] is True
        assert [i["pid"] for i in app_status(c)["instances"]] != pids  # v2 rolled out
        off = c.ok({"command": "maintenance", **APP, "enabled": False})
        assert off == {"app": "web", "env": "production", "enabled": False, "message": "",
                       "since": None}  # fmt: skip
        assert b"build=v2" in wait_status(server, 200)
        assert app_status(c)["maintenance"] is False


def test_maintenance_of_an_unknown_app_is_refused_and_delete_forgets_it(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(edge=True).start()
    with server.client() as c:
        reply = c.request({"command": "maintenance", **APP, "enabled": True})
        assert reply["status"] == "error" and "not deployed" in reply["message"]
        name, digest = artifact(server, tmp_path, {})
        c.ok(deploy_message(name, digest))
        c.ok({"command": "maintenance", **APP, "enabled": True, "message": "<b>soon</b>"})
        assert b"&lt;b&gt;soon&lt;/b&gt;" in wait_status(server, 503)
        c.ok({"command": "delete", **APP})
        name, digest = artifact(server, tmp_path, {})
        c.ok(deploy_message(name, digest, version="v3"))
        assert b"build=v3" in wait_status(server, 200)  # a new app is not in maintenance
        assert app_status(c)["maintenance"] is False


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 90, 200)).save(out, "PNG")
    return out.getvalue()


def test_images_of_a_release_are_served_restored_after_restart_and_rolled_back(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(edge=True).start()
    manifest = {
        "runtime": "python",
        "main": "app.py",
        "images": {"local_patterns": ["/img/**"], "sizes": [320], "formats": ["webp"]},
    }
    name, digest = artifact(server, tmp_path, {"public/img/a.png": png((1200, 800))})
    target = "/_tako/image?url=/img/a.png&w=320"
    with server.client() as c:
        bad = dict(manifest, images={"sizes": [0]})
        reply = c.request(deploy_message(name, digest, manifest=bad))
        assert reply["status"] == "error" and "sizes" in reply["message"]
        c.ok(deploy_message(name, digest, manifest=manifest))
    wait_status(server, 200, target)
    status, headers, body = via_edge(server, target, {"Accept": "image/webp"})
    assert status == 200 and headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(body)).size == (320, 213)
    cache = server.data_dir / "apps/web/production/shared/image-cache"
    assert len(list(cache.glob("*.img"))) == 2  # JPEG for the first (no Accept), WebP
    assert via_edge(server, "/_tako/image?url=/img/a.png&w=640")[0] == 400

    server.restart()
    status, _, again = via_edge(server, target, {"Accept": "image/webp"})
    assert (status, again) == (200, body)
    name, digest = artifact(server, tmp_path, {"public/img/a.png": png((1200, 800))})
    with server.client() as c:
        c.ok(deploy_message(name, digest, version="v2"))  # no [images] in this release
        assert b"build=v2" in via_edge(server, target)[2]  # the app answers the path now
        c.ok({"command": "rollback", **APP, "version": "v1"})  # v1's [images] come back
    assert via_edge(server, target, {"Accept": "image/webp"})[2] == body
