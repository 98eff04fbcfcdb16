"""Container instances outlive tako-server, as process instances do (``test_adoption.py``).

A SIGHUP takeover and a ``kill -9`` + restart of the daemon: the same container (by ID)
before and after, no second container, the instance healthy and answering, its numbered
output lines in the app log exactly once; a container that died while no daemon ran is
replaced; a ``systemctl restart`` (``prepare-stop --keep-apps`` + SIGTERM) keeps it and a
plain stop (``systemctl stop``) stops and removes it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import podman as pm
from tests.integration.conftest import ServerProcess
from tests.integration.test_adoption import assert_contiguous
from tests.integration.test_container_deploy import (
    APP,
    KEY,
    container_artifact,
    deploy,
    get,
    podman_socket,
    server,
    status,
)
from tests.integration.test_upgrade import (
    kill_daemon,
    server_pids,
    stop_pid,
    wait_for,
)

__all__ = ["podman_socket", "server"]

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(pm.skip_reason() is not None, reason=str(pm.skip_reason())),
]
TICKING = (
    "cp /www/v.txt /tmp/; (i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.02; done) &"
    " httpd -f -p $HOST:$PORT -h /tmp & trap 'kill $!; exit 0' TERM; wait"
)


def containers() -> list[str]:
    return sorted(pm.podman("ps", "-q", "--no-trunc", "--filter", f"label=tako.app={KEY}").split())


def settled_containers(server: ServerProcess, count: int = 1) -> list[str]:
    """The app's containers once ``count`` run, are healthy and stay so for a second."""
    def healthy() -> bool:
        with server.client() as control:
            states = [i["state"] for i in status(control)["instances"]]
        return states == ["healthy"] * count and len(containers()) == count

    wait_for(healthy, f"{count} healthy container(s)", 30)
    found = containers()
    time.sleep(1.0)
    assert containers() == found
    return found


def ticks(server: ServerProcess) -> list[int]:
    with server.client() as control:
        lines = control.ok({"command": "logs", **APP, "lines": 100_000})["lines"]
    pattern = re.compile(r"\[out\] \[1\] tick (\d+)$")
    return [int(m.group(1)) for line in lines if (m := pattern.search(line))]


def log_text(server: ServerProcess) -> str:
    with server.client() as control:
        return "\n".join(control.ok({"command": "logs", **APP, "lines": 100_000})["lines"])


@pytest.fixture
def cleanup(server: ServerProcess) -> Iterator[None]:
    yield
    for pid in server_pids(server.data_dir):
        if server.proc is None or pid != server.proc.pid:
            stop_pid(pid)
    pm.remove_containers(f"tako.app={KEY}")


def test_a_container_survives_a_takeover_and_a_kill_9_restart_and_is_adopted(
    server: ServerProcess, tmp_path: Path, cleanup: None
) -> None:
    with server.client() as control:
        reply = deploy(control, server, container_artifact(tmp_path, "a1", TICKING), "a1")
        assert reply["status"] == "ok", reply
    before = settled_containers(server)

    # 1. SIGHUP takeover
    old = server.proc
    assert old is not None
    old.send_signal(signal.SIGHUP)
    assert old.wait(60) == 0
    server.proc = None
    assert settled_containers(server) == before
    with server.client() as control:
        assert get(control, "/v.txt").strip() == "a1"
        successor = control.ok({"command": "server_info"})["pid"]

    # 2. kill -9 of the daemon, then a new daemon
    kill_daemon(server, successor)
    time.sleep(0.5)  # the container runs (and prints) with no daemon at all
    assert containers() == before
    server.start()
    assert settled_containers(server) == before
    with server.client() as control:
        assert get(control, "/v.txt").strip() == "a1"

    # 3. its numbered lines are in the log exactly once, across both hand-overs
    time.sleep(0.5)
    assert_contiguous(ticks(server), "container stdout")
    assert log_text(server).count("adopted version a1") == 2


def test_a_restart_keeps_a_container_a_dead_one_is_replaced_and_a_stop_removes_it(
    server: ServerProcess, tmp_path: Path, cleanup: None
) -> None:
    with server.client() as control:
        reply = deploy(control, server, container_artifact(tmp_path, "d1", TICKING), "d1")
        assert reply["status"] == "ok", reply
    kept = settled_containers(server)
    # what systemctl restart does (prepare-stop --keep-apps, SIGTERM) keeps it
    done = subprocess.run(
        [sys.executable, "-m", "tako_server.cli", "prepare-stop", "--data-dir",
         str(server.data_dir), "--keep-apps"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    server.stop()
    assert containers() == kept
    server.start()
    [before] = settled_containers(server)
    assert [before] == kept
    assert server.proc is not None
    kill_daemon(server, server.proc.pid)
    pm.podman("kill", before)  # dies while no server watches
    wait_for(lambda: containers() == [], "the container to die", 15)
    server.start()
    [now] = settled_containers(server)
    assert now != before
    assert f"container {before[:12]} exited with" in log_text(server)
    assert pm.podman("ps", "-aq", "--filter", f"id={before}").strip() == ""  # removed

    server.stop()  # SIGTERM without the keep-apps marker: a stop stops the container
    wait_for(lambda: pm.podman("ps", "-aq", "--filter", f"label=tako.app={KEY}").strip() == "",
             "the container to be removed", 30)
