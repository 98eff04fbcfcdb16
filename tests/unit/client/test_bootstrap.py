"""``servers add --install``: the remote commands it composes and the decisions it makes."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tako_client import bootstrap
from tako_client.bootstrap import (
    InstalledState,
    authorize_key_script,
    install_script,
    installed_version,
    needs_install,
    parse_state,
    privileged,
    state_script,
    tail,
)
from tako_common.errors import TakoError, ValidationError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL04KMAwVblHsmVcl6PfghT8lGIvQa6dJKdJMmoQGhEP me@x"
DIGEST = "a" * 64


@pytest.mark.parametrize(
    ("user", "command"),
    [
        ("root", "sh -c 'echo hi'"),
        ("deploy", "sudo -n sh -c 'echo hi'"),
    ],
)
def test_root_commands_use_sudo_n_for_any_other_login(user: str, command: str) -> None:
    assert privileged("echo hi", user) == command


def test_the_installer_runs_on_the_uploaded_tarball_and_checks_its_sha256_file() -> None:
    command = install_script("/tmp/tako-install.x y", "tako-server-linux-x86_64-glibc.tar.gz")
    assert command == (
        "TAKO_SERVER_ARTIFACT='/tmp/tako-install.x y/tako-server-linux-x86_64-glibc.tar.gz'"
        " sh '/tmp/tako-install.x y/install-server.sh' 2>&1"
    )
    assert "TAKO_SERVER_SHA256" not in command  # the .sha256 beside the tarball is used


@pytest.mark.parametrize(
    ("state", "install"),
    [
        (InstalledState(None, False), True),  # bare host
        (InstalledState("b" * 64, True), True),  # another build: upgrade
        (InstalledState(DIGEST, False), True),  # same build, not running: start it
        (InstalledState(DIGEST, True), False),  # same build serving: skip
    ],
)
def test_the_installer_is_skipped_only_for_the_same_running_build(
    state: InstalledState, install: bool
) -> None:
    assert needs_install(state, DIGEST) is install


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("-\nstopped\n", InstalledState(None, False)),
        (f"{DIGEST}\nrunning\n", InstalledState(DIGEST, True)),
    ],
)
def test_the_host_state_is_parsed(text: str, state: InstalledState) -> None:
    assert parse_state(text) == state


def test_an_unexpected_state_answer_is_an_error() -> None:
    with pytest.raises(TakoError, match="unexpected answer"):
        parse_state("sha256sum: not found\n")


def test_the_state_script_answers_in_the_parsed_shape_on_this_machine() -> None:
    done = subprocess.run(["sh", "-c", state_script()], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    parse_state(done.stdout)  # digest or '-', then running or stopped


def test_the_key_script_quotes_the_key_and_matches_type_and_body() -> None:
    script = authorize_key_script(KEY)
    assert f'printf "%s\\n" {shlex.quote(KEY)} >>"$keys"' in script
    assert (
        "-v k=ssh-ed25519 -v b=AAAAC3NzaC1lZDI1NTE5AAAAIL04KMAwVblHsmVcl6PfghT8lGIvQa6dJKdJMmoQGhEP"
        in script
    )
    assert 'chown tako:tako "$keys"; chmod 0600 "$keys"' in script
    assert 'chmod 0700 "$dir"' in script


def _run_key_script(home: Path) -> str:
    script = authorize_key_script(KEY)
    script = script.replace("$(getent passwd tako | cut -d: -f6)", shlex.quote(str(home)))
    script = script.replace("chown tako:tako", "true")  # no tako user needed here
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_key_is_appended_once_and_a_commented_copy_does_not_count(tmp_path: Path) -> None:
    keys = tmp_path / ".ssh" / "authorized_keys"
    keys.parent.mkdir()
    body = KEY.split()[1]
    keys.write_text(f"# ssh-ed25519 {body} old\nssh-rsa AAAB other")  # no final newline
    assert [_run_key_script(tmp_path) for _ in range(3)] == ["added", "present", "present"]
    assert keys.read_text().splitlines() == [f"# ssh-ed25519 {body} old", "ssh-rsa AAAB other", KEY]
    assert (keys.stat().st_mode & 0o777, keys.parent.stat().st_mode & 0o777) == (0o600, 0o700)


def test_a_key_with_options_before_it_counts_as_present(tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir()
    body = KEY.split()[1]
    (tmp_path / ".ssh" / "authorized_keys").write_text(f'from="10.0.0.1" ssh-ed25519 {body}\n')
    assert _run_key_script(tmp_path) == "present"


@pytest.mark.parametrize("bad", ["", "AAAA", "not a key at all"])
def test_anything_but_an_openssh_public_key_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="not an OpenSSH public key line"):
        authorize_key_script(bad)


def test_failures_show_the_last_lines_of_output_on_one_line() -> None:
    text = "install-server: a\n\nb\nc\nd\ne\ninstall-server: error: checksum mismatch\n"
    assert tail(text) == "b | c | d | e | install-server: error: checksum mismatch"
    assert tail("") == "(no output)"


def test_the_installed_version_comes_from_the_installers_done_line() -> None:
    out = "install-server: checksum verified (x)\ninstall-server: done: tako-server 0.1.0\n"
    assert installed_version(out) == "tako-server 0.1.0"
    assert installed_version("nothing") == ""


def test_precheck_refuses_an_empty_dist_with_how_to_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bootstrap, "checkout_dist", lambda: tmp_path)
    with pytest.raises(ValidationError, match=f"no tako-server release artifact in {tmp_path}"):
        bootstrap.precheck(None)
    with pytest.raises(ValidationError, match="does not exist"):
        bootstrap.precheck(tmp_path / "tako-server-linux-x86_64-glibc.tar.gz")


def test_the_installer_beside_the_artifact_wins_over_the_checkout_copy(tmp_path: Path) -> None:
    artifact = tmp_path / "tako-server-linux-x86_64-glibc.tar.gz"
    assert bootstrap.find_installer(artifact).parts[-2:] == ("scripts", "install-server.sh")
    (tmp_path / "install-server.sh").write_text("#!/bin/sh\n")
    assert bootstrap.find_installer(artifact) == tmp_path / "install-server.sh"


def _tako(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tako_client.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={"HOME": str(home), "TAKO_HOME": str(home / ".tako"), "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--artifact", "x.tar.gz"], "--artifact and --user only go with --install"),
        (["--user", "deploy"], "--artifact and --user only go with --install"),
        (["--install", "--no-test"], "--install cannot be combined with --no-test"),
    ],
)
def test_install_options_are_checked_before_connecting(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = _tako("servers", "add", "192.0.2.1", "--name", "a", *args, home=tmp_path)
    assert done.returncode == 1 and message in done.stderr
    assert (
        not (tmp_path / ".tako" / "config.toml").exists()
        or "192.0.2.1" not in (tmp_path / ".tako" / "config.toml").read_text()
    )
