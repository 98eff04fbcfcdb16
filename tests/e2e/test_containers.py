"""Container releases end to end: the real ``tako`` CLI builds the image with Podman on this
machine, ships it over SSH as an archive to a network-namespace host whose tako-server runs
it through that host's own Podman API service, checked over HTTPS with ``curl``.

No registry: the example's base image is replaced by the busybox image the tests import
locally (``tests/helpers/podman.py``). The host's Podman service runs as root inside the
host's namespaces with its own storage (so its images are the host's alone) and its socket
is given to group ``tako``, as install-server.sh does. The tests run in order: deploy,
upload skipped, redeploy under a request loop, rollback, scale to 2 and to 0 with a cold
start, delete.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.hosts import ClientHome, HostNetwork, TestHost, wait_for
from tests.helpers import podman as pm
from tests.integration.test_upgrade import Load, Target, insecure_tls, run_load, until

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(pm.skip_reason() is not None, reason=str(pm.skip_reason())),
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "container-app"
ROUTE = "hello-container.test"
HOST_SOCKET = "/var/run/tako/podman.sock"


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def host(
    make_hosts: Callable[..., list[TestHost]], tmp_path_factory: pytest.TempPathFactory
) -> TestHost:
    pm.ensure_cgroups()
    pm.ensure_base_image(tmp_path_factory.mktemp("base"))
    (made,) = make_hosts(1)
    # `ip netns exec` mounts a fresh /sys for the host: give it the machine's cgroups back
    made.exec(pm.cgroup_mount_script())
    storage = made.paths.root / "podman"
    made.spawn(
        [
            "podman",
            "--root",
            str(storage / "root"),
            "--runroot",
            str(storage / "run"),
            "system",
            "service",
            "--time=0",
            f"unix://{HOST_SOCKET}",
        ],
        user="root",
        log_name="podman",
    )
    wait_for(
        lambda: made.exec(f"test -S {HOST_SOCKET}", check=False).returncode == 0,
        "the host's podman socket",
        timeout=20,
    )
    made.exec(f"chgrp tako {HOST_SOCKET} && chmod 0660 {HOST_SOCKET}")
    made.stop_server()
    made.start_server(env={"TAKO_CONTAINER_SOCKET": HOST_SOCKET})
    return made


def host_podman(host: TestHost, *args: str) -> str:
    storage = host.paths.root / "podman"
    argv = ["podman", "--root", str(storage / "root"), "--runroot", str(storage / "run"), *args]
    return host.exec(" ".join(argv)).stdout


@pytest.fixture(scope="module")
def cli(
    host_network: HostNetwork, host: TestHost, tmp_path_factory: pytest.TempPathFactory
) -> ClientHome:
    home = host_network.client_home(tmp_path_factory.mktemp("container-client"))
    ok(home.run_tako("servers", "add", host.address, "--name", host.name))
    return home


@pytest.fixture(scope="module")
def app(host: TestHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    app = tmp_path_factory.mktemp("apps") / "container-app"
    shutil.copytree(EXAMPLE, app)
    containerfile = app / "Containerfile"
    text = containerfile.read_text().replace("docker.io/library/busybox:1.36", pm.BASE_IMAGE)
    containerfile.write_text(text)
    toml = 'release = "echo release-step $GREETING $TAKO_BUILD; ls /app"\n'
    toml += (app / "tako.toml").read_text().split("[envs.production]")[0]
    toml += (
        f'[envs.production]\nroute = "{ROUTE}"\nservers = {json.dumps([host.name])}\n'
        "idle_timeout = 2\n"
    )
    (app / "tako.toml").write_text(toml)
    yield app
    # the images `tako deploy` built on this machine (the builder keeps them, as docker does)
    for ref in pm.podman("images", "--format", "{{.Repository}}:{{.Tag}}").split():
        if ref.startswith("localhost/tako-build/hello-container:"):
            pm.podman("rmi", ref)


def tako(cli: ClientHome, app: Path, *args: str) -> str:
    return ok(cli.run_tako(*args, "-c", str(app / "tako.toml"), timeout=200))


def fetch(host: TestHost) -> str:
    done = host.curl(f"https://{ROUTE}/", "-k", "--fail")
    assert done.returncode == 0, done.stderr
    return done.stdout


def build_of(text: str) -> str:
    return text.split("build ")[1].split(")")[0]


def test_deploy_serves_the_container_over_https_and_status_shows_podman(
    cli: ClientHome, host: TestHost, app: Path
) -> None:
    out = tako(cli, app, "deploy", "--yes")
    assert "built image" in out and "podman" in out, out
    assert "release-step Hello nogit_" in out and "serve.sh" in out, out  # in the image
    page = fetch(host)
    assert page.startswith("Hello from hello-container (production, build nogit_"), page
    status = ok(cli.run_tako("servers", "status"))
    assert "containers: podman " in status, status
    assert host_podman(host, "images", "--format", "{{.Repository}}").split() == [
        "localhost/tako/hello-container-production"
    ]


def test_second_deploy_of_the_same_image_skips_the_upload(cli: ClientHome, app: Path) -> None:
    out = tako(cli, app, "deploy", "--yes")
    assert "cached image" in out and "upload skipped" in out, out


async def test_redeploy_under_a_request_loop_fails_no_request(
    cli: ClientHome, host: TestHost, app: Path
) -> None:
    first = build_of(fetch(host))
    (app / "tako.toml").write_text((app / "tako.toml").read_text().replace('"Hello"', '"Howdy"'))
    (app / "serve.sh").write_text((app / "serve.sh").read_text() + "# v2\n")
    target = Target(host.address, 443, ROUTE, b"from hello-container", insecure_tls())
    load = Load(target, max_requests=100_000)
    loader = asyncio.ensure_future(run_load(load, clients=3, limit=120.0))
    try:
        await until(lambda: load.ok >= 50, "load warm-up", 20)
        out = await asyncio.to_thread(tako, cli, app, "deploy", "--yes")
        after = load.ok
        await until(lambda: load.ok >= after + 50, "requests after the redeploy", 20)
    finally:
        load.stop.set()
        await loader
    assert "built image" in out
    assert load.failures == [], f"{len(load.failures)} failed of {load.ok}: {load.failures[:5]}"
    page = fetch(host)
    assert page.startswith("Howdy") and build_of(page) != first


def test_rollback_runs_the_kept_image(cli: ClientHome, host: TestHost, app: Path) -> None:
    listing = tako(cli, app, "releases", "ls")
    versions = [w for w in listing.split() if w.startswith("nogit_")]
    current = build_of(fetch(host))
    older = next(v for v in versions if v != current)
    tako(cli, app, "releases", "rollback", older, "--yes")
    assert build_of(fetch(host)) == older and fetch(host).startswith("Hello")


def test_scale_to_two_and_to_zero_with_a_cold_start(
    cli: ClientHome, host: TestHost, app: Path
) -> None:
    tako(cli, app, "scale", "2")
    wait_for(
        lambda: "2/2 healthy" in ok(cli.run_tako("servers", "status")), "2 instances", timeout=60
    )
    assert len(host_podman(host, "ps", "-q").split()) == 2
    tako(cli, app, "scale", "0")
    wait_for(lambda: host_podman(host, "ps", "-q").split() == [], "scaled to zero", timeout=60)
    assert fetch(host).startswith("Hello")  # the request cold-starts a container
    assert len(host_podman(host, "ps", "-q").split()) == 1


def test_exec_runs_in_a_container_of_the_release_image(cli: ClientHome, app: Path) -> None:
    out = ok(
        cli.run_tako(
            "exec",
            "-c",
            str(app / "tako.toml"),
            "--",
            "sh",
            "-c",
            "echo $GREETING $TAKO_APP_NAME; ls /app; touch /x || echo read-only",
            timeout=120,
        )
    )
    assert "Hello hello-container" in out and "serve.sh" in out and "read-only" in out, out


def test_delete_removes_containers_and_images(cli: ClientHome, host: TestHost, app: Path) -> None:
    ok(cli.run_tako("delete", "--env", "production", "--yes", "-c", str(app / "tako.toml")))
    assert host_podman(host, "ps", "-aq").split() == []
    assert host_podman(host, "images", "-q").split() == []
    assert host.curl(f"https://{ROUTE}/", "-k").stdout.find("from hello-container") == -1
