"""The composite GitHub Action (action.yml): its real shell steps, run as the runner would.

The steps run through :mod:`tests.helpers.action` in a temp HOME and workspace, with a
recording ``tako`` (and ``python``) first on PATH, so the test sees exactly which
commands the action runs, with which arguments, in which directory and environment. The
real deploy through these same steps is exercised end to end by the e2e suite.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.action import (
    action_shell_steps,
    input_defaults,
    read_github_env,
    run_action_steps,
)

ACTION = Path(__file__).resolve().parents[2] / "action.yml"
INSTALL_STEP = "Install the tako CLI"
SSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDfakefakefakefakefakefakefakefakefakefakefakeAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
KNOWN_HOSTS = (
    "203.0.113.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOne\n"
    "[host.example]:2200 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyTwo\n"
)
KEY_STAGING = "c3RhZ2luZy1rZXktMzItYnl0ZXMtbG9uZy1lbm91Z2g="
KEY_MY_ENV = "bXktZW52LWtleS0zMi1ieXRlcy1sb25nLWVub3VnaCE="

SHIM = """#!{python}
import json, os, sys
with open(os.environ["SHIM_RECORD"], "a") as out:
    env = {{k: v for k, v in os.environ.items() if k.startswith("TAKO_")}}
    call = {{"tool": "{tool}", "argv": sys.argv[1:], "cwd": os.getcwd(), "env": env}}
    out.write(json.dumps(call) + "\\n")
