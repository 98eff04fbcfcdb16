"""The project's own ``Dockerfile`` (seed 002's image of tako-server), built and run with
Podman, with no registry: its two base images (``python:3.11-slim-bookworm`` and
``debian:12-slim``) are stood in for by one Debian 12 root file system made with
``debootstrap`` and ``podman import`` (Python 3.11 with a shared libpython, binutils),
tagged with the names the Dockerfile asks for, and the build runs with ``--pull=never``.
The Dockerfile itself is built unchanged. The debootstrap tree is cached machine-wide
(``tests/helpers/podman.py``), so only the first run pays for it; the builder stage
installs PyInstaller and the server's dependencies from PyPI inside the build.

Checks: the container runs as a non-root user (uid 1000), ``tako-server version``
answers, and the control socket is served on a mounted volume (``hello`` over it).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tako_common.protocol import PROTOCOL_VERSION
from tests.helpers import podman as pm
from tests.integration.conftest import ControlClient

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/tako-test/tako-server:dockerfile"
BASES = ("docker.io/library/python:3.11-slim-bookworm", "docker.io/library/debian:12-slim")
ULIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")

pytestmark = [
    pytest.mark.timeout(1200),
    pytest.mark.skipif(pm.skip_reason() is not None, reason=str(pm.skip_reason())),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="needs debootstrap"),
]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pm.ensure_cgroups()
    base = pm.ensure_bookworm_image(tmp_path_factory.mktemp("debootstrap"))
    tagged = [name for name in BASES if not pm.image_exists(name)]
    for name in tagged:
        pm.podman("tag", base, name)
    try:
        pm.podman(
            "build",
            "--pull=never",
            *ULIMITS,
            "-t",
            IMAGE,
            "-f",
            str(REPO / "Dockerfile"),
            str(REPO),
            timeout=1100,
        )
        yield IMAGE
    finally:
        for name in tagged:
            pm.podman("untag", base, name)


def test_the_image_answers_version_as_a_non_root_user(image: str) -> None:
    out = pm.podman(
        "run", "--rm", *ULIMITS, "--entrypoint", "/usr/local/bin/tako-server", image, "version"
    )
    assert out.startswith("tako-server "), out
    assert pm.podman("run", "--rm", *ULIMITS, "--entrypoint", "id", image, "-u").strip() == "1000"
    config = json.loads(pm.podman("image", "inspect", image))[0]["Config"]
    assert config["User"] == "tako"


def test_the_container_serves_its_control_socket_on_a_mounted_volume(
    image: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.chown(run_dir, 1000, 1000)
    name = f"tako-dockerfile-{time.monotonic_ns()}"
    pm.podman(
        "run",
        "-d",
        "--name",
        name,
        *ULIMITS,
        "-v",
        f"{run_dir}:/var/run/tako",
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=0",
        "-e",
        "TAKO_ACME_ENABLED=false",
        "-e",
        "TAKO_WORKERS=0",
        image,
    )
    try:
        socket = run_dir / "tako.sock"
        deadline = time.monotonic() + 60
        while not socket.exists():
            assert time.monotonic() < deadline, pm.podman("logs", name)
            time.sleep(0.2)
        with ControlClient(socket, timeout=20) as control:
            hello = control.ok({"command": "hello", "protocol_version": PROTOCOL_VERSION})
        assert hello["server_version"]
        top = pm.podman("top", name, "user", "comm")
        assert "tako-server" in top and "root" not in top.split("\n", 1)[1], top
    finally:
        pm.podman("rm", "-f", "-t", "5", name)
