"""Per-app users with a real tako-server running as root (``TAKO_APP_USERS=on``).

Two apps; each serves ``/read?path=...`` (can this app's process read that file?). App A
must not read B's release files, B's data or B's ``/proc/<pid>/environ``; it reads its
own. Each runs as its own system user with ``no_new_privs``; the users go with
``tako delete``. (cgroup v2 limits and the OOM report cannot run on this machine: it
has a hybrid cgroup v1 hierarchy; their pure parts have unit tests.)
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tako_server.isolation import app_user_name
from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.integration.conftest import ServerProcess, deploy_message

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="per-app users need root"),
]

SUFFIX = f"{os.getpid() % 100000}"
APP_A, APP_B = f"isoa{SUFFIX}", f"isob{SUFFIX}"
APP = """
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

data = os.environ["TAKO_DATA_DIR"]
with open(os.path.join(data, "private.txt"), "w") as f:
    f.write("data of " + os.environ["TAKO_APP_NAME"])


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/read":
            try:
                with open(parse_qs(url.query)["path"][0], "rb") as f:
                    f.read(10)
                body = "readable"
            except PermissionError:
                body = "denied"
            except OSError as exc:
                body = f"error {exc}"
        elif url.path == "/whoami":
            body = json.dumps({"uid": os.getuid(), "pid": os.getpid(), "cwd": os.getcwd(),
                               "data": data})
        else:
            body = "ok"
        raw = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
"""


@pytest.fixture
def server_root() -> Iterator[Path]:
    """A server root app users can cross (pytest's own temp root is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="tako-isolation-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def users_cleaned() -> Iterator[None]:
    yield
    for app in (APP_A, APP_B):
        name = app_user_name(app, "production")
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=30)


def get(port: int, route: str, **query: str) -> str:
    url = f"http://127.0.0.1:{port}{route}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as answer:
        body: bytes = answer.read()
    return body.decode()


def deploy(server: ServerProcess, tmp_path: Path, app: str) -> dict[str, Any]:
    src = tmp_path / f"src-{app}"
    src.mkdir()
    (src / "app.py").write_text(APP)
    artifact, digest = place_artifact(tar_zst_from_dir(src), server.incoming)
    with server.client() as client:
        client.ok(deploy_message(artifact, digest, app=app, routes=[f"{app}.localhost"]))
        reply = client.ok({"command": "status", "app": app, "env": "production"})
    instance: dict[str, Any] = reply["apps"][0]["instances"][0]
    return instance


def test_each_app_runs_as_its_own_user_and_cannot_read_another_apps_files(
    server_root: Path, tmp_path: Path, users_cleaned: None
) -> None:
    server = ServerProcess(server_root / "server", env={"TAKO_APP_USERS": "on"})
    try:
        check_isolation(server.start(), tmp_path)
    except BaseException:
        print(f"----- tako-server output -----\n{server.output()}")
        raise
    finally:
        server.stop()


def check_isolation(server: ServerProcess, tmp_path: Path) -> None:
    a, b = deploy(server, tmp_path, APP_A), deploy(server, tmp_path, APP_B)
    who_a = json.loads(get(a["port"], "/whoami"))
    who_b = json.loads(get(b["port"], "/whoami"))

    assert who_a["uid"] == pwd.getpwnam(app_user_name(APP_A, "production")).pw_uid
    assert who_a["uid"] not in (0, who_b["uid"])
    status_a = Path(f"/proc/{a['pid']}/status").read_text()
    assert "NoNewPrivs:\t1" in status_a

    own = {"release": f"{who_a['cwd']}/app.py", "data": f"{who_a['data']}/private.txt"}
    theirs = {
        "release": f"{who_b['cwd']}/app.py",
        "data": f"{who_b['data']}/private.txt",
        "environ": f"/proc/{b['pid']}/environ",
    }
    assert {k: get(a["port"], "/read", path=p) for k, p in own.items()} == {
        "release": "readable",
        "data": "readable",
    }
    assert {k: get(a["port"], "/read", path=p) for k, p in theirs.items()} == {
        "release": "denied",
        "data": "denied",
        "environ": "denied",
    }
    log = server.data_dir / "apps" / APP_A / "production" / "shared" / "logs" / "current.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o711

    with server.client() as client:
        client.ok({"command": "delete", "app": APP_B, "env": "production"})
    with pytest.raises(KeyError):
        pwd.getpwnam(app_user_name(APP_B, "production"))


WORKER = "import os, time\nprint('worker uid', os.getuid(), flush=True)\ntime.sleep(120)\n"


def test_workflow_workers_run_as_the_apps_user(
    server_root: Path, tmp_path: Path, users_cleaned: None
) -> None:
    """A worker group's processes get the same user (and no_new_privs) as the instances."""
    server = ServerProcess(server_root / "server", env={"TAKO_APP_USERS": "on"}).start()
    try:
        src = tmp_path / "src-worker"
        src.mkdir()
        (src / "app.py").write_text(APP)
        (src / "worker.py").write_text(WORKER)
        artifact, digest = place_artifact(tar_zst_from_dir(src), server.incoming)
        group = {"name": "jobs", "run": ["python3", "worker.py"], "workers": 1}
        with server.client() as client:
            client.ok(deploy_message(
                artifact, digest, app=APP_A, routes=[f"{APP_A}.localhost"],
                workflows={"groups": [group]},
            ))  # fmt: skip
        log = server.data_dir / "apps" / APP_A / "production" / "shared" / "logs" / "current.log"
        uid = pwd.getpwnam(app_user_name(APP_A, "production")).pw_uid
        for _ in range(200):
            if "worker uid" in log.read_text():
                break
            time.sleep(0.1)
        assert f"[jobs] worker uid {uid}" in log.read_text()
    except BaseException:
        print(f"----- tako-server output -----\n{server.output()}")
        raise
    finally:
        server.stop()
