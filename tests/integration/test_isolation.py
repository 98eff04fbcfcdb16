"""Per-app users with a real tako-server running as root (``TAKO_APP_USERS=on``).

Two apps; each serves ``/read?path=...`` (can this app's process read that file?). App A
must not read B's release files, B's data or B's ``/proc/<pid>/environ``; it reads its
own. Each runs as its own system user with ``no_new_privs``; the users go with
``tako delete``.

Limits (cgroup v1: this machine and CI have the hybrid layout): each server runs in a
cgroup of its own under the test's (``memory``, ``cpu`` and ``pids`` hierarchies), so its
``apps/`` children are this test's alone and go at teardown. A memory hog (64 MiB limit)
is killed by the OOM killer, reported so, restarted with backoff, while another app keeps
serving through the edge.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tako_server.cgroups import CONTROLLERS, own_cgroups_v1, v1_dir, v1_mounts
from tako_server.isolation import app_user_name
from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.integration.conftest import ServerProcess, deploy_message

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="per-app users need root"),
]

SUFFIX = f"{os.getpid() % 100000}"
APP_A, APP_B = f"isoa{SUFFIX}", f"isob{SUFFIX}"
HOG, STEADY = f"hog{SUFFIX}", f"steady{SUFFIX}"
APPS = (APP_A, APP_B, HOG, STEADY)
APP = """
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

data = os.environ["TAKO_DATA_DIR"]
HELD = []
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
        elif url.path == "/hog":  # more than the 64 MiB limit, every page touched
            hog = b"x" * (200 << 20)
            body = str(len(hog))
        elif url.path == "/hold":  # 40 MiB kept: under 64, over 32
            HELD.append(b"x" * (40 << 20))
            body = "held"
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
    for app in APPS:
        name = app_user_name(app, "production")
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=30)


def v1_hierarchies(pid: int | str = "self") -> dict[str, Path]:
    """The cgroup directory of process ``pid`` in the ``memory``, ``cpu`` and ``pids``
    hierarchies ({} without all three: a cgroup v2 host)."""
    mounts = v1_mounts(Path("/proc/self/mountinfo").read_text())
    own = own_cgroups_v1(Path(f"/proc/{pid}/cgroup").read_text())
    dirs = {c: v1_dir(*mounts[c], own[c]) for c in CONTROLLERS if c in mounts and c in own}
    return {c: d for c, d in dirs.items() if d is not None} if len(dirs) == 3 else {}


class CgroupServer(ServerProcess):
    """A tako-server that starts in ``cgroups`` (one directory per hierarchy) so the
    ``apps/`` it makes there are this test's alone."""

    def __init__(self, root: Path, cgroups: list[Path], **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.cgroups = cgroups

    def command(self) -> list[str]:
        join = "".join(f'echo $$ > "{path}/cgroup.procs" && ' for path in self.cgroups)
        return ["sh", "-c", f'{join}exec "$@"', "sh", *super().command()]


@pytest.fixture
def server_cgroups() -> Iterator[list[Path]]:
    """A cgroup of this test's under its own in each v1 hierarchy (none on a v2 host);
    removed at teardown with everything the servers made in it."""
    made = []
    for parent in v1_hierarchies().values():
        path = parent / f"tako-test-{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir()
        made.append(path)
    try:
        yield made
    finally:
        for path in made:
            remove_cgroup_tree(path)


def remove_cgroup_tree(top: Path, timeout: float = 10.0) -> None:
    """rmdir ``top`` and its children, deepest first; processes still in them (what the
    test's server started) are killed first. Bounded."""
    for path in sorted(top.rglob("*/"), key=lambda p: len(p.parts), reverse=True) + [top]:
        if not (path / "cgroup.procs").exists():
            continue
        deadline = time.monotonic() + timeout
        while True:
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            try:
                path.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def isolated_server(
    server_root: Path,
    users_cleaned: None,
    server_cgroups: list[Path],
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., CgroupServer]]:
    """Start servers with per-app users (as root) in this test's cgroups; at teardown
    they stop (with their apps), then the cgroups go (killing what is left in them),
    then the users (``userdel`` refuses a user whose processes run)."""
    servers: list[CgroupServer] = []

    def start(config: str = "", **kwargs: Any) -> CgroupServer:
        server = CgroupServer(
            server_root / f"server{len(servers)}", server_cgroups,
            env={"TAKO_APP_USERS": "on"}, **kwargs,
        )  # fmt: skip
        servers.append(server)
        server.data_dir.mkdir(parents=True, exist_ok=True)
        (server.data_dir / "server-config.toml").write_text(config)
        return server.start()

    yield start
    for server in servers:
        server.stop()
    if any(
        getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call")
    ):
        for server in servers:
            print(f"----- tako-server output -----\n{server.output()}")


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
    isolated_server: Callable[..., CgroupServer], tmp_path: Path
) -> None:
    check_isolation(isolated_server(), tmp_path)


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


WORKER = """import os, time
print('worker uid', os.getuid(), 'pid', os.getpid(), flush=True)
time.sleep(120)
"""


def test_workflow_workers_run_as_the_apps_user(
    isolated_server: Callable[..., CgroupServer], server_cgroups: list[Path], tmp_path: Path
) -> None:
    """A worker group's processes get the same user and cgroup as the instances."""
    server = isolated_server()
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
    found = re.search(rf"\[jobs\] worker uid {uid} pid (\d+)", log.read_text())
    assert found is not None, log.read_text()
    if server_cgroups:  # and in the app's cgroup, as its instances are
        apps = {base / "apps" / f"{APP_A}-production" for base in server_cgroups}
        assert set(v1_hierarchies(found[1]).values()) == apps


