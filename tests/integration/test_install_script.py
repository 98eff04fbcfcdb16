"""scripts/install-server.sh, run for real as root in an isolated mount namespace.

Each test gets a :class:`IsolatedHost`: ``unshare --mount --net`` with private copies bound
over ``/etc`` (a copy without any ``tako`` user, so user creation is exercised and the
machine's own ``/etc/passwd`` is never touched), and empty temp dirs over ``/home``,
``/opt``, ``/usr/local/bin``, ``/run`` and ``/var/log``. ``TAKO_NO_SYSTEMD=1`` makes the
installer start the server directly, as in a container. Most tests install a small fake
release (a shell-script ``tako-server`` that logs its start and the signals it gets); the
last one installs the real PyInstaller build when it exists. Servers the installer
started are stopped by the PID in their pidfile at teardown.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tako_common.protocol import PROTOCOL_VERSION, HelloRequest, encode_frame
from tests.helpers import release

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-server.sh"
MOUNTS = ("/etc", "/home", "/opt", "/usr/local/bin", "/run", "/var/log")
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a@ci"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB b@ci"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="install-server.sh must run as root"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

FAKE_SERVER = """#!/bin/sh
# Fake tako-server @TAG@: logs its start and the signals it receives; points the
# socket link at its pid like the real server.
case "$1" in
  version) echo "tako-server @TAG@" ;;
  run)
    echo "@TAG@ started pid $$ uid $(id -u) args $*"
    ln -sfn "tako-$$.sock" /var/run/tako/tako.sock  # the real server's socket link
    trap 'echo "@TAG@ got HUP"' HUP
    trap 'echo "@TAG@ got TERM"; exit 0' TERM
    while :; do sleep 1 & wait $!; done ;;
  *) echo "usage: tako-server version|run" >&2; exit 2 ;;
esac
"""


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def make_release(directory: Path, tag: str, *, name: str | None = None) -> Path:
    """A fake release tarball (with its .sha256) whose tako-server reports ``tag``."""
    directory.mkdir(parents=True, exist_ok=True)
    tarball = directory / (name or f"tako-server-{release.target()}.tar.gz")
    members = {
        "tako-server": (FAKE_SERVER.replace("@TAG@", tag).encode(), 0o755),
        "LICENSE": (b"MIT\n", 0o644),
        "server-config.example.toml": (b"[server]\n", 0o644),
    }
    with tarfile.open(tarball, "w:gz") as tar:
        for member, (data, mode) in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    Path(f"{tarball}.sha256").write_text(f"{digest}  {tarball.name}\n")
    return tarball


def _strip_tako(path: Path) -> None:
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if not line.startswith("tako:")))


class IsolatedHost:
    """Private /etc, /home, /opt, /usr/local/bin, /run and /var/log for the installer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for mount in MOUNTS:
            if mount != "/etc":
                self.path(mount).mkdir(parents=True)
                self.path(mount).chmod(0o755)
        subprocess.run(["cp", "-a", "/etc", str(self.path("/etc"))], check=True)
        for name in ("passwd", "group", "shadow", "gshadow"):
            _strip_tako(self.path(f"/etc/{name}"))

    def path(self, inside: str) -> Path:
        """Where the file the installer sees at ``inside`` really lives."""
        if inside.startswith("/var/run/"):
            inside = "/run/" + inside[len("/var/run/") :]
        for mount in MOUNTS:
            if inside == mount or inside.startswith(mount + "/"):
                return self.root / mount.strip("/").replace("/", "_") / inside[len(mount) + 1 :]
        raise ValueError(f"{inside} is not inside an isolated mount")

    def install(self, **env: str) -> subprocess.CompletedProcess[str]:
        binds = " && ".join(f"mount -n --bind {self.path(m)} {m}" for m in MOUNTS)
        shell = f"{binds} && exec sh {SCRIPT}"
        full_env = {
            "PATH": os.environ["PATH"],
            "TAKO_NO_SYSTEMD": "1",
            "TAKO_CONTAINERS": "0",  # test_containers_* turn it on
            **env,
        }
        argv = ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", shell]
        return subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=120)

    def server_pid(self) -> int | None:
        """PID of the server the installer started, if it is alive."""
        pidfile = self.path("/var/run/tako/tako-server.pid")
        if not pidfile.exists():
            return None
        pid = int(pidfile.read_text().strip())
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return None
        return pid if b"tako-server" in cmdline else None

    def log(self) -> str:
        log = self.path("/var/log/tako-server.log")
        return log.read_text() if log.exists() else ""

    def passwd_entry(self, name: str) -> list[str] | None:
        for line in self.path("/etc/passwd").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return line.split(":")
        return None

    def podman_pid(self) -> int | None:
        """PID of the Podman API service the installer started, if it is alive."""
        pidfile = self.path("/var/run/tako/podman-service.pid")
        if not pidfile.exists():
            return None
        pid = int(pidfile.read_text().strip())
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return None
        return pid if b"podman" in cmdline and not _is_zombie(pid) else None

    def stop_server(self) -> None:
        podman = self.podman_pid()
        if podman is not None:
            os.kill(podman, signal.SIGTERM)
            wait_for(lambda: self.podman_pid() is None, f"podman pid {podman} to stop")
        pid = self.server_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: self.server_pid() is None or _is_zombie(pid), f"pid {pid} to stop")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[IsolatedHost]:
    isolated = IsolatedHost(tmp_path / "host")
    try:
        yield isolated
    finally:
        isolated.stop_server()


