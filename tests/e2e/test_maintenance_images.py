"""``tako maintenance`` and ``[images]`` end to end: the real ``tako`` CLI over real SSH to a
real host (sshd + tako-server in a network namespace), checked with ``curl``.

One host and one app, in order: deploy with ``[images]`` (a resized WebP through the
edge), maintenance on (503 page, ``tako servers status`` shows it, the instance keeps
running), maintenance off (the app answers again).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.hosts import ClientHome, HostNetwork, TestHost

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROUTE = "maint-python.test"


@pytest.fixture(scope="module")
def host(make_hosts: Callable[..., list[TestHost]]) -> TestHost:
    return make_hosts(1)[0]


@pytest.fixture(scope="module")
def cli(
    host_network: HostNetwork, host: TestHost, tmp_path_factory: pytest.TempPathFactory
) -> ClientHome:
    home = host_network.client_home(tmp_path_factory.mktemp("maintenance-client"))
    done = home.run_tako("servers", "add", host.address, "--name", host.name)
    assert done.returncode == 0, done.stdout + done.stderr
    return home


@pytest.fixture(scope="module")
def app(host: TestHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    app = tmp_path_factory.mktemp("apps") / "python-app"
    shutil.copytree(EXAMPLES / "python-app", app)
    toml = (app / "tako.toml").read_text().split("[envs.production]")[0]
    toml = toml.replace('name = "hello-python"', 'name = "maint-python"')
    toml += f'[envs.production]\nroute = "{ROUTE}"\nservers = ["{host.name}"]\n'
    toml += '\n[images]\nlocal_patterns = ["/img/**"]\nsizes = [320, 640]\n'
    (app / "tako.toml").write_text(toml)
    (app / "public" / "img").mkdir(parents=True)
    Image.new("RGB", (1280, 960), (30, 120, 200)).save(app / "public" / "img" / "photo.png")
    return app


def tako(cli: ClientHome, app: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    extra = ("-c", str(app / "tako.toml")) if app is not None else ()
    return cli.run_tako(*args, *extra, timeout=300)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def status_and_body(host: TestHost, path: str, *args: str) -> tuple[int, str]:
    done = host.curl(f"https://{ROUTE}{path}", "-k", "-w", "\n%{http_code}", *args)
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def test_deploy_with_images_serves_a_resized_webp(
    cli: ClientHome, host: TestHost, app: Path, tmp_path: Path
) -> None:
    done = tako(cli, app, "deploy", "--yes")
    assert f"URL     : https://{ROUTE}" in ok(done)
    assert "not implemented" not in done.stderr  # [images] is acted on, not ignored
    target = tmp_path / "photo.webp"
    done = host.curl(
        f"https://{ROUTE}/_tako/image?url=/img/photo.png&w=320",
        "-k", "--fail", "-H", "Accept: image/webp", "-o", str(target),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Image.open(target) as image:
        assert (image.format, image.size) == ("WEBP", (320, 240))
    assert status_and_body(host, "/_tako/image?url=/img/photo.png&w=500")[0] == 400


def test_maintenance_on_answers_503_and_status_shows_it(
    cli: ClientHome, host: TestHost, app: Path
) -> None:
    out = ok(tako(cli, app, "maintenance", "on", "--message", "Upgrading <db>, back at 5"))
    assert f"{host.name}: maint-python/production: maintenance on since" in out
    assert "maintenance on since" in out and "the edge answers 503" in out
    code, body = status_and_body(host, "/")
    assert code == 503
    assert "Upgrading &lt;db&gt;, back at 5" in body
    headers = host.curl(f"https://{ROUTE}/", "-k", "-sS", "-D", "-", "-o", "/dev/null").stdout
    assert "retry-after: 60" in headers.lower()
    status = ok(tako(cli, None, "servers", "status"))
    line = next(line for line in status.splitlines() if "maint-python/production" in line)
    assert "MAINTENANCE since" in line and "1/1 healthy" in line  # the instance keeps running
    done = tako(cli, app, "maintenance", "off", "--message", "x")
    assert done.returncode == 1 and "--message only goes with" in done.stderr


def test_maintenance_off_lets_requests_reach_the_app_again(
    cli: ClientHome, host: TestHost, app: Path
) -> None:
    out = ok(tako(cli, app, "maintenance", "off"))
    assert "maintenance off" in out
    code, body = status_and_body(host, "/")
    assert code == 200 and "maint-python" in body
    status = ok(tako(cli, None, "servers", "status"))
    assert "MAINTENANCE" not in status
    ok(tako(cli, app, "delete", "--yes"))
