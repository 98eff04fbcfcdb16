"""A native Bun app pinned to a version the host does not have, end to end.

The host has no route out, so its tako-server downloads the pinned Bun from an npm
registry mirror on its gateway address (``tests/helpers/npm_mirror.py``, proxying the real
registry and caching the tarball machine-wide); the app answers with ``Bun.version``.
The client builds without Bun (``[build] install = "true"``: the app has no
dependencies).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.hosts import ClientHome, HostNetwork, TestHost
from tests.helpers.npm_mirror import NpmMirror

pytestmark = pytest.mark.timeout(240)
ROUTE = "pinned-bun.test"
PIN = "1.1.38"


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def host(make_hosts: Callable[..., list[TestHost]]) -> Iterator[TestHost]:
    (made,) = make_hosts(1)
    mirror = NpmMirror(made.gateway, proxy=True)
    try:
        made.stop_server()
        made.start_server(env={"TAKO_RUNTIME_REGISTRY": mirror.url})
        yield made
    finally:
        mirror.close()


@pytest.fixture(scope="module")
def cli(
    host_network: HostNetwork, host: TestHost, tmp_path_factory: pytest.TempPathFactory
) -> ClientHome:
    home = host_network.client_home(tmp_path_factory.mktemp("pinned-client"))
    ok(home.run_tako("servers", "add", host.address, "--name", host.name))
    return home


def bun_app(directory: Path, host: TestHost, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tako.toml").write_text(
        f'name = "pinned-bun"\nruntime = "bun@{version}"\nmain = "index.ts"\n\n'
        f'[build]\ninstall = "true"\n\n'
        f'[envs.production]\nroute = "{ROUTE}"\nservers = {json.dumps([host.name])}\n'
    )
    (directory / "index.ts").write_text(
        "Bun.serve({ hostname: process.env.HOST, port: Number(process.env.PORT),\n"
        "  fetch: () => new Response(`bun ${Bun.version}\\n`) });\n"
    )
    return directory


def test_a_bun_app_pinned_to_a_version_the_host_lacks_runs_that_version(
    cli: ClientHome, host: TestHost, tmp_path: Path
) -> None:
    assert host.exec("command -v bun", check=False).returncode != 0, "the host has no bun"
    app = bun_app(tmp_path / "app", host, PIN)
    ok(cli.run_tako("deploy", "--yes", "-c", str(app / "tako.toml"), timeout=200))
    page = host.curl(f"https://{ROUTE}/", "-k", "--fail")
    assert page.stdout == f"bun {PIN}\n", page.stdout + page.stderr
    status = ok(cli.run_tako("servers", "status"))
    assert f"pinned runtimes: bun@{PIN}" in status, status
    cached = host.paths.opt / "runtimes" / "bun" / PIN / "bin" / "bun"
    assert cached.is_file()


def test_an_unavailable_version_fails_the_deploy_and_the_old_one_keeps_serving(
    cli: ClientHome, host: TestHost, tmp_path: Path
) -> None:
    app = bun_app(tmp_path / "app", host, "0.0.999")
    done = cli.run_tako("deploy", "--yes", "-c", str(app / "tako.toml"), timeout=200)
    assert done.returncode == 1
    assert "0.0.999" in done.stdout + done.stderr
    page = host.curl(f"https://{ROUTE}/", "-k", "--fail")
    assert page.stdout == f"bun {PIN}\n"