def _snapshot(host: IsolatedHost) -> dict[str, bytes | None]:
    """Every file under the isolated mounts except /etc, plus the account files."""
    found: dict[str, bytes | None] = {}
    for mount in MOUNTS[1:]:
        for path in sorted(host.path(mount).rglob("*")):
            found[str(path)] = path.read_bytes() if path.is_file() else None
    for name in ("passwd", "group", "shadow", "gshadow"):
        found[name] = host.path(f"/etc/{name}").read_bytes()
    return found


@pytest.mark.parametrize(
    ("case", "expected_error"),
    [
        ("wrong TAKO_SERVER_SHA256", "checksum mismatch"),
        ("wrong .sha256 file", "checksum mismatch"),
        ("missing .sha256 file", "no checksum"),
        ("malformed .sha256 file", "is not a SHA256"),
    ],
)
def test_bad_or_missing_checksum_refuses_and_changes_nothing(
    host: IsolatedHost, tmp_path: Path, case: str, expected_error: str
) -> None:
    tarball = make_release(tmp_path / "rel", "0.0.0-fake1")
    sums = Path(f"{tarball}.sha256")
    env = {"TAKO_SERVER_ARTIFACT": str(tarball), "TAKO_SSH_PUBKEY": KEY_A}
    if case == "wrong TAKO_SERVER_SHA256":
        env["TAKO_SERVER_SHA256"] = "0" * 64
    elif case == "wrong .sha256 file":
        sums.write_text(f"{'a' * 64}  {tarball.name}\n")
    elif case == "missing .sha256 file":
        sums.unlink()
    else:
        sums.write_text("not-a-checksum\n")
    before = _snapshot(host)
    result = host.install(**env)
    assert result.returncode != 0
    assert expected_error in result.stderr
    assert _snapshot(host) == before


def test_artifact_built_for_another_target_is_refused(host: IsolatedHost, tmp_path: Path) -> None:
    other = "linux-riscv64-glibc"
    tarball = make_release(tmp_path / "rel", "0.0.0-fake1", name=f"tako-server-{other}.tar.gz")
    result = host.install(TAKO_SERVER_ARTIFACT=str(tarball))
    assert result.returncode != 0
    assert "is not for this host" in result.stderr
    assert not host.path("/usr/local/bin/tako-server").exists()


