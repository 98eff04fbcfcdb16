"""``tako servers add HOST --install``: from a bare VPS to a first deploy with commands only.

A *bare* test host (root login with the client key, no user ``tako``, no tako-server) gets
tako-server from the real release tarball through the real ``tako`` CLI; then an example
app is deployed and answered through the host's edge (``curl``). A second run must change
nothing (installer skipped, same server pid, one key line, one inventory entry), and every
failure is one line naming the step. The host is torn down at the end of the module, and
the tako-server the installer started is stopped first, even when a test fails.

The tests share one host and one client and run in order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.hosts import SOCKET_PATH, ClientHome, HostNetwork, TestHost, wait_for
from tests.helpers import release

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROUTE = "install-python.test"
NAME = "vps"


@pytest.fixture(scope="module")
def bare(
    host_network: HostNetwork, make_hosts: Callable[..., list[TestHost]]
) -> Iterator[TestHost]:
    (host,) = make_hosts(1, bare=True)
    try:
        yield host
    finally:
        host.close()  # stops the installed tako-server first, then sshd and the namespace
        host_network.hosts.remove(host)


@pytest.fixture(scope="module")
def cli(
    host_network: HostNetwork, bare: TestHost, tmp_path_factory: pytest.TempPathFactory
) -> ClientHome:
    return host_network.client_home(tmp_path_factory.mktemp("install-client"))


@pytest.fixture(scope="module")
def app(bare: TestHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("apps") / "python-app"
    shutil.copytree(EXAMPLES / "python-app", directory)
    toml = (directory / "tako.toml").read_text().split("[envs.production]")[0]
    toml += f'[envs.production]\nroute = "{ROUTE}"\nservers = {json.dumps([NAME])}\n'
    (directory / "tako.toml").write_text(toml)
    return directory


def install(cli: ClientHome, host: TestHost, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli.run_tako(
        "servers", "add", host.address, "--name", NAME, "--install", *extra, timeout=500
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def inventory(cli: ClientHome) -> list[dict[str, object]]:
    path = cli.tako_home / "config.toml"
    servers: list[dict[str, object]] = (
        tomllib.loads(path.read_text()).get("servers", []) if path.exists() else []
    )
    return servers


def key_lines(host: TestHost, client_key: Path) -> list[str]:
    body = Path(f"{client_key}.pub").read_text().split()[1]
    text = (host.paths.home / ".ssh" / "authorized_keys").read_text()
    return [line for line in text.splitlines() if body in line]


def server_pid(host: TestHost) -> int:
    link = host.exec(f"readlink {SOCKET_PATH}").stdout.strip()
    return int(link.removeprefix("tako-").removesuffix(".sock"))


def test_the_bare_host_has_no_tako_user_and_no_tako_server(bare: TestHost) -> None:
    assert bare.exec("id -u tako", check=False).returncode != 0
    assert bare.exec("test -e /usr/local/bin/tako-server", check=False).returncode != 0
    assert not (bare.paths.home / ".ssh").exists()


def test_install_adds_the_server_and_an_app_deploys_to_it(
    cli: ClientHome,
    bare: TestHost,
    app: Path,
    release_tarball: Path,
    host_network: HostNetwork,
) -> None:
    out = ok(install(cli, bare, "--artifact", str(release_tarball)))
    version = release.package_version()
    assert f"root@{NAME} ({bare.address}:22): linux-x86_64-glibc" in out
    assert f"installed tako-server {version} from {release_tarball}" in out
    assert "your SSH key is authorised for user tako" in out
    assert f"added server '{NAME}' ({bare.address}:22)" in out
    assert inventory(cli) == [
        {"name": NAME, "host": bare.address, "port": 22, "arch": "x86_64", "libc": "glibc"}
    ]
    ssh_dir = bare.paths.home / ".ssh"
    keys = ssh_dir / "authorized_keys"
    uid = int(bare.exec("id -u tako").stdout)
    assert (ssh_dir.stat().st_mode & 0o777, keys.stat().st_mode & 0o777) == (0o700, 0o600)
    assert ssh_dir.stat().st_uid == keys.stat().st_uid == uid
    assert len(key_lines(bare, host_network.client_key)) == 1

    ok(cli.run_tako("deploy", "--yes", "-c", str(app / "tako.toml"), timeout=300))
    wait_for(
        lambda: bare.curl(f"https://{ROUTE}/", "-k", "--fail").returncode == 0,
        "the app through the installed edge",
        timeout=30,
    )
    body = bare.curl(f"https://{ROUTE}/", "-k", "--fail").stdout
    assert "Hello from hello-python (production, build nogit_" in body


def test_a_second_install_run_changes_nothing(
    cli: ClientHome, bare: TestHost, release_tarball: Path, host_network: HostNetwork
) -> None:
    pid = server_pid(bare)
    config = (cli.tako_home / "config.toml").read_text()
    out = ok(install(cli, bare, "--artifact", str(release_tarball)))
    assert "is already installed and running" in out
    assert "your SSH key is already authorised for user tako" in out
    assert f"server '{NAME}' is already configured" in out
    assert server_pid(bare) == pid  # the installer was skipped: no reload
    assert len(key_lines(bare, host_network.client_key)) == 1
    assert (cli.tako_home / "config.toml").read_text() == config
    assert len(inventory(cli)) == 1
    assert bare.curl(f"https://{ROUTE}/", "-k", "--fail").returncode == 0


def _broken_release(directory: Path) -> Path:
    """A tarball named for this machine whose tako-server cannot run (with a good .sha256)."""
    script = directory / "tako-server"
    script.write_text("#!/bin/sh\necho 'broken build' >&2\nexit 3\n")
    script.chmod(0o755)
    tarball = directory / f"tako-server-{release.target()}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(script, arcname="tako-server")
    subprocess.run(
        f"sha256sum {tarball.name} > {tarball.name}.sha256", shell=True, cwd=directory, check=True
    )
    return tarball


def test_a_failing_installer_is_one_line_with_its_last_output(
    cli: ClientHome, bare: TestHost, tmp_path: Path
) -> None:
    pid = server_pid(bare)
    done = install(cli, bare, "--artifact", str(_broken_release(tmp_path)))
    assert done.returncode == 1
    assert f"install-server.sh failed on {NAME} ({bare.address}:22) (exit 1):" in done.stderr
    assert "the new tako-server does not run on this host" in done.stderr
    assert server_pid(bare) == pid  # the installer changed nothing
    assert bare.exec("ls /tmp | grep -c tako-install", check=False).stdout.strip() == "0"


def test_a_checksum_mismatch_is_refused_before_connecting(
    cli: ClientHome, bare: TestHost, release_tarball: Path, tmp_path: Path
) -> None:
    copy = tmp_path / release_tarball.name
    shutil.copy(release_tarball, copy)
    Path(f"{copy}.sha256").write_text(f"{'0' * 64}  {copy.name}\n")
    done = install(cli, bare, "--artifact", str(copy))
    assert done.returncode == 1
    assert f"checksum mismatch: {copy.name} does not match {copy.name}.sha256" in done.stderr


def test_a_refused_login_and_a_user_without_sudo_are_named(
    cli: ClientHome, bare: TestHost, release_tarball: Path, host_network: HostNetwork
) -> None:
    refused = install(cli, bare, "--artifact", str(release_tarball), "--user", "ghost")
    assert refused.returncode == 1
    assert f"SSH login as ghost@{NAME} ({bare.address}:22) was refused" in refused.stderr
    bare.exec("useradd --create-home --shell /bin/sh plain && usermod -p '*' plain")
    bare.exec(
        "install -d -m 0700 -o plain -g plain ~plain/.ssh && "
        "install -m 0600 -o plain -g plain /dev/stdin ~plain/.ssh/authorized_keys",
        input=Path(f"{host_network.client_key}.pub").read_text(),
    )
    bare.exec(f"sed -i 's/^AllowUsers .*/& plain/' {bare.paths.sshd_dir / 'sshd_config'}")
    os.kill(int((bare.paths.sshd_dir / "sshd.pid").read_text()), signal.SIGHUP)  # re-read
    expected = f"no passwordless sudo for plain on {NAME} ({bare.address}:22):"
    wait_for(
        lambda: expected in install(cli, bare, "--user", "plain").stderr,
        "sshd to let plain in, and the sudo check to refuse plain",
    )
