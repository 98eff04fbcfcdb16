"""``tako deploy`` and the app commands end to end: the real ``tako`` CLI over real SSH to
two real hosts (sshd + tako-server in network namespaces), checked with ``curl``.

The tests of this module share two hosts and one client and run in order: deploy, cache,
secrets, logs, releases and rollback, scale, failures, delete.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.hosts import ClientHome, HostNetwork, TestHost, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PY_ROUTE = "hello-python.test"
NODE_ROUTE = "hello-node.test"


@pytest.fixture(scope="module")
def hosts(make_hosts: Callable[..., list[TestHost]]) -> list[TestHost]:
    return make_hosts(2)


@pytest.fixture(scope="module")
def cli(
    host_network: HostNetwork, hosts: list[TestHost], tmp_path_factory: pytest.TempPathFactory
) -> ClientHome:
    home = host_network.client_home(tmp_path_factory.mktemp("deploy-client"))
    for host in hosts:
        done = home.run_tako("servers", "add", host.address, "--name", host.name)
        assert done.returncode == 0, done.stdout + done.stderr
    return home


def _app(tmp: Path, example: str, route: str, servers: list[str]) -> Path:
    app = tmp / example
    shutil.copytree(EXAMPLES / example, app)
    toml = (app / "tako.toml").read_text().split("[envs.production]")[0]
    toml += f'[envs.production]\nroute = "{route}"\nservers = {json.dumps(servers)}\n'
    toml += f'\n[envs.staging]\nroute = "staging.{route}"\nservers = {json.dumps(servers[:1])}\n'
    (app / "tako.toml").write_text(toml)
    return app


@pytest.fixture(scope="module")
def py_app(hosts: list[TestHost], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _app(tmp_path_factory.mktemp("apps"), "python-app", PY_ROUTE, [h.name for h in hosts])


@pytest.fixture(scope="module")
def node_app(hosts: list[TestHost], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _app(tmp_path_factory.mktemp("apps"), "node-app", NODE_ROUTE, [h.name for h in hosts])


def tako(
    cli: ClientHome, app: Path | None, *args: str, **kw: object
) -> subprocess.CompletedProcess[str]:
    extra = ("-c", str(app / "tako.toml")) if app is not None else ()
    done = cli.run_tako(*args, *extra, timeout=300, **kw)  # type: ignore[arg-type]
    return done


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def fetch(host: TestHost, route: str, path: str = "/") -> str:
    done = host.curl(f"https://{route}{path}", "-k", "--fail")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_deploy_python_and_node_apps_to_two_hosts_in_parallel(
    cli: ClientHome, hosts: list[TestHost], py_app: Path, node_app: Path
) -> None:
    out = ok(tako(cli, py_app, "deploy", "--yes"))
    assert "URL     : https://hello-python.test" in out
    out = ok(tako(cli, node_app, "deploy", "--yes"))
    assert "URL     : https://hello-node.test" in out.splitlines()  # only when a server runs it
    for host in hosts:
        assert f"✓ {host.name}: deployed" in out.splitlines(), out
    for host in hosts:
        assert "Hello from hello-python (production, build nogit_" in fetch(host, PY_ROUTE)
        assert "from hello-node (node, build nogit_" in fetch(host, NODE_ROUTE)
        assert fetch(host, PY_ROUTE, "/hello.txt") == "static hello\n"


def test_status_shows_each_deployed_app_per_server(cli: ClientHome, hosts: list[TestHost]) -> None:
    out = ok(tako(cli, None, "servers", "status"))
    for host in hosts:
        assert host.name in out
    assert "hello-python/production" in out or "hello-python" in out
    assert "hello-node" in out


def test_second_deploy_reuses_the_artifact_and_skips_the_upload(
    cli: ClientHome, hosts: list[TestHost], py_app: Path
) -> None:
    out = ok(tako(cli, py_app, "deploy", "--yes", "--timings"))
    assert "cached" in out
    assert out.count("upload skipped") == 2
    timings = out.split("\nTimings\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert timings[0].startswith("build ") and timings[-1].startswith("total ")
    for host in hosts:  # the server reports its prepare time: prepare and rollout, no upload
        (line,) = [t for t in timings if t.startswith(f"{host.name} ")]
        phases = [part.split()[0] for part in line.split("  ")[1:-1] if part]
        assert phases == ["connect", "lock", "prepare", "rollout"], line


def test_secrets_set_and_sync_reach_the_app(
    cli: ClientHome, hosts: list[TestHost], py_app: Path
) -> None:
    ok(tako(cli, py_app, "secrets", "set", "SECRET_TOKEN", "--env", "production", input="s3cr3t\n"))
    out = ok(tako(cli, py_app, "secrets", "sync", "--env", "production"))
    assert "synced" in out and "s3cr3t" not in out
    for host in hosts:
        wait_for(
            lambda h=host: json.loads(fetch(h, PY_ROUTE, "/env")).get("SECRET_TOKEN") == "s3cr3t",
            f"the new secret on {host.name}",
            timeout=30,
        )
        app_json = list(host.paths.opt.glob("apps/hello-python/production/releases/*/app.json"))
        assert app_json and all("s3cr3t" not in p.read_text() for p in app_json)


def test_logs_show_app_output_from_both_hosts(
    cli: ClientHome, hosts: list[TestHost], py_app: Path
) -> None:
    for host in hosts:
        fetch(host, PY_ROUTE, "/from-logs-test")
    out = ok(tako(cli, py_app, "logs", "-n", "200"))
    for host in hosts:
        assert any(
            line.startswith(f"[{host.name}] ") and "GET /from-logs-test" in line
            for line in out.splitlines()
        ), out


def test_releases_list_and_rollback(cli: ClientHome, hosts: list[TestHost], py_app: Path) -> None:
    first = fetch(hosts[0], PY_ROUTE).split("build ")[1].split(",")[0]
    (py_app / "app.py").write_text((py_app / "app.py").read_text().replace("Hello", "Howdy"))
    (py_app / "tako.toml").write_text(
        (py_app / "tako.toml").read_text().replace('"Hello"', '"Howdy"')
    )
    ok(tako(cli, py_app, "deploy", "--yes"))
    assert fetch(hosts[0], PY_ROUTE).startswith("Howdy")
    listing = ok(tako(cli, py_app, "releases", "ls"))
    assert first in listing and listing.count("* ") >= 2
    ok(tako(cli, py_app, "releases", "rollback", first, "--yes"))
    for host in hosts:
        assert fetch(host, PY_ROUTE).startswith("Hello")
        assert (host.paths.opt / "apps/hello-python/production/current").resolve().name == first


def test_scale_changes_instances_on_one_server(
    cli: ClientHome, hosts: list[TestHost], py_app: Path
) -> None:
    ok(tako(cli, py_app, "scale", "2", "--server", hosts[0].name))

    def two_healthy() -> bool:
        out = tako(cli, None, "servers", "status").stdout
        return "2/2" in out

    wait_for(two_healthy, "two healthy instances", timeout=60)
    ok(tako(cli, py_app, "scale", "1"))


def test_a_held_lock_gives_a_clear_error(
    cli: ClientHome, hosts: list[TestHost], py_app: Path
) -> None:
    lock = hosts[0].paths.opt / "apps/hello-python/production/.deploy_lock"
    script = (
        "import asyncio, sys\n"
        "from tako_client.ssh import SshClient, SshTarget\n"
        "from tako_client.remote import RemoteServer\n"
        "async def main():\n"
        f"    conn = await SshClient.from_env().connect(SshTarget('{hosts[0].address}', 22))\n"
        "    remote = RemoteServer(conn)\n"
        "    await remote.hello()\n"
        "    await remote.lock('hello-python', 'production', 'someone-else')\n"
        "    print('locked', flush=True)\n"
        "    sys.stdin.readline()\n"
        "asyncio.run(main())\n"
    )
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=cli.env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert lock.exists()
        done = tako(cli, py_app, "deploy", "--yes")
        assert done.returncode == 1
        assert "someone-else" in done.stderr and "lock" in done.stderr
        assert "1/2 servers succeeded" in done.stderr
    finally:
        holder.communicate("\n", timeout=30)
    wait_for(lambda: not lock.exists(), "the lock to be released with its connection")


def test_one_host_down_the_other_still_succeeds(
    cli: ClientHome, hosts: list[TestHost], node_app: Path
) -> None:
    hosts[1].stop_server()
    try:
        done = tako(cli, node_app, "deploy", "--yes")
        assert done.returncode == 1
        assert hosts[1].name in done.stderr
        assert "1/2 servers succeeded" in done.stderr
        assert f"{hosts[0].name}: deployed" in done.stdout
    finally:
        hosts[1].start_server()


def test_changed_host_key_is_refused(
    cli: ClientHome, hosts: list[TestHost], py_app: Path, tmp_path: Path
) -> None:
    known = cli.known_hosts.read_text()
    other = hosts[1].host_key
    cli.forget_all()
    cli.trust(hosts[0], key=other)
    cli.trust(hosts[1])
    try:
        done = tako(cli, py_app, "logs", "-n", "1")
        assert done.returncode == 1
        assert "changed" in done.stderr.lower()
    finally:
        cli.known_hosts.write_text(known)


def test_delete_removes_the_app_and_is_idempotent(
    cli: ClientHome, hosts: list[TestHost], py_app: Path
) -> None:
    done = tako(cli, py_app, "delete")
    assert done.returncode == 1 and "--yes" in done.stderr
    ok(tako(cli, py_app, "delete", "--yes"))
    for host in hosts:
        assert not (host.paths.opt / "apps/hello-python/production").exists()
        assert (
            host.curl(f"https://{PY_ROUTE}/", "-k", "-o", "/dev/null", "-w", "%{http_code}").stdout
            == "404"
        )
    out = ok(tako(cli, py_app, "delete", "--yes"))
    assert "was not deployed" in out