"""


class Runner:
    """A temp HOME, workspace (app in ``app/``) and recording shims."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.workspace = root / "workspace"
        self.shims = root / "shims"
        self.record = root / "calls.jsonl"
        for directory in (self.home, self.workspace / "app", self.shims):
            directory.mkdir(parents=True)
        for tool in ("tako", "python"):
            shim = self.shims / tool
            shim.write_text(SHIM.format(python=sys.executable, tool=tool))
            shim.chmod(0o755)

    def run(self, skip: tuple[str, ...] = (INSTALL_STEP,), **inputs: str) -> list[Any]:
        return run_action_steps(
            ACTION,
            inputs,
            home=self.home,
            workspace=self.workspace,
            path_prefix=[self.shims],
            extra_env={"SHIM_RECORD": str(self.record)},
            skip=skip,
        )

    def calls(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


def good_inputs(**overrides: str) -> dict[str, str]:
    inputs = {
        "environment": "staging",
        "ssh-private-key": SSH_KEY,
        "known-hosts": KNOWN_HOSTS,
        "servers": "web1 203.0.113.5\nweb2 [2001:db8::1]:2222\n\nweb3 host.example:2200\n",
        "secrets-keys": f"staging={KEY_STAGING}\nmy-env={KEY_MY_ENV}\n",
        "working-directory": "app",
    }
    inputs.update(overrides)
    return inputs


def test_action_declares_the_documented_inputs_with_their_defaults() -> None:
    assert input_defaults(ACTION) == {
        "environment": "production",
        "ssh-private-key": "",
        "known-hosts": "",
        "servers": "",
        "secrets-keys": "",
        "working-directory": ".",
        "python-version": "3.11",
        "tako-version": "",
    }


def test_action_scripts_take_inputs_only_through_the_environment() -> None:
    steps = action_shell_steps(ACTION)
    assert [s.name for s in steps] == [
        INSTALL_STEP,
        "Trust the servers' host keys",
        "Deploy with tako",
    ]
    for step in steps:
        assert "${{" not in step.run, step.name


@pytest.mark.parametrize(
    ("tako_version", "expected_spec"),
    [("", "ACTION_PATH"), ("1.2.3", "tako==1.2.3")],
)
def test_install_step_installs_the_cli_from_the_action_repo_or_the_pinned_version(
    runner: Runner, tako_version: str, expected_spec: str
) -> None:
    results = runner.run(skip=(), **good_inputs(**{"tako-version": tako_version}))
    assert [r.returncode for r in results] == [0, 0, 0], results
    spec = str(ACTION.parent) if expected_spec == "ACTION_PATH" else expected_spec
    first = runner.calls()[0]
    assert first["tool"] == "python"
    assert first["argv"] == ["-m", "pip", "install", "--disable-pip-version-check", "--quiet", spec]


def test_deploy_steps_trust_host_keys_add_servers_and_deploy_with_keys_in_env(
    runner: Runner,
) -> None:
    results = runner.run(**good_inputs())
    assert [r.returncode for r in results] == [0, 0], results
    ssh_dir = runner.home / ".ssh"
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    known = ssh_dir / "known_hosts"
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert known.read_text() == KNOWN_HOSTS
    calls = runner.calls()
    assert [c["argv"] for c in calls] == [
        ["servers", "add", "203.0.113.5", "--name", "web1", "--port", "22"],
        ["servers", "add", "2001:db8::1", "--name", "web2", "--port", "2222"],
        ["servers", "add", "host.example", "--name", "web3", "--port", "2200"],
        ["deploy", "--env", "staging", "--yes"],
    ]
    deploy = calls[-1]
    assert deploy["cwd"] == str(runner.workspace / "app")
    assert deploy["env"]["TAKO_SSH_KEY"] == SSH_KEY
    assert deploy["env"]["TAKO_KEY_STAGING"] == KEY_STAGING
    assert deploy["env"]["TAKO_KEY_MY_ENV"] == KEY_MY_ENV
    assert "TAKO_ACTION_SECRETS_KEYS" not in deploy["env"]
    masked = {line for line in results[-1].stdout.splitlines() if line.startswith("::add-mask::")}
    expected = {f"::add-mask::{line}" for line in SSH_KEY.splitlines()}
    assert expected | {f"::add-mask::{KEY_STAGING}", f"::add-mask::{KEY_MY_ENV}"} == masked
    github_env = runner.workspace / ".runner-temp" / "github_env"
    assert "PRIVATE KEY" not in github_env.read_text() and KEY_STAGING not in github_env.read_text()


def test_rerunning_the_action_does_not_duplicate_known_hosts_lines(runner: Runner) -> None:
    existing = "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther\n"
    (runner.home / ".ssh").mkdir(mode=0o700)
    (runner.home / ".ssh" / "known_hosts").write_text(existing)
    for _ in range(2):
        assert [r.returncode for r in runner.run(**good_inputs())] == [0, 0]
    assert (runner.home / ".ssh" / "known_hosts").read_text() == existing + KNOWN_HOSTS


def test_default_environment_is_production_and_servers_are_optional(runner: Runner) -> None:
    inputs = good_inputs(servers="", **{"working-directory": "."})
    del inputs["environment"]
    assert [r.returncode for r in runner.run(**inputs)] == [0, 0]
    assert [c["argv"] for c in runner.calls()] == [["deploy", "--env", "production", "--yes"]]
    assert runner.calls()[0]["cwd"] == str(runner.workspace)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"known-hosts": "  \n"}, "input known-hosts is empty"),
        ({"ssh-private-key": ""}, "input ssh-private-key is empty"),
        ({"secrets-keys": "staging"}, "secrets-keys: each line must be ENV=base64key"),
        ({"secrets-keys": "Bad_Env=abc"}, "secrets-keys: each line must be ENV=base64key"),
        ({"secrets-keys": "staging="}, "secrets-keys: each line must be ENV=base64key"),
        ({"servers": "web1"}, "servers: each line must be 'NAME HOST[:PORT]'"),
        ({"servers": "web1 a.example extra"}, "servers: each line must be 'NAME HOST[:PORT]'"),
    ],
)
def test_bad_inputs_fail_with_an_annotation_before_anything_runs(
    runner: Runner, overrides: dict[str, str], error: str
) -> None:
    results = runner.run(**good_inputs(**overrides))
    assert results[-1].returncode != 0
    assert f"::error::{error}" in results[-1].stdout
    assert runner.calls() == []


def test_github_env_file_parser_reads_plain_and_delimited_values(tmp_path: Path) -> None:
    env_file = tmp_path / "github_env"
    env_file.write_text("A=1\nB<<EOF_x\nline one\nline=two\nEOF_x\nC=x=y\n")
    assert read_github_env(env_file) == {"A": "1", "B": "line one\nline=two", "C": "x=y"}
