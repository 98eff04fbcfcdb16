"""The CLI's SSH transport against a real sshd in a test host: host keys, client keys,
commands, the management socket over direct-streamlocal, and SFTP uploads."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tako_client.ssh import (
    AuthenticationError,
    ConnectError,
    HostKeyChangedError,
    HostKeyUnknownError,
    SshClient,
    SshError,
    SshSettings,
    SshTarget,
)
from tests.e2e.hosts import ECHO_SOCKET, ClientHome, HostNetwork, TestHost, run

pytestmark = pytest.mark.root


@dataclass
class ScriptedPrompter:
    """Stands in for the person at the terminal: fixed answers, questions recorded."""

    answer: bool = True
    passphrase: str = ""
    questions: list[str] = field(default_factory=list)

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer

    def secret(self, question: str) -> str:
        self.questions.append(question)
        return self.passphrase


@pytest.fixture
def host(echo_host: TestHost) -> TestHost:
    return echo_host


def target(host: TestHost, port: int | None = None) -> SshTarget:
    return SshTarget(host.address, port or host.ssh_port, label=host.name)


def settings(client: ClientHome, **changes: object) -> SshSettings:
    return SshSettings(home=client.home, **changes)  # type: ignore[arg-type]


def new_key(directory: Path, name: str, passphrase: str = "") -> Path:
    path = directory / name
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", str(path)])
    return path


def authorize(host: TestHost, key: Path) -> None:
    with (host.paths.home / ".ssh" / "authorized_keys").open("a") as handle:
        handle.write(Path(f"{key}.pub").read_text())


def fingerprint(public_line: str) -> str:
    result = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=public_line, capture_output=True, text=True, check=True
    )
    return result.stdout.split()[1]


async def test_connects_as_tako_and_runs_commands_with_exit_status(
    host: TestHost, client: ClientHome
) -> None:
    async with await SshClient(settings(client)).connect(target(host)) as conn:
        ok = await conn.run("id -un; echo err >&2")
        failed = await conn.run("exit 3")
    assert ok == (0, "tako\n", "err\n")
    assert failed.exit == 3


async def test_commands_over_ssh_see_the_hosts_private_paths(
    host: TestHost, client: ClientHome
) -> None:
    marker = host.paths.opt / "marker"
    marker.write_text("host-private")
    try:
        async with await SshClient(settings(client)).connect(target(host)) as conn:
            result = await conn.run("cat /opt/tako/marker")
    finally:
        marker.unlink()
    assert result.stdout == "host-private"


async def test_unknown_host_key_is_refused_without_a_terminal_with_fingerprint_and_keyscan_hint(
    host: TestHost, client: ClientHome
) -> None:
    client.forget_all()
    with pytest.raises(HostKeyUnknownError) as caught:
        await SshClient(settings(client, interactive=False)).connect(target(host))
    assert fingerprint(host.host_key) in caught.value.message
    assert (
        caught.value.hint is not None and f"ssh-keyscan -p 22 {host.address}" in caught.value.hint
    )
    assert client.known_hosts.read_text() == ""


async def test_unknown_host_key_accepted_interactively_is_saved_and_not_asked_again(
    host: TestHost, client: ClientHome
) -> None:
    client.forget_all()
    prompter = ScriptedPrompter(answer=True)
    ssh = SshClient(settings(client, interactive=True), prompter)
    async with await ssh.connect(target(host)) as conn:
        assert (await conn.run("true")).exit == 0
    async with await ssh.connect(target(host)) as conn:
        assert (await conn.run("true")).exit == 0
    assert len(prompter.questions) == 1
    assert client.known_hosts.read_text() == f"{host.address} {host.host_key}\n"


async def test_unknown_host_key_declined_interactively_is_refused_and_not_saved(
    host: TestHost, client: ClientHome
) -> None:
    client.forget_all()
    prompter = ScriptedPrompter(answer=False)
    with pytest.raises(HostKeyUnknownError):
        await SshClient(settings(client, interactive=True), prompter).connect(target(host))
    assert len(prompter.questions) == 1
    assert client.known_hosts.read_text() == ""


async def test_changed_host_key_is_always_refused_naming_host_and_both_fingerprints(
    host: TestHost, client: ClientHome, tmp_path: Path
) -> None:
    impostor = new_key(tmp_path, "other_host_key")
    old_line = " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    client.forget_all()
    client.trust(host, key=old_line)
    prompter = ScriptedPrompter(answer=True)
    with pytest.raises(HostKeyChangedError) as caught:
        await SshClient(settings(client, interactive=True), prompter).connect(target(host))
    message = caught.value.message
    assert host.address in message
    assert fingerprint(host.host_key) in message and fingerprint(old_line) in message
    assert prompter.questions == []


async def test_tako_known_hosts_file_is_trusted_besides_the_users_known_hosts(
    host: TestHost, client: ClientHome, tmp_path: Path
) -> None:
    client.forget_all()
    extra = tmp_path / "ci_known_hosts"
    extra.write_text(f"{host.address} {host.host_key}\n")
    ssh = SshClient(settings(client, extra_known_hosts=(extra,)))
    async with await ssh.connect(target(host)) as conn:
        assert (await conn.run("true")).exit == 0


async def test_key_text_from_tako_ssh_key_authenticates_without_key_files(
    host: TestHost, client: ClientHome
) -> None:
    key_text = (client.ssh_dir / "id_ed25519").read_text()
    (client.ssh_dir / "id_ed25519").unlink()
    async with await SshClient(settings(client, key_text=key_text)).connect(target(host)) as conn:
        assert (await conn.run("true")).exit == 0


async def test_encrypted_key_is_decrypted_with_the_given_passphrase(
    host: TestHost, client: ClientHome, tmp_path: Path
) -> None:
    key = new_key(tmp_path, "locked", passphrase="sesame-open")
    authorize(host, key)
    (client.ssh_dir / "id_ed25519").unlink()
    shutil.copy(key, client.ssh_dir / "id_ecdsa")  # any default key file name
    async with await SshClient(settings(client, passphrase="sesame-open")).connect(
        target(host)
    ) as conn:
        assert (await conn.run("true")).exit == 0


async def test_encrypted_key_asks_for_the_passphrase_on_a_terminal(
    host: TestHost, client: ClientHome, tmp_path: Path
) -> None:
    key = new_key(tmp_path, "locked2", passphrase="typed-secret")
    authorize(host, key)
    (client.ssh_dir / "id_ed25519").unlink()
    shutil.copy(key, client.ssh_dir / "id_rsa")
    prompter = ScriptedPrompter(passphrase="typed-secret")
    ssh = SshClient(settings(client, interactive=True), prompter)
    async with await ssh.connect(target(host)) as conn:
        assert (await conn.run("true")).exit == 0
    assert prompter.questions == [f"Passphrase for {client.ssh_dir / 'id_rsa'}"]


async def test_wrong_passphrase_is_an_authentication_error(
    client: ClientHome, tmp_path: Path
) -> None:
    key = new_key(tmp_path, "locked3", passphrase="right")
    (client.ssh_dir / "id_ed25519").unlink()
    shutil.copy(key, client.ssh_dir / "id_ed25519")
    with pytest.raises(AuthenticationError, match="wrong passphrase"):
        await SshClient(settings(client, passphrase="wrong")).connect(SshTarget("127.0.0.1", 9))


async def test_no_usable_key_is_an_error_before_connecting(client: ClientHome) -> None:
    (client.ssh_dir / "id_ed25519").unlink()
    with pytest.raises(AuthenticationError, match="no SSH key found") as caught:
        await SshClient(settings(client)).connect(SshTarget("127.0.0.1", 9))
    assert caught.value.hint is not None and "ssh-keygen" in caught.value.hint


async def test_unauthorized_key_is_refused_with_an_authorized_keys_hint(
    host: TestHost, client: ClientHome, tmp_path: Path
) -> None:
    stranger = new_key(tmp_path, "stranger")
    shutil.copy(stranger, client.ssh_dir / "id_ed25519")
    with pytest.raises(AuthenticationError, match="refused") as caught:
        await SshClient(settings(client)).connect(target(host))
    assert caught.value.hint is not None and "authorized_keys" in caught.value.hint


async def test_closed_port_is_a_connection_refused_error(
    host: TestHost, client: ClientHome
) -> None:
    with pytest.raises(ConnectError, match="refused"):
        await SshClient(settings(client)).connect(target(host, port=2222))


async def test_control_channel_carries_many_json_lines_over_direct_streamlocal(
    host: TestHost, client: ClientHome
) -> None:
    async with await SshClient(settings(client)).connect(target(host)) as conn:
        channel = await conn.open_control(ECHO_SOCKET)
        try:
            await channel.send(b'{"command":"ping","n":1}\n')
            await channel.send(b'{"command":"ping","n":2}\n')
            first = await channel.receive(timeout=10)
            second = await channel.receive(timeout=10)
        finally:
            await channel.close()
    assert first == b'{"status": "ok", "data": {"command": "ping", "n": 1}}'
    assert second == b'{"status": "ok", "data": {"command": "ping", "n": 2}}'


async def test_missing_socket_is_reported_as_server_unreachable(
    host: TestHost, client: ClientHome
) -> None:
    async with await SshClient(settings(client)).connect(target(host)) as conn:
        with pytest.raises(SshError) as caught:
            await conn.open_control("/var/run/tako/nothing-here.sock")
    assert caught.value.code == "server_unreachable"
    assert caught.value.hint is not None and "tako-server" in caught.value.hint


async def test_upload_writes_the_file_via_a_part_file_and_reports_progress(
    host: TestHost, client: ClientHome, tmp_path: Path
) -> None:
    local = tmp_path / "artifact.tar.zst"
    payload = bytes(range(256)) * 4096  # 1 MiB
    local.write_bytes(payload)
    progress: list[tuple[int, int]] = []
    async with await SshClient(settings(client)).connect(target(host)) as conn:
        await conn.upload(
            local, "/opt/tako/artifact.tar.zst", lambda done, total: progress.append((done, total))
        )
    remote = host.paths.opt / "artifact.tar.zst"
    try:
        assert remote.read_bytes() == payload
        assert not (host.paths.opt / "artifact.tar.zst.part").exists()
        assert progress[-1] == (len(payload), len(payload))
        assert remote.stat().st_uid != 0  # written as user tako
    finally:
        remote.unlink()


async def test_upload_into_a_missing_directory_fails_with_a_clear_error(
    host: TestHost, client: ClientHome, tmp_path: Path
) -> None:
    local = tmp_path / "a.tar.zst"
    local.write_bytes(b"x")
    async with await SshClient(settings(client)).connect(target(host)) as conn:
        with pytest.raises(SshError, match="upload of a.tar.zst"):
            await conn.upload(local, "/opt/tako/no/such/dir/a.tar.zst")


def test_host_network_is_torn_down_by_pid_and_namespace(host_network: HostNetwork) -> None:
    """A host made and closed leaves no namespace, veth or process behind."""
    (extra,) = host_network.make_hosts(1, server=False)
    holder_pid = extra._holder.pid if extra._holder else 0
    extra.close()
    host_network.hosts.remove(extra)
    assert extra.netns not in run(["ip", "netns", "list"]).stdout
    assert extra._veth not in run(["ip", "-o", "link"]).stdout
    assert not Path(f"/proc/{holder_pid}").exists()
