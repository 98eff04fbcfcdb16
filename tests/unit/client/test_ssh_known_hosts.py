"""Host-key lookup follows OpenSSH: for a port other than 22 only ``[host]:port`` counts."""

from pathlib import Path

import asyncssh

from tako_client.ssh import _HostKeyPolicy, _port_known_hosts, _read_known_hosts


def key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def test_a_plain_host_entry_does_not_vouch_for_another_port(tmp_path: Path) -> None:
    plain, bracketed = key(), key()
    known = tmp_path / "known_hosts"
    known.write_text(f"10.0.0.5 {plain}\n[10.0.0.6]:2222 {bracketed}\n")
    files = [known]
    policy = _HostKeyPolicy(_read_known_hosts(files), _port_known_hosts(files))
    assert len(policy.match("10.0.0.5", "10.0.0.5", 22)[0]) >= 1
    assert policy.match("10.0.0.5", "10.0.0.5", 2222)[0] == []  # unknown, not "changed"
    assert len(policy.match("10.0.0.6", "10.0.0.6", 2222)[0]) >= 1
