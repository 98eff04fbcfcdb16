"""Deploys through a real tako-server with real app processes (no edge proxy needed).

Requests reach the app directly on the instance port the status reports.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.integration.conftest import (
    APPS_DIR,
    NODEAPP_MANIFEST,
    ControlClient,
    ServerProcess,
    deploy_message,
    tree_listing,
)

APP = {"app": "web", "env": "production"}


def _pyapp(
    server: ServerProcess, tmp_path: Path, extra: dict[str, str] | None = None
) -> tuple[str, str]:
    src = tmp_path / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(APPS_DIR / "pyapp", src)
    for rel, text in (extra or {}).items():
        (src / rel).write_text(text)
    return place_artifact(tar_zst_from_dir(src), server.incoming)


def _status(client: ControlClient) -> dict[str, Any]:
    apps = client.ok({"command": "status", **APP})["apps"]
    assert len(apps) == 1
    result: dict[str, Any] = apps[0]
    return result


def _get(client: ControlClient, path: str, timeout: float = 20.0) -> str:
    """GET ``path`` from a healthy instance (polls until one is routable)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        healthy = [i for i in _status(client)["instances"] if i["state"] == "healthy"]
        if healthy:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{healthy[0]['port']}{path}", timeout=5
                ) as r:
                    return str(r.read().decode())
            except OSError as exc:
                last = exc
        time.sleep(0.1)
    raise AssertionError(f"no healthy instance answered {path}: {last}")


