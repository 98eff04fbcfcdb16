"""Provider credentials through a real tako-server: sealed at rest with the server key,
replaced by each successful deploy, dropped by a deploy without them and by delete, never in
the app's environment."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

from tako_server.credential_store import CredentialStore
from tako_server.secrets_store import SecretBox
from tako_server.state import StateStore
from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.integration.conftest import APPS_DIR, ControlClient, ServerProcess, deploy_message

TOKEN = "cf-token-0a1b2c3d4e5f"
PG = "postgresql://tako:pg-secret-99@127.0.0.1:5432/queue"


def _stored(server: ServerProcess) -> dict[str, str]:
    state = StateStore.open(server.data_dir / "runtime-state.sqlite3")
    try:
        box = SecretBox((server.data_dir / "secrets.key").read_bytes())
        return CredentialStore(box, state).get("web", "production")
    finally:
        state.close()


def _env_of_app(control: ControlClient) -> dict[str, str]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        apps = control.ok({"command": "status", "app": "web", "env": "production"})["apps"]
        healthy = [i for i in apps[0]["instances"] if i["state"] == "healthy"]
        if healthy:
            url = f"http://127.0.0.1:{healthy[0]['port']}/env"
            with urllib.request.urlopen(url, timeout=5) as response:
                env: dict[str, str] = json.loads(response.read())
                return env
        time.sleep(0.1)
    raise AssertionError("no healthy instance")


def test_credentials_are_sealed_replaced_and_dropped(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    shutil.copytree(APPS_DIR / "pyapp", src)
    name, digest = place_artifact(tar_zst_from_dir(src), tako_server.incoming)
    both = {"ssl.cloudflare": TOKEN, "postgres_url": PG}
    control.ok(deploy_message(name, digest, credentials=both))
    assert _stored(tako_server) == both
    for path in tako_server.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"pg-secret-99" not in data and TOKEN.encode() not in data, path
    env = _env_of_app(control)
    assert TOKEN not in json.dumps(env) and "pg-secret-99" not in json.dumps(env)

    bad = control.request(deploy_message(name, digest, version="v2", credentials={"x.y": "1"}))
    assert bad["status"] == "error" and "unknown credential 'x.y'" in json.dumps(bad)
    assert _stored(tako_server) == both  # a refused request changes nothing

    name2, digest2 = place_artifact(tar_zst_from_dir(src), tako_server.incoming)
    control.ok(deploy_message(name2, digest2, version="v2", credentials={"postgres_url": PG}))
    assert _stored(tako_server) == {"postgres_url": PG}
    name3, digest3 = place_artifact(tar_zst_from_dir(src), tako_server.incoming)
    control.ok(deploy_message(name3, digest3, version="v3"))
    assert _stored(tako_server) == {}

    control.ok(deploy_message(name3, digest3, version="v4", credentials=both))
    control.ok({"command": "delete", "app": "web", "env": "production"})
    assert _stored(tako_server) == {}
