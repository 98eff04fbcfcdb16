"""Release commands and ``tako exec`` end to end: the real ``tako`` CLI over real SSH to two
real hosts (sshd + tako-server in network namespaces).

The tests of this module share two hosts, one client and one app, and run in order:
a deploy whose release command runs once on the leader before any new instance starts,
a failing release command that changes nothing, then ``tako exec`` (environment and
secret, ``--all``, exit codes, bad input, an interactive shell on a pseudo-terminal).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.hosts import ClientHome, HostNetwork, TestHost

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APP = "release-app"
ROUTE = "release-app.test"
SECRET = "s3cr3t-for-exec"

RELEASE_SCRIPT = """\
set -e
echo "release of $TAKO_BUILD: migrating"
echo "$TAKO_BUILD $(hostname -I)" >> release-ran
sleep 1
python3 -c 'import time; print(repr(time.time()))' > release-ended
echo "migrated"
"""

STARTED_MARK = """\
if __name__ == "__main__":
    import pathlib
    import time

    pathlib.Path("instance-started").write_text(repr(time.time()))
"""


@pytest.fixture(scope="module")
def hosts(make_hosts: Callable[..., list[TestHost]]) -> list[TestHost]:
    return make_hosts(2)


@pytest.fixture(scope="module")
def cli(
    host_network: HostNetwork, hosts: list[TestHost], tmp_path_factory: pytest.TempPathFactory
) -> ClientHome:
    home = host_network.client_home(tmp_path_factory.mktemp("release-client"))
    for host in hosts:
        done = home.run_tako("servers", "add", host.address, "--name", host.name)
        assert done.returncode == 0, done.stdout + done.stderr
    return home


def _toml(hosts: list[TestHost], release: str) -> str:
    servers = json.dumps([h.name for h in hosts])
    return (
        f'name = "{APP}"\nruntime = "python"\nmain = "app.py"\nrelease = {json.dumps(release)}\n\n'
        '[vars]\nGREETING = "Hello"\n\n'
        f'[envs.production]\nroute = "{ROUTE}"\nservers = {servers}\n\n'
        f'[envs.staging]\nroute = "staging.{ROUTE}"\nservers = ["{hosts[1].name}"]\n'
        'release = ""\n'
    )


@pytest.fixture(scope="module")
def app(cli: ClientHome, hosts: list[TestHost], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("apps") / APP
    shutil.copytree(EXAMPLES / "python-app", path)
    source = (path / "app.py").read_text()
    (path / "app.py").write_text(source.replace('if __name__ == "__main__":\n', STARTED_MARK))
    (path / "release.sh").write_text(RELEASE_SCRIPT)
    (path / "tako.toml").write_text(_toml(hosts, "sh release.sh"))
    done = tako(cli, path, "secrets", "set", "SECRET_TOKEN", "--env", "production", input=SECRET)
    assert done.returncode == 0, done.stderr
    return path


def tako(cli: ClientHome, app: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return cli.run_tako(*args, "-c", str(app / "tako.toml"), timeout=300, **kw)  # type: ignore[arg-type]


def exec_tako(cli: ClientHome, app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tako exec`` with ``-c`` in front of the command (options stop at the command)."""
    return cli.run_tako("exec", "-c", str(app / "tako.toml"), *args, timeout=120)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def releases_dir(host: TestHost) -> Path:
    return host.paths.opt / "apps" / APP / "production" / "releases"


def current(host: TestHost) -> str:
    return os.readlink(host.paths.opt / "apps" / APP / "production" / "current")