def test_deploy_starts_the_app_with_its_environment(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    name, digest = _pyapp(tako_server, tmp_path)
    data = control.ok(
        deploy_message(
            name,
            digest,
            vars={"GREETING": "hi"},
            secrets={"API_KEY": "sekret-value-42"},
        )
    )
    assert (data["new_app"], data["version"], data["instances"]) == (True, "v1", 1)
    assert "build=v1" in _get(control, "/")
    env = json.loads(_get(control, "/env"))
    assert env["TAKO_ENV"] == "production" and env["TAKO_APP_NAME"] == "web"
    assert (env["GREETING"], env["API_KEY"], env["HOST"]) == ("hi", "sekret-value-42", "127.0.0.1")
    app_dir = tako_server.data_dir / "apps/web/production"
    assert os.readlink(app_dir / "current") == "releases/v1"
    app_json = (app_dir / "releases/v1/app.json").read_text()
    assert "sekret-value-42" not in app_json and list(json.loads(app_json)["vars"]) == ["GREETING"]
    for path in tako_server.data_dir.glob("runtime-state.sqlite3*"):
        assert b"sekret-value-42" not in path.read_bytes()
    status = _status(control)
    assert (status["state"], status["version"], status["routes"]) == (
        "running",
        "v1",
        ["web.localhost"],
    )


def test_redeploy_rollback_and_release_list_move_current(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    name, digest = _pyapp(tako_server, tmp_path)
    control.ok(deploy_message(name, digest, version="v1"))
    name2, digest2 = _pyapp(tako_server, tmp_path, {"extra.txt": "v2"})
    assert control.ok(deploy_message(name2, digest2, version="v2"))["new_app"] is False
    assert "build=v2" in _get(control, "/")
    listed = control.ok({"command": "list_releases", **APP})["releases"]
    assert [(r["version"], r["current"]) for r in listed] == [("v2", True), ("v1", False)]
    control.ok({"command": "rollback", **APP, "version": "v1"})
    assert os.readlink(tako_server.data_dir / "apps/web/production/current") == "releases/v1"
    assert _status(control)["version"] == "v1"
    assert "build=v1" in _get(control, "/")
    missing = control.request({"command": "rollback", **APP, "version": "nope"})
    assert missing["status"] == "error" and "release 'nope'" in missing["message"]
    assert "v1" in missing["hint"] and "v2" in missing["hint"]


def test_failed_deploy_leaves_state_and_current_unchanged(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    name, digest = _pyapp(tako_server, tmp_path)
    control.ok(deploy_message(name, digest, version="v1"))
    bad, bad_digest = _pyapp(
        tako_server, tmp_path, {"app.py": "import sys\nprint('boom at start')\nsys.exit(7)\n"}
    )
    before = tree_listing(tako_server.data_dir / "apps")
    reply = control.request(deploy_message(bad, bad_digest, version="v2"))
    assert reply["status"] == "error", reply
    assert any("boom at start" in line for line in reply["data"]["log_tail"])
    assert not (tako_server.data_dir / "apps/web/production/releases/v2").exists()
    after = [p for p in tree_listing(tako_server.data_dir / "apps") if "shared/logs" not in p]
    assert after == [p for p in before if "shared/logs" not in p]
    assert os.readlink(tako_server.data_dir / "apps/web/production/current") == "releases/v1"
    status = _status(control)
    assert (status["version"], status["state"]) == ("v1", "running")
    assert "build=v1" in _get(control, "/")


def test_failed_first_deploy_leaves_no_app_behind(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    bad, digest = _pyapp(tako_server, tmp_path, {"app.py": "raise SystemExit(2)\n"})
    reply = control.request(deploy_message(bad, digest))
    assert reply["status"] == "error"
    assert control.ok({"command": "list"}) == {"apps": []}
    assert not (tako_server.data_dir / "apps/web/production/releases").exists()
    assert not (tako_server.data_dir / "apps/web/production/current").exists()


def test_route_conflict_with_another_app_names_both_routes(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    name, digest = _pyapp(tako_server, tmp_path)
    control.ok(deploy_message(name, digest, routes=["shared.localhost/api/*"]))
    reply = control.request(
        deploy_message(name, digest, app="other", routes=["shared.localhost/api/*"])
    )
    assert reply["status"] == "error" and reply["code"] == "route_conflict"
    assert "'shared.localhost/api/*' of 'other/production'" in reply["message"]
    assert "of 'web/production'" in reply["message"]


def test_restart_restores_apps_without_a_redeploy(
    tako_server: ServerProcess, tmp_path: Path
) -> None:
    name, digest = _pyapp(tako_server, tmp_path)
    with tako_server.client() as c:
        c.ok(deploy_message(name, digest, secrets={"API_KEY": "kept"}))
        c.ok({"command": "scale", **APP, "instances": 2})
    tako_server.restart()
    with tako_server.client() as c:
        status = _status(c)
        assert (status["version"], status["desired_instances"]) == ("v1", 2)
        assert json.loads(_get(c, "/env"))["API_KEY"] == "kept"
        deadline = time.monotonic() + 20
        while _status(c)["healthy_instances"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _status(c)["healthy_instances"] == 2


def test_stop_persists_across_restart_and_delete_is_idempotent(
    tako_server: ServerProcess, tmp_path: Path
) -> None:
    name, digest = _pyapp(tako_server, tmp_path)
    with tako_server.client() as c:
        c.ok(deploy_message(name, digest))
        c.ok({"command": "stop", **APP})
        assert (_status(c)["state"], _status(c)["instances"]) == ("stopped", [])
    tako_server.restart()
    with tako_server.client() as c:
        assert _status(c)["state"] == "stopped"
        assert c.ok({"command": "delete", **APP})["existed"] is True
        assert c.ok({"command": "delete", **APP})["existed"] is False
        assert c.ok({"command": "list"}) == {"apps": []}
        assert c.ok({"command": "routes"}) == {"routes": []}
    assert not (tako_server.data_dir / "apps/web").exists()


def test_update_secrets_rolls_instances_with_the_same_release(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    name, digest = _pyapp(tako_server, tmp_path)
    control.ok(deploy_message(name, digest, secrets={"API_KEY": "old"}))
    data = control.ok({"command": "update_secrets", **APP, "secrets": {"API_KEY": "new"}})
    assert data["restarted"] is True
    assert json.loads(_get(control, "/env"))["API_KEY"] == "new"
    assert _status(control)["version"] == "v1"


def test_logs_returns_history_and_follow_streams_new_lines(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    name, digest = _pyapp(tako_server, tmp_path)
    control.ok(deploy_message(name, digest))
    _get(control, "/chatty")
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline and not any("chatty line 1999" in line for line in lines):
        lines = control.ok({"command": "logs", **APP, "lines": 50})["lines"]
    assert any("chatty line 1999" in line for line in lines) and len(lines) == 50
    with tako_server.client() as follower:
        first = follower.ok({"command": "logs", **APP, "lines": 0, "follow": True})
        assert first["lines"] == []
        _get(control, "/marker-path")
        seen = ""
        deadline = time.monotonic() + 20
        while "/marker-path" not in seen and time.monotonic() < deadline:
            seen = " ".join(follower.read_line()["data"]["lines"])
        assert "/marker-path" in seen


def test_deploy_with_requirements_creates_a_venv(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    name, digest = _pyapp(tako_server, tmp_path, {"requirements.txt": "# no dependencies\n"})
    control.ok(deploy_message(name, digest))
    release = tako_server.data_dir / "apps/web/production/releases/v1"
    assert (release / ".venv/bin/python").exists()
    assert "build=v1" in _get(control, "/")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_app_deploys_with_node_env_production(
    tako_server: ServerProcess, control: ControlClient
) -> None:
    name, digest = place_artifact(tar_zst_from_dir(APPS_DIR / "nodeapp"), tako_server.incoming)
    control.ok(deploy_message(name, digest, manifest=dict(NODEAPP_MANIFEST)))
    env = json.loads(_get(control, "/env"))
    assert (env["NODE_ENV"], env["TAKO_BUILD"]) == ("production", "v1")


def test_second_deploy_of_the_same_app_while_one_runs_is_refused(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    slow_source = "import time\ntime.sleep(2)\n" + (APPS_DIR / "pyapp/app.py").read_text()
    name, digest = _pyapp(tako_server, tmp_path, {"app.py": slow_source})
    control.send_raw(json.dumps(deploy_message(name, digest)).encode() + b"\n")
    release = tako_server.data_dir / "apps/web/production/releases/v1"
    deadline = time.monotonic() + 10
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    with tako_server.client() as other:
        reply = other.request(deploy_message(name, digest))
    assert reply["status"] == "error" and reply["code"] == "busy", reply
    assert "deploy of web/production is already in progress" in reply["message"]
    assert control.read_line()["status"] == "ok"


def _via_edge(server: ServerProcess, host: str, path: str = "/") -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}{path}", headers={"Host": host}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def test_edge_routes_to_the_app_and_again_after_a_restart(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(edge=True).start()
    name, digest = _pyapp(server, tmp_path)
    routes = ["web.localhost", "*.web.localhost", "api.localhost/v1/*"]
    with server.client() as c:
        c.ok(deploy_message(name, digest, routes=routes))
        statuses = {cert["host"]: cert["state"] for cert in _status(c)["certificates"]}
    assert statuses == {
        "web.localhost": "self_signed",
        "*.web.localhost": "self_signed",
        "api.localhost": "self_signed",
    }
    assert "build=v1" in _via_edge(server, "web.localhost")
    assert "build=v1" in _via_edge(server, "x.web.localhost")
    assert "build=v1" in _via_edge(server, "api.localhost", "/v1/thing")
    server.restart()
    assert "build=v1" in _via_edge(server, "web.localhost")