def test_fresh_install_creates_user_dirs_keys_and_starts_server_as_tako(
    host: IsolatedHost, tmp_path: Path
) -> None:
    tarball = make_release(tmp_path / "rel", "0.0.0-fake1")
    result = host.install(TAKO_SERVER_ARTIFACT=str(tarball), TAKO_SSH_PUBKEY=KEY_A)
    assert result.returncode == 0, result.stderr
    user = host.passwd_entry("tako")
    assert user is not None and user[5:] == ["/home/tako", "/bin/sh"]
    uid, gid = int(user[2]), int(user[3])
    shadow = [ln.split(":") for ln in host.path("/etc/shadow").read_text().splitlines()]
    assert ["*"] == [fields[1] for fields in shadow if fields[0] == "tako"]
    expected_modes = {
        "/opt/tako": 0o700,
        "/var/run/tako": 0o700,
        "/home/tako/.ssh": 0o700,
        "/home/tako/.ssh/authorized_keys": 0o600,
        "/opt/tako/server-config.toml": 0o600,
    }
    for inside, mode in expected_modes.items():
        info = host.path(inside).stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, uid, gid), inside
    binary = host.path("/usr/local/bin/tako-server").stat()
    assert (stat.S_IMODE(binary.st_mode), binary.st_uid) == (0o755, 0)
    assert host.path("/home/tako/.ssh/authorized_keys").read_text() == KEY_A + "\n"
    wait_for(lambda: "0.0.0-fake1 started" in host.log(), "the server's start line")
    pid = host.server_pid()
    assert pid is not None and _uid_of(pid) == uid
    assert "args run --data-dir /opt/tako --socket /var/run/tako/tako.sock" in host.log()


@pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman (scripts/setup)")
def test_containers_serve_the_podman_api_as_root_to_group_tako_once(
    host: IsolatedHost, tmp_path: Path
) -> None:
    tarball = make_release(tmp_path / "rel", "0.0.0-fake1")
    result = host.install(TAKO_SERVER_ARTIFACT=str(tarball), TAKO_CONTAINERS="1")
    assert result.returncode == 0, result.stderr
    assert "containers: Podman API on /var/run/tako/podman.sock" in result.stdout
    podman = host.podman_pid()
    assert podman is not None and _uid_of(podman) == 0
    user = host.passwd_entry("tako")
    assert user is not None
    sock = host.path("/var/run/tako/podman.sock").stat()
    assert stat.S_ISSOCK(sock.st_mode)
    assert (stat.S_IMODE(sock.st_mode), sock.st_gid) == (0o660, int(user[3]))
    again = host.install(TAKO_SERVER_ARTIFACT=str(tarball), TAKO_CONTAINERS="1")
    assert again.returncode == 0, again.stderr
    assert host.podman_pid() == podman, "a re-run keeps the running service"


def test_rerun_upgrades_binary_in_place_keeps_config_and_sends_sighup(
    host: IsolatedHost, tmp_path: Path
) -> None:
    first = make_release(tmp_path / "v1", "0.0.0-fake1")
    assert host.install(TAKO_SERVER_ARTIFACT=str(first), TAKO_SSH_PUBKEY=KEY_A).returncode == 0
    wait_for(lambda: "0.0.0-fake1 started" in host.log(), "the first server")
    pid = host.server_pid()
    config = host.path("/opt/tako/server-config.toml")
    config.write_text("[server]\nhttp_port = 8080\n")

    second = make_release(tmp_path / "v2", "0.0.0-fake2")
    keys = f"{KEY_A}\n{KEY_B}"
    result = host.install(TAKO_SERVER_ARTIFACT=str(second), TAKO_SSH_PUBKEY=keys)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: "0.0.0-fake1 got HUP" in host.log(), "SIGHUP to the running server")
    assert host.server_pid() == pid
    assert "tako-server 0.0.0-fake2" in host.path("/usr/local/bin/tako-server").read_text()
    assert host.path("/home/tako/.ssh/authorized_keys").read_text() == f"{KEY_A}\n{KEY_B}\n"
    assert config.read_text() == "[server]\nhttp_port = 8080\n"
    assert [
        ln for ln in host.path("/etc/passwd").read_text().splitlines() if ln.startswith("tako:")
    ]


