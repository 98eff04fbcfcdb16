"""``tako servers upgrade`` / ``restart`` end to end: a real host (sshd + tako-server in a
network namespace), the real ``tako`` CLI, and HTTPS clients through the host's edge that
must not see one failed request while tako-server hands over to a new process.

The load and its retry rule are those of ``tests/integration/test_upgrade.py``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.hosts import SOCKET_PATH, ClientHome, HostNetwork, TestHost, wait_for
from tests.integration.test_upgrade import Load, Target, insecure_tls, run_load, until

pytestmark = pytest.mark.timeout(240)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROUTE = "upgrade-python.test"
LOAD_LIMIT = 90.0  # the command waits for the old process to drain and exit
MAX_REQUESTS = 200_000


@pytest.fixture(scope="module")
def host(make_hosts: Callable[..., list[TestHost]]) -> TestHost:
    (made,) = make_hosts(1)
    return made


@pytest.fixture(scope="module")
def cli(
    host_network: HostNetwork, host: TestHost, tmp_path_factory: pytest.TempPathFactory
) -> ClientHome:
    home = host_network.client_home(tmp_path_factory.mktemp("upgrade-client"))
    done = home.run_tako("servers", "add", host.address, "--name", host.name)
    assert done.returncode == 0, done.stdout + done.stderr
    return home


@pytest.fixture(scope="module")
def deployed(cli: ClientHome, host: TestHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    app = tmp_path_factory.mktemp("apps") / "python-app"
    shutil.copytree(EXAMPLES / "python-app", app)
    toml = (app / "tako.toml").read_text().split("[envs.production]")[0]
    toml += f'[envs.production]\nroute = "{ROUTE}"\nservers = {json.dumps([host.name])}\n'
    (app / "tako.toml").write_text(toml)
    ok(cli.run_tako("deploy", "--yes", "-c", str(app / "tako.toml"), timeout=300))
    wait_for(
        lambda: host.curl(f"https://{ROUTE}/", "-k", "--fail").returncode == 0,
        "the app through the edge",
        timeout=30,
    )
    return app


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def server_pid(host: TestHost) -> int:
    """The pid behind ``tako.sock`` (``tako-<pid>.sock``)."""
    link = host.exec(f"readlink {SOCKET_PATH}").stdout.strip()
    return int(link.removeprefix("tako-").removesuffix(".sock"))


async def run_under_load(
    host: TestHost, command: Callable[[], subprocess.CompletedProcess[str]]
) -> tuple[Load, subprocess.CompletedProcess[str]]:
    target = Target(host.address, 443, ROUTE, b"Hello from hello-python", insecure_tls())
    load = Load(target, max_requests=MAX_REQUESTS)
    loader = asyncio.create_task(run_load(load, clients=3, limit=LOAD_LIMIT))
    await until(lambda: load.ok >= 100, "load warm-up", 20)
    started = time.monotonic()
    done = await asyncio.to_thread(command)
    print(f"command took {time.monotonic() - started:.1f}s; {load.ok} requests so far")
    after = load.ok
    await until(lambda: load.ok >= after + 100, "requests after the handover", 20)
    load.stop.set()
    await loader
    return load, done


@pytest.mark.parametrize("command", ["upgrade", "restart"])
async def test_servers_command_hands_over_without_failing_a_request(
    cli: ClientHome, host: TestHost, deployed: Path, command: str
) -> None:
    old_pid = server_pid(host)
    load, done = await run_under_load(
        host, lambda: cli.run_tako("servers", command, host.name, timeout=200)
    )
    out = ok(done)
    new_pid = server_pid(host)
    assert new_pid != old_pid
    assert f"pid {old_pid} -> {new_pid}" in out
    assert load.failures == [], f"{len(load.failures)} failed of {load.ok}: {load.failures[:5]}"
    print(f"{command} under load: {load.ok} ok, {load.retries} idle-close retries")
    assert not host.exec(f"sed 's/.*) //' /proc/{old_pid}/stat", check=False).stdout.startswith(
        ("R", "S", "D")
    )  # gone, or a zombie its parent (the harness) has not reaped yet
    status = ok(cli.run_tako("servers", "status"))
    assert "mode normal" in status and "1/1 healthy" in status, status


def test_upgrade_with_a_missing_tarball_is_refused_before_touching_the_server(
    cli: ClientHome, host: TestHost, tmp_path: Path
) -> None:
    old_pid = server_pid(host)
    missing = tmp_path / "tako-server-linux-x86_64-glibc.tar.gz"
    done = cli.run_tako("servers", "upgrade", host.name, "--artifact", str(missing))
    assert done.returncode == 1
    assert "does not exist" in done.stderr
    assert server_pid(host) == old_pid


@pytest.mark.parametrize("command", ["restart", "upgrade"])
def test_a_takeover_that_fails_is_reported_with_its_reason_and_the_old_server_serves_on(
    cli: ClientHome, host: TestHost, deployed: Path, command: str
) -> None:
    """The successor cannot start (an invalid server-config.toml): the CLI reads the
    rolled-back takeover from ``server_info`` and fails at once, naming the reason."""
    old_pid = server_pid(host)
    config = "/opt/tako/server-config.toml"
    host.exec(f"printf '[server]\\nno_such_setting = 1\\n' > {config}")
    try:
        started = time.monotonic()
        done = cli.run_tako("servers", command, host.name, timeout=200)
        took = time.monotonic() - started
    finally:
        host.exec(f"rm -f {config}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "could not restart: the new tako-server (pid " in done.stderr, done.stderr
    assert f"exited with code 1 before it was ready; pid {old_pid} keeps serving" in done.stderr
    assert took < 60, f"the failure took {took:.0f}s to be reported"
    assert server_pid(host) == old_pid
    status = ok(cli.run_tako("servers", "status"))
    assert "mode normal" in status and "1/1 healthy" in status, status