HOG_CONFIG = f'[apps."{HOG}/production"]\nmemory_mb = 64\ncpu_percent = 50\npids_max = 64\n'
OOM = "killed by the OOM killer (the app's memory limit is 64 MiB)"


class EdgeLoop:
    """Requests to one app through the edge, back to back, until stopped: failures counted."""

    def __init__(self, port: int, host: str) -> None:
        self.port, self.host = port, host
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EdgeLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/"
        while not self._stop.is_set():
            request = urllib.request.Request(url, headers={"Host": self.host})
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    answer.read()
                self.ok += 1
            except OSError as exc:
                self.failures.append(repr(exc))
            time.sleep(0.01)


def status(server: ServerProcess, app: str) -> dict[str, Any]:
    with server.client() as client:
        reply: dict[str, Any] = client.ok({"command": "status", "app": app, "env": "production"})
    return reply["apps"][0]


def hog(server: ServerProcess, pid: int, port: int) -> int:
    """Make instance ``pid`` allocate past its limit; the pid of its replacement."""
    with contextlib.suppress(OSError):  # the process dies under the request
        get(port, "/hog")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        app = status(server, HOG)
        live = [i for i in app["instances"] if i["state"] == "healthy" and i["pid"] != pid]
        if live:
            new: int = live[0]["pid"]
            return new
        time.sleep(0.1)
    raise AssertionError(f"no healthy replacement of pid {pid}: {status(server, HOG)}")


def assert_in_app_cgroup(pid: int, dirs: dict[str, Path]) -> None:
    assert v1_hierarchies(pid) == dirs
    for path in dirs.values():
        assert str(pid) in (path / "cgroup.procs").read_text().split()


@pytest.mark.skipif(not v1_hierarchies(), reason="covers cgroup v1 (hybrid hosts)")
def test_a_memory_hog_is_killed_by_its_cgroup_limit_and_others_keep_serving(
    isolated_server: Callable[..., CgroupServer], server_cgroups: list[Path], tmp_path: Path
) -> None:
    (server_cgroups[1] / "cpu.cfs_quota_us").write_text("150000")  # like a unit's CPUQuota=
    server = isolated_server(HOG_CONFIG, edge=True)
    assert "per-app limits in cgroup v1" in server.output()
    steady, first = deploy(server, tmp_path, STEADY), deploy(server, tmp_path, HOG)
    dirs = {
        c: base / "apps" / f"{HOG}-production"
        for c, base in zip(CONTROLLERS, server_cgroups, strict=True)
    }
    assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
    assert not memsw.exists() or memsw.read_text().strip() == str(64 << 20)
    assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (dirs["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert (dirs["pids"] / "pids.max").read_text().strip() == "64"
    assert_in_app_cgroup(first["pid"], dirs)
    assert v1_hierarchies(steady["pid"])["memory"].name == f"{STEADY}-production"
    steady_cpu = server_cgroups[1] / "apps" / f"{STEADY}-production" / "cpu.cfs_quota_us"
    assert steady_cpu.read_text().strip() == "150000"  # its 200 % capped: more is refused

    with EdgeLoop(server.http_port, f"{STEADY}.localhost") as loop:
        second = hog(server, first["pid"], first["port"])
        third = hog(server, second, status(server, HOG)["instances"][0]["port"])
        time.sleep(0.3)
    assert loop.failures == [] and loop.ok > 20, (loop.ok, loop.failures[:3])

    log = (server.data_dir / "apps" / HOG / "production/shared/logs/current.log").read_text()
    assert f"exited unexpectedly ({OOM})" in log
    assert "restarting in 0.50s (failure 1 in a row)" in log
    assert "restarting in 1.00s (failure 2 in a row)" in log  # the backoff doubled
    assert status(server, HOG)["last_error"].endswith(f"exited unexpectedly ({OOM})")
    assert "oom_kill 2" in (dirs["memory"] / "memory.oom_control").read_text().splitlines()
    assert_in_app_cgroup(third, dirs)
    assert get(steady["port"], "/") == "ok"

    # a daemon killed: the next adopts the instance in its cgroup and still tells an OOM
    # kill from another death; the limit lowered below what the app holds stays until later
    assert get(status(server, HOG)["instances"][0]["port"], "/hold") == "held"
    (server.data_dir / "server-config.toml").write_text(HOG_CONFIG.replace("= 64", "= 32"))
    assert server.proc is not None
    server.proc.kill()
    server.stop()
    server.start()
    assert [i["pid"] for i in status(server, HOG)["instances"]] == [third]
    assert_in_app_cgroup(third, dirs)
    assert "cannot lower it to 33554432 while the app uses more: kept" in server.output()
    assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    hog(server, third, status(server, HOG)["instances"][0]["port"])
    log = (server.data_dir / "apps" / HOG / "production/shared/logs/current.log").read_text()
    assert log.count(f"exited unexpectedly ({OOM})") == 3  # the limit in force: 64 MiB

    with server.client() as client:
        client.ok({"command": "delete", "app": HOG, "env": "production"})
    assert not any(path.exists() for path in dirs.values())