def revision(out: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Revision:" in line)


def fetch(host: TestHost) -> str:
    done = host.curl(f"https://{ROUTE}/", "-k", "--fail")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_release_command_runs_once_on_the_leader_before_new_instances_start(
    cli: ClientHome, hosts: list[TestHost], app: Path
) -> None:
    leader, other = hosts
    out = ok(tako(cli, app, "deploy", "--yes"))
    version = revision(out)
    assert f"{leader.name} | release of {version}: migrating" in out.splitlines()
    assert f"{leader.name} | migrated" in out.splitlines()
    ran = (releases_dir(leader) / version / "release-ran").read_text().splitlines()
    assert [line.strip() for line in ran] == [f"{version} {leader.address}"]
    assert not (releases_dir(other) / version / "release-ran").exists()  # once, leader only
    ended = float((releases_dir(leader) / version / "release-ended").read_text())
    for host in hosts:
        started = float((releases_dir(host) / version / "instance-started").read_text())
        assert started > ended, f"an instance on {host.name} started before the release ended"
        assert current(host) == f"releases/{version}"
        assert f"build {version}" in fetch(host)


def test_a_failing_release_command_leaves_v1_serving_everywhere(
    cli: ClientHome, hosts: list[TestHost], app: Path
) -> None:
    before = {host.name: current(host) for host in hosts}
    failing = "echo about to fail; echo 'boom: no such table' >&2; exit 3"
    (app / "tako.toml").write_text(_toml(hosts, failing))
    try:
        done = tako(cli, app, "deploy", "--yes")
    finally:
        (app / "tako.toml").write_text(_toml(hosts, "sh release.sh"))
    assert done.returncode == 1, done.stdout + done.stderr
    leader = hosts[0].name
    assert f"{leader} | about to fail" in done.stdout.splitlines()
    assert f"{leader} | boom: no such table" in done.stderr.splitlines()
    assert f"release command `{failing}` failed with exit code 3 on {leader}" in done.stderr
    assert "last output lines:" in done.stderr and "no server switched" in done.stderr
    assert f"{hosts[1].name}: deploy aborted: the release command failed on {leader}" in (
        done.stderr
    )
    assert "failed on all 2 servers" in done.stderr and "URL" not in done.stdout
    for host in hosts:
        assert current(host) == before[host.name]
        kept = [p.name for p in releases_dir(host).iterdir()]
        assert kept == [before[host.name].removeprefix("releases/")], kept  # cleaned
        assert "Hello from release-app" in fetch(host)
        assert before[host.name].removeprefix("releases/") in fetch(host)


def test_a_release_command_past_release_timeout_is_stopped_and_changes_nothing(
    cli: ClientHome, hosts: list[TestHost], app: Path
) -> None:
    before = {host.name: current(host) for host in hosts}
    (app / "tako.toml").write_text(_toml(hosts, "echo waiting; sleep 60"))
    started = time.monotonic()
    try:
        done = tako(cli, app, "deploy", "--yes", "--release-timeout", "2")
    finally:
        (app / "tako.toml").write_text(_toml(hosts, "sh release.sh"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 50  # the server stopped it, not the sleep's end
    assert f"release command `echo waiting; sleep 60` timed out after 2s on {hosts[0].name}" in (
        done.stderr
    )
    for host in hosts:
        assert current(host) == before[host.name]
        assert len(list(releases_dir(host).iterdir())) == 1


def test_exec_env_shows_the_apps_variables_and_a_secret(cli: ClientHome, app: Path) -> None:
    out = ok(exec_tako(cli, app, "--", "env"))
    lines = out.splitlines()
    assert "GREETING=Hello" in lines and f"SECRET_TOKEN={SECRET}" in lines
    assert "TAKO_ENV=production" in lines and f"TAKO_APP_NAME={APP}" in lines
    assert not any(line.startswith(("PORT=", "TAKO_INSTANCE=")) for line in lines)
    pwd = ok(exec_tako(cli, app, "--", "pwd")).strip()
    assert pwd.startswith(f"/opt/tako/apps/{APP}/production/releases/")


def test_exec_all_runs_on_both_hosts_with_prefixed_output(
    cli: ClientHome, hosts: list[TestHost], app: Path
) -> None:
    names = ok(exec_tako(cli, app, "--all", "--", "hostname")).splitlines()
    assert sorted(line.split(" | ")[0] for line in names) == sorted(h.name for h in hosts)
    addresses = ok(exec_tako(cli, app, "--all", "--", "hostname", "-I")).splitlines()
    for host in hosts:  # each ran in its own host (network namespace)
        assert any(
            line.startswith(f"{host.name} | ") and host.address in line for line in addresses
        ), addresses


def test_exec_exit_codes_pass_through(cli: ClientHome, hosts: list[TestHost], app: Path) -> None:
    assert exec_tako(cli, app, "--", "sh", "-c", "exit 42").returncode == 42
    done = exec_tako(cli, app, "--server", hosts[1].name, "--", "sh", "-c", "echo two; exit 3")
    assert (done.returncode, done.stdout) == (3, "two\n")
    assert exec_tako(cli, app, "--", "sh", "-c", "kill -TERM $$").returncode == 143
    both = exec_tako(cli, app, "--all", "--", "sh", "-c", "exit 7")
    assert both.returncode == 7


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), "tako exec needs a command"),
        (("--server", "nowhere", "--", "env"), "server 'nowhere' is not a server"),
        (("--env", "staging", "--", "env"), "is not deployed on this server"),
    ],
)
def test_exec_refuses_bad_input_clearly(
    cli: ClientHome, app: Path, args: tuple[str, ...], words: str
) -> None:
    done = exec_tako(cli, app, *args)
    assert done.returncode == 1 and words in done.stderr, done.stdout + done.stderr


def test_interactive_exec_gives_a_terminal_that_answers_a_typed_command(
    cli: ClientHome, app: Path
) -> None:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    tako_bin = Path(sys.executable).parent / "tako"
    argv = [str(tako_bin), "exec", "-i", "-c", str(app / "tako.toml"), "--", "sh"]
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=cli.env, cwd=cli.home
    )
    os.close(slave)
    seen = b""
    typed = False
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
            if not typed and b"$ " in seen:  # the remote shell's prompt: type a command
                os.write(master, b"stty size; echo answer-$((6*7)); exit 5\r")
                typed = True
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    text = seen.decode(errors="replace")
    assert "answer-42" in text, text
    assert "30 100" in text, text  # the local terminal's size reached the remote one
    assert proc.returncode == 5, text
