"""Framework presets end to end: the real ``tako`` CLI builds real projects (packages from the
npm registry and PyPI) and deploys them to one network-namespace host, checked over HTTPS.

- a Vite app (``npm create vite``-style): ``npm ci`` + ``vite build`` locally; the host gets
  only ``public/`` and Tako's static server, and serves the page, its hashed bundle, the
  public dir and a client-side route;
- a Django app: a local venv runs ``collectstatic`` into ``public/static``; the host builds
  its own venv from PyPI and gunicorn serves ``mysite.wsgi:application``; the edge serves
  the collected CSS;
- a pnpm project: the host installs its dependency with ``pnpm install --prod
  --frozen-lockfile`` from the npm registry.

The host reaches the registries only through :class:`tests.e2e.egress.RegistryProxy`.
Local package downloads are cached in ``build/e2e-cache`` (npm and pip caches) across runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.egress import RegistryProxy
from tests.e2e.hosts import ClientHome, HostNetwork, TestHost

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "apps"
CACHE = REPO / "build" / "e2e-cache"
DEPLOY_TIMEOUT = 600


@pytest.fixture(scope="module")
def host(make_hosts: Callable[..., list[TestHost]]) -> TestHost:
    (made,) = make_hosts(1)
    return made


@pytest.fixture(scope="module")
def registry(host: TestHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProxy]:
    proxy = RegistryProxy(host, tmp_path_factory.mktemp("egress") / "proxy.log")
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def cli(
    host_network: HostNetwork,
    host: TestHost,
    registry: RegistryProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> ClientHome:
    home = host_network.client_home(tmp_path_factory.mktemp("presets-client"))
    done = home.run_tako("servers", "add", host.address, "--name", host.name)
    assert done.returncode == 0, done.stdout + done.stderr
    return home


def build_env() -> dict[str, str]:
    """Local builds: Debian's python3 first (the django venv), package caches kept."""
    for name in ("npm", "pip"):
        (CACHE / name).mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"/usr/bin:{os.environ.get('PATH', '/bin')}",
        "npm_config_cache": str(CACHE / "npm"),
        "PIP_CACHE_DIR": str(CACHE / "pip"),
    }


def app_copy(tmp: Path, name: str, top: str, route: str, server: str) -> Path:
    app = tmp / name
    shutil.copytree(APPS / name, app, ignore=shutil.ignore_patterns("node_modules", "dist"))
    (app / "tako.toml").write_text(
        f'name = "{name}"\n{top}\n\n[envs.production]\nroute = "{route}"\n'
        f"servers = {json.dumps([server])}\n"
    )
    return app


def deploy(cli: ClientHome, app: Path) -> str:
    done = cli.run_tako(
        "deploy", "--yes", "-c", str(app / "tako.toml"), timeout=DEPLOY_TIMEOUT, env=build_env()
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def get(host: TestHost, url: str) -> subprocess.CompletedProcess[str]:
    """``curl -k -i`` (headers and body) of an HTTPS URL on ``host``."""
    return host.curl(url, "-k", "-i", "--fail", timeout=30)


def release_dir(host: TestHost, app: str) -> Path:
    return (host.paths.opt / "apps" / app / "production" / "current").resolve()


def test_config_shows_what_the_vite_preset_resolves_to(cli: ClientHome, tmp_path: Path) -> None:
    app = app_copy(tmp_path, "viteapp", 'preset = "vite"', "viteapp.test", "h")
    done = cli.run_tako("config", "--json", "-c", str(app / "tako.toml"))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["runtime"], data["preset"], data["package_manager"], data["main"]) == (
        "node",
        "vite",
        "npm",
        "tako-static-server.mjs",
    )
    assert data["package_manager_source"] == "package-lock.json"


def test_vite_app_serves_its_static_build_over_https(
    cli: ClientHome, host: TestHost, tmp_path: Path
) -> None:
    app = app_copy(tmp_path, "viteapp", 'preset = "vite"', "viteapp.test", host.name)
    out = deploy(cli, app)
    assert "URL     : https://viteapp.test" in out
    page = get(host, "https://viteapp.test/")
    assert page.returncode == 0 and "viteapp index" in page.stdout, page.stdout + page.stderr
    bundle = re.search(r'src="(/assets/index-[^"]+\.js)"', page.stdout)
    assert bundle is not None, page.stdout
    script = get(host, f"https://viteapp.test{bundle.group(1)}")
    assert "hello from the viteapp bundle" in script.stdout
    assert "text/javascript" in script.stdout.lower()
    assert "<svg" in get(host, "https://viteapp.test/vite.svg").stdout  # vite's public/ dir
    assert "viteapp index" in get(host, "https://viteapp.test/some/client/route").stdout
    release = release_dir(host, "viteapp")
    assert (release / "tako-static-server.mjs").is_file()
    assert not (release / "package.json").exists() and not (release / "node_modules").exists()


def test_django_app_runs_on_gunicorn_with_collected_static_files(
    cli: ClientHome, host: TestHost, registry: RegistryProxy, tmp_path: Path
) -> None:
    app = app_copy(
        tmp_path, "djangoapp", 'runtime = "python"\npreset = "django"', "django.test", host.name
    )
    deploy(cli, app)
    page = get(host, "https://django.test/")
    assert page.returncode == 0, page.stdout + page.stderr
    assert "hello from django (build " in page.stdout and "gunicorn/" in page.stdout
    assert "css at /static/hello/site.css" in page.stdout
    css = get(host, "https://django.test/static/hello/site.css")
    assert "rebeccapurple" in css.stdout and "text/css" in css.stdout.lower()
    assert "etag:" in css.stdout.lower()  # served from public/ by the edge, not by Django
    release = release_dir(host, "djangoapp")
    assert (release / "public/static/hello/site.css").is_file()
    assert not list(release.glob("public/static/admin"))  # only the project's static files
    assert list(release.glob(".venv/lib/python3*/site-packages/gunicorn"))
    assert {"pypi.org:443", "files.pythonhosted.org:443"} <= set(registry.tunnels())


def test_pnpm_project_is_installed_with_pnpm_on_the_server(
    cli: ClientHome, host: TestHost, registry: RegistryProxy, tmp_path: Path
) -> None:
    app = app_copy(
        tmp_path, "pnpmapp", 'runtime = "node"\nmain = "server.js"', "pnpm.test", host.name
    )
    deploy(cli, app)
    page = get(host, "https://pnpm.test/")
    assert page.returncode == 0 and "pnpmapp says 2m (build " in page.stdout, page.stdout
    release = release_dir(host, "pnpmapp")
    assert (release / "node_modules" / ".pnpm").is_dir()  # pnpm's layout, not npm's
    assert (release / "node_modules" / ".modules.yaml").is_file()
    app_json = json.loads((release / "app.json").read_text())
    assert app_json["package_manager"] == "pnpm"
    assert "registry.npmjs.org:443" in registry.tunnels()