def test_rerun_finds_the_server_by_its_socket_link_when_the_pidfile_is_stale(
    host: IsolatedHost, tmp_path: Path
) -> None:
    """After a SIGHUP takeover the pidfile names a dead process; the socket link is right."""
    tarball = make_release(tmp_path / "v1", "0.0.0-fake1")
    assert host.install(TAKO_SERVER_ARTIFACT=str(tarball)).returncode == 0
    wait_for(lambda: host.path("/var/run/tako/tako.sock").is_symlink(), "the socket link")
    pid = host.server_pid()
    assert pid is not None
    pidfile = host.path("/var/run/tako/tako-server.pid")
    pidfile.write_text("999999999\n")
    result = host.install(TAKO_SERVER_ARTIFACT=str(make_release(tmp_path / "v2", "0.0.0-fake2")))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: "0.0.0-fake1 got HUP" in host.log(), "SIGHUP to the socket's owner")
    assert "0.0.0-fake2 started" not in host.log()
    assert pidfile.read_text().strip() == str(pid)


def test_rerun_with_restart_replaces_the_running_server(host: IsolatedHost, tmp_path: Path) -> None:
    assert (
        host.install(
            TAKO_SERVER_ARTIFACT=str(make_release(tmp_path / "v1", "0.0.0-fake1"))
        ).returncode
        == 0
    )
    wait_for(lambda: "0.0.0-fake1 started" in host.log(), "the first server")
    old_pid = host.server_pid()
    assert old_pid is not None
    tarball = make_release(tmp_path / "v2", "0.0.0-fake2")
    result = host.install(TAKO_SERVER_ARTIFACT=str(tarball), TAKO_RESTART="1")
    assert result.returncode == 0, result.stderr
    assert "0.0.0-fake1 got TERM" in host.log()
    wait_for(lambda: "0.0.0-fake2 started" in host.log(), "the new server")
    assert host.server_pid() not in (None, old_pid)


@pytest.mark.parametrize("checksum_ok", [True, False])
def test_url_install_verifies_the_checksum_published_beside_the_tarball(
    host: IsolatedHost, tmp_path: Path, checksum_ok: bool
) -> None:
    tarball = make_release(tmp_path / "rel", "0.0.0-fake1")
    if not checksum_ok:
        Path(f"{tarball}.sha256").write_text(f"{'b' * 64}  {tarball.name}\n")
    result = host.install(TAKO_SERVER_URL=tarball.as_uri())
    assert (result.returncode == 0) is checksum_ok, result.stderr
    assert host.path("/usr/local/bin/tako-server").exists() is checksum_ok


@pytest.mark.slow
def test_real_release_installs_and_serves_its_control_socket_as_tako(
    host: IsolatedHost,
) -> None:
    if not release.daemon_sources_present():
        pytest.skip("tako_server/cli.py does not exist yet: no real executable to install")
    tarball = release.build_release()
    result = host.install(TAKO_SERVER_ARTIFACT=str(tarball), TAKO_SSH_PUBKEY=KEY_A)
    assert result.returncode == 0, result.stderr
    assert f"tako-server {release.package_version()}" in result.stdout
    control = host.path("/var/run/tako/tako.sock")
    wait_for(lambda: control.exists() or host.server_pid() is None, "the control socket", 60.0)
    pid = host.server_pid()
    assert pid is not None, host.log()
    user = host.passwd_entry("tako")
    assert user is not None and _uid_of(pid) == int(user[2])
    assert _hello(control)["data"]["server_version"] == release.package_version()


def _hello(path: Path) -> dict[str, object]:
    """One ``hello`` exchange over the control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(encode_frame(HelloRequest(protocol_version=PROTOCOL_VERSION)))
        reply = conn.makefile("rb").readline()
    answer: dict[str, object] = json.loads(reply)
    return answer
