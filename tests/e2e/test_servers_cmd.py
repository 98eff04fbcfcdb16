"""``tako servers add|ls|rm|status`` run as a real CLI process against real test hosts
(sshd + tako-server in network namespaces); the pure formatting/parsing helpers first."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from tako_client.commands.servers import align, app_line, parse_arch, parse_libc
from tako_common.errors import ValidationError
from tako_common.protocol import AppStatus
from tests.e2e.hosts import ClientHome, TestHost

# Runs the real root app and error boundary, registering `servers` if cli.py does not yet.
SHIM = (
    "from tako_client import cli; from tako_client.commands import servers; "
    "'servers' in cli.COMMAND_MODULES or servers.register(cli.app); cli.main()"
)


def tako(
    client: ClientHome, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHIM, *args],
        input=input,
        capture_output=True,
        text=True,
        env=client.env,
        cwd=client.home,
        timeout=120,
        check=False,
    )


def inventory(client: ClientHome) -> list[dict[str, object]]:
    path = client.tako_home / "config.toml"
    return tomllib.loads(path.read_text()).get("servers", []) if path.exists() else []  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("text", "libc"),
    [
        ("ldd (Debian GLIBC 2.36-9+deb12u4) 2.36\nCopyright (C) 2022", "glibc"),
        ("ldd (GNU libc) 2.39", "glibc"),
        ("musl libc (x86_64)\nVersion 1.2.4\nDynamic Program Loader", "musl"),
    ],
)
def test_libc_is_read_from_ldd_version_output(text: str, libc: str) -> None:
    assert parse_libc(text) == libc


def test_unrecognised_ldd_output_is_rejected_naming_it() -> None:
    with pytest.raises(ValidationError, match="cannot tell the C library"):
        parse_libc("sh: ldd: not found")


@pytest.mark.parametrize(
    ("uname", "arch"),
    [("x86_64\n", "x86_64"), ("amd64", "x86_64"), ("arm64", "aarch64"), ("aarch64", "aarch64")],
)
def test_architecture_is_normalised(uname: str, arch: str) -> None:
    assert parse_arch(uname) == arch


def test_unsupported_architecture_is_rejected() -> None:
    with pytest.raises(ValidationError, match="unsupported architecture 'riscv64'"):
        parse_arch("riscv64")


def test_app_line_shows_state_health_version_and_deploy_time() -> None:
    app = AppStatus(
        app="web",
        env="production",
        version="abc1234",
        state="running",
        desired_instances=2,
        healthy_instances=1,
        deployed_at="2026-03-01T10:00:00Z",
        last_error="instance 2 exited 1",
    )
    assert app_line(app) == (
        "web/production  running  1/2 healthy  version abc1234  "
        "deployed 2026-03-01T10:00:00Z  last error: instance 2 exited 1"
    )


def test_columns_are_aligned_and_trailing_blanks_trimmed() -> None:
    assert align([("NAME", "HOST", "D"), ("a", "10.0.0.1", "")]) == [
        "NAME  HOST      D",
        "a     10.0.0.1",
    ]


# --------------------------------------------------------------------------- against hosts


@pytest.fixture(scope="module")
def server_host(make_hosts) -> TestHost:  # type: ignore[no-untyped-def]
    (host,) = make_hosts(1)
    return host


@pytest.mark.root
def test_add_detects_the_target_checks_tako_server_and_saves(
    server_host: TestHost, client: ClientHome
) -> None:
    result = tako(
        client, "servers", "add", server_host.address, "--name", "web-1", "--description", "first"
    )
    assert result.returncode == 0, result.stderr
    assert "tako-server 0.1" in result.stdout and "linux-x86_64-glibc" in result.stdout
    assert inventory(client) == [
        {
            "name": "web-1",
            "host": server_host.address,
            "port": 22,
            "description": "first",
            "arch": "x86_64",
            "libc": "glibc",
        }
    ]


@pytest.mark.root
def test_adding_the_same_server_again_changes_nothing(
    server_host: TestHost, client: ClientHome
) -> None:
    assert tako(client, "servers", "add", server_host.address, "--name", "web-1").returncode == 0
    before = (client.tako_home / "config.toml").read_text()
    again = tako(client, "servers", "add", server_host.address, "--name", "web-1")
    assert again.returncode == 0 and "already configured" in again.stdout
    assert (client.tako_home / "config.toml").read_text() == before


@pytest.mark.root
def test_adding_an_existing_name_with_another_host_is_refused(
    server_host: TestHost, client: ClientHome
) -> None:
    assert tako(client, "servers", "add", server_host.address, "--name", "web-1").returncode == 0
    clash = tako(client, "servers", "add", "192.0.2.10", "--name", "web-1", "--no-test")
    assert clash.returncode == 1
    assert "already exists" in clash.stderr and "tako servers rm web-1" in clash.stderr


@pytest.mark.root
def test_add_with_no_test_saves_without_connecting_or_target(client: ClientHome) -> None:
    result = tako(
        client, "servers", "add", "192.0.2.10", "--name", "later", "--port", "2200", "--no-test"
    )
    assert result.returncode == 0, result.stderr
    assert inventory(client) == [{"name": "later", "host": "192.0.2.10", "port": 2200}]
    assert "not tested" in result.stderr


@pytest.mark.root
def test_add_fails_and_saves_nothing_when_tako_server_does_not_answer(
    echo_host: TestHost, client: ClientHome
) -> None:
    result = tako(client, "servers", "add", echo_host.address, "--name", "bare")
    assert result.returncode == 1
    assert "tako-server" in result.stderr and "--no-test" in result.stderr
    assert inventory(client) == []


@pytest.mark.root
def test_add_refuses_an_unknown_host_key_without_a_terminal(
    server_host: TestHost, client: ClientHome
) -> None:
    client.forget_all()
    result = tako(client, "servers", "add", server_host.address, "--name", "web-1")
    assert result.returncode == 1
    assert "not in known_hosts" in result.stderr and "ssh-keyscan -p 22" in result.stderr
    assert inventory(client) == []


@pytest.mark.root
def test_invalid_server_name_is_rejected_with_the_rule(client: ClientHome) -> None:
    result = tako(client, "servers", "add", "192.0.2.10", "--name", "Web_1", "--no-test")
    assert result.returncode == 1
    assert "invalid server name 'Web_1'" in result.stderr


@pytest.mark.root
def test_ls_lists_servers_in_columns_or_says_there_are_none(client: ClientHome) -> None:
    empty = tako(client, "servers", "ls")
    assert empty.returncode == 0 and "No servers configured." in empty.stdout
    tako(
        client, "servers", "add", "192.0.2.10", "--name", "a", "--no-test", "--description", "spare"
    )
    listed = tako(client, "servers", "list")
    assert listed.stdout.splitlines() == [
        "NAME  HOST        PORT  TARGET  DESCRIPTION",
        "a     192.0.2.10  22    -       spare",
    ]


@pytest.mark.root
def test_rm_needs_yes_without_a_terminal_and_removes_with_it(client: ClientHome) -> None:
    tako(client, "servers", "add", "192.0.2.10", "--name", "a", "--no-test")
    refused = tako(client, "servers", "rm", "a")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert len(inventory(client)) == 1
    removed = tako(client, "servers", "rm", "a", "--yes")
    assert removed.returncode == 0 and inventory(client) == []


@pytest.mark.root
def test_rm_of_an_unknown_server_names_it(client: ClientHome) -> None:
    result = tako(client, "servers", "rm", "ghost", "--yes")
    assert result.returncode == 1 and "server 'ghost' is not in" in result.stderr


@pytest.mark.root
def test_status_shows_every_server_and_fails_when_one_is_unreachable(
    server_host: TestHost, echo_host: TestHost, client: ClientHome
) -> None:
    tako(client, "servers", "add", server_host.address, "--name", "good")
    tako(client, "servers", "add", echo_host.address, "--name", "no-daemon", "--no-test")
    tako(
        client,
        "servers",
        "add",
        server_host.gateway,
        "--name",
        "no-sshd",
        "--port",
        "2",
        "--no-test",
    )
    result = tako(client, "servers", "status")
    assert result.returncode == 1
    out = result.stdout
    assert f"good ({server_host.address}:22)" in out
    assert (
        "reachable, tako-server 0.1" in out and "mode normal" in out and "no apps deployed" in out
    )
    assert (
        f"no-daemon ({echo_host.address}:22)" in out and f"no-sshd ({server_host.gateway}:2)" in out
    )
    assert "unreachable: cannot reach tako-server's socket" in result.stderr
    assert "unreachable: connection to" in result.stderr and "refused" in result.stderr
    assert "2 of 3 server(s) could not be reached: no-daemon, no-sshd" in result.stderr


@pytest.mark.root
def test_status_succeeds_when_every_server_answers(
    server_host: TestHost, client: ClientHome
) -> None:
    tako(client, "servers", "add", server_host.address, "--name", "good")
    result = tako(client, "servers", "status")
    assert result.returncode == 0, result.stderr
    assert "1 server(s) reachable" in result.stdout


@pytest.mark.root
def test_status_reports_a_stopped_tako_server_and_recovers_after_a_restart(
    make_hosts,
    client: ClientHome,  # type: ignore[no-untyped-def]
) -> None:
    (host,) = make_hosts(1)
    client.trust(host)
    assert tako(client, "servers", "add", host.address, "--name", "flaky").returncode == 0
    host.stop_server()
    down = tako(client, "servers", "status")
    assert down.returncode == 1 and "cannot reach tako-server's socket" in down.stderr
    host.start_server()
    assert tako(client, "servers", "status").returncode == 0
