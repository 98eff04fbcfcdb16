"""The release step (prepare, run_release, discard) and exec through a real tako-server.

Sessions are driven over the real control socket with raw JSON lines: the request, its
``started`` answer, then output events both ways until the exit event.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.integration.conftest import (
    APPS_DIR,
    ControlClient,
    ServerProcess,
    deploy_message,
)

APP = {"app": "web", "env": "production"}
OWNER = "alice@laptop:1"
SECRET = "sekret-value-42"


def _artifact(server: ServerProcess, tmp_path: Path, marker: str) -> tuple[str, str]:
    src = tmp_path / f"src-{marker}"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(APPS_DIR / "pyapp", src)
    (src / "marker.txt").write_text(marker)
    return place_artifact(tar_zst_from_dir(src), server.incoming)


def _deploy(server: ServerProcess, tmp_path: Path, version: str, **extra: Any) -> dict[str, Any]:
    name, digest = _artifact(server, tmp_path, version)
    message = deploy_message(
        name, digest, version=version, vars={"GREETING": "hi"}, secrets={"API_KEY": SECRET}
    )
    return {**message, **extra}


class SessionResult:
    def __init__(self, started: dict[str, Any]) -> None:
        self.started = started
        self.stdout = b""
        self.stderr = b""
        self.errors: list[dict[str, Any]] = []
        self.exit: dict[str, Any] = {}

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


def _start(client: ControlClient, message: dict[str, Any]) -> dict[str, Any]:
    reply = client.request(message)
    assert reply["status"] == "ok", reply
    started: dict[str, Any] = reply["data"]
    assert started["kind"] == "started"
    return started


def _collect(
    client: ControlClient, result: SessionResult, until: Callable[[SessionResult], bool]
) -> None:
    """Read events into ``result`` until ``until(result)`` or the exit event."""
    while not result.exit and not until(result):
        line = client.read_line()
        if line["status"] == "error":
            result.errors.append(line)
            continue
        data = line["data"]
        if data["kind"] == "exit":
            result.exit = data
        else:
            raw = base64.b64decode(data["data"])
            if data["stream"] == "stdout":
                result.stdout += raw
            else:
                result.stderr += raw


def _session(
    client: ControlClient,
    message: dict[str, Any],
    inputs: list[dict[str, Any]] | None = None,
) -> SessionResult:
    result = SessionResult(_start(client, message))
    for frame in inputs or []:
        client.send_raw(json.dumps(frame).encode() + b"\n")
    _collect(client, result, lambda r: False)
    return result


def _stdin(text: str) -> dict[str, Any]:
    return {"kind": "stdin", "data": base64.b64encode(text.encode()).decode()}


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


RELEASE = (
    'echo "release of $TAKO_BUILD in $(pwd) greeting=$GREETING key=$API_KEY"; '
    "cat marker.txt > ran-release.txt; echo to-stderr >&2"
)


def test_prepare_and_release_run_in_the_new_release_before_anything_starts(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    deploy = _deploy(tako_server, tmp_path, "v1", owner=OWNER)
    control.ok({"command": "lock", **APP, "owner": OWNER})
    prepared = control.ok({**deploy, "command": "prepare"})
    assert (prepared["version"], prepared["reused"]) == ("v1", False)
    app_dir = tako_server.data_dir / "apps/web/production"
    assert not (app_dir / "current").exists()
    assert control.request({"command": "status", **APP})["status"] == "error"  # nothing runs
    with tako_server.client() as other:
        run = {"command": "run_release", **APP, "version": "v1", "run": RELEASE, "owner": OWNER}
        result = _session(other, run)
    workdir = app_dir / "releases/v1"
    assert result.started["workdir"] == str(workdir) and result.started["timeout"] == 600
    assert result.exit["exit_code"] == 0 and not result.exit["timed_out"]
    assert f"release of v1 in {workdir} greeting=hi key={SECRET}" in result.text
    assert result.stderr == b"to-stderr\n"
    assert (workdir / "ran-release.txt").read_text() == "v1"
    data = control.ok(deploy)
    assert (data["version"], data["new_app"]) == ("v1", True)
    assert os.readlink(app_dir / "current") == "releases/v1"
    assert SECRET not in tako_server.output()


def test_a_failed_release_is_discarded_and_current_stays(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    control.ok(_deploy(tako_server, tmp_path, "v1"))
    deploy = _deploy(tako_server, tmp_path, "v2", owner=OWNER)
    control.ok({"command": "lock", **APP, "owner": OWNER})
    control.ok({**deploy, "command": "prepare"})
    releases = tako_server.data_dir / "apps/web/production/releases"
    assert (releases / "v2").is_dir()
    with tako_server.client() as other:
        run = {
            "command": "run_release",
            **APP,
            "version": "v2",
            "run": "echo migrating; echo 'no such table' >&2; exit 3",
            "owner": OWNER,
        }
        result = _session(other, run)
    assert (result.exit["exit_code"], result.exit["signal"]) == (3, None)
    assert result.text == "migrating\n" and b"no such table" in result.stderr
    discarded = control.ok({"command": "discard", **APP, "version": "v2", "owner": OWNER})
    assert discarded["removed"] is True
    assert not (releases / "v2").exists() and (releases / "v1").is_dir()
    current = tako_server.data_dir / "apps/web/production/current"
    assert os.readlink(current) == "releases/v1"
    status = control.ok({"command": "status", **APP})["apps"][0]
    assert (status["version"], status["state"]) == ("v1", "running")
    again = control.ok({"command": "discard", **APP, "version": "v2", "owner": OWNER})
    assert again["removed"] is False


def test_a_release_command_past_its_timeout_is_stopped(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    control.ok({**_deploy(tako_server, tmp_path, "v1"), "command": "prepare"})
    started = time.monotonic()
    run = {"command": "run_release", **APP, "version": "v1", "run": "echo slow; exec sleep 30"}
    with tako_server.client() as client:
        result = _session(client, {**run, "timeout": 1})
    assert time.monotonic() - started < 15
    assert result.started["timeout"] == 1
    assert result.exit["timed_out"] is True
    assert (result.exit["exit_code"], result.exit["signal"]) == (143, "SIGTERM")
    assert result.text == "slow\n"


def test_run_release_needs_a_release_prepare_staged(
    tako_server: ServerProcess, control: ControlClient
) -> None:
    reply = control.request({"command": "run_release", **APP, "version": "v9", "run": "true"})
    assert reply["status"] == "error" and reply["code"] == "not_prepared"
    assert "v9" in reply["message"]
    blank = control.request({"command": "run_release", **APP, "version": "v9", "run": "  "})
    assert blank["code"] == "invalid_request" and "run: the command is empty" in blank["message"]


def test_the_deploy_lock_covers_prepare_and_the_release_command(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    deploy = _deploy(tako_server, tmp_path, "v1", owner=OWNER)
    control.ok({"command": "lock", **APP, "owner": OWNER})
    control.ok({**deploy, "command": "prepare"})
    with tako_server.client() as intruder:
        for message in (
            {**deploy, "command": "prepare", "owner": "bob@desk:2"},
            {"command": "run_release", **APP, "version": "v1", "run": "true", "owner": "bob@x:3"},
            {"command": "run_release", **APP, "version": "v1", "run": "true"},
        ):
            reply = intruder.request(message)
            assert reply["code"] == "locked" and OWNER in reply["message"], reply


def test_the_app_is_busy_while_its_release_command_runs(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    control.ok(_deploy(tako_server, tmp_path, "v1"))
    control.ok({"command": "lock", **APP, "owner": OWNER})
    control.ok({**_deploy(tako_server, tmp_path, "v2", owner=OWNER), "command": "prepare"})
    scale = {"command": "scale", **APP, "instances": 2}
    with tako_server.client() as other:
        run = {"command": "run_release", **APP, "version": "v2", "owner": OWNER}
        result = SessionResult(_start(other, {**run, "run": "echo go; exec sleep 60"}))
        _collect(other, result, lambda r: b"go" in r.stdout)
        busy = control.request(scale)
        assert busy["code"] == "busy" and "a run_release of web/production" in busy["message"]
        pid = result.started["pid"]
        assert _alive(pid)
    _wait_until(lambda: not _alive(pid), "the release command to stop with its client")
    _wait_until(lambda: control.request(scale)["status"] == "ok", "the app to be free again")


def test_closing_the_connection_drops_the_release_it_prepared(
    tako_server: ServerProcess, tmp_path: Path
) -> None:
    release = tako_server.data_dir / "apps/web/production/releases/v1"
    with tako_server.client() as client:
        client.ok({**_deploy(tako_server, tmp_path, "v1"), "command": "prepare"})
        assert release.is_dir()
    _wait_until(lambda: not release.exists(), "the staged release to be removed")


def test_exec_runs_in_the_current_release_with_the_app_environment(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    control.ok(_deploy(tako_server, tmp_path, "v1"))
    script = 'pwd; echo "$GREETING $API_KEY $TAKO_ENV $TAKO_BUILD"; cat marker.txt; exit 7'
    with tako_server.client() as client:
        result = _session(client, {"command": "exec", **APP, "argv": ["sh", "-c", script]})
    workdir = tako_server.data_dir / "apps/web/production/releases/v1"
    assert result.text == f"{workdir}\nhi {SECRET} production v1\nv1"
    assert (result.exit["exit_code"], result.started["tty"]) == (7, False)
    assert SECRET not in tako_server.output()


def test_exec_passes_stdin_and_answers_bad_input_lines(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    control.ok(_deploy(tako_server, tmp_path, "v1"))
    with tako_server.client() as client:
        message = {"command": "exec", **APP, "argv": ["cat"], "stdin": True}
        frames = [
            _stdin("hello "),
            {"kind": "stdin", "data": "not base64!"},
            {"kind": "shout"},
            _stdin("world\n"),
            {"kind": "eof"},
        ]
        result = _session(client, message, frames)
    assert result.text == "hello world\n" and result.exit["exit_code"] == 0
    assert [e["code"] for e in result.errors] == ["bad_request", "invalid_request"]


def test_exec_without_stdin_refuses_input(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    control.ok(_deploy(tako_server, tmp_path, "v1"))
    with tako_server.client() as client:
        message = {"command": "exec", **APP, "argv": ["sh", "-c", "cat; echo done"]}
        result = _session(client, message, [_stdin("ignored\n")])
    assert result.text == "done\n"
    assert [e["code"] for e in result.errors] == ["no_input"]


def test_exec_on_a_terminal_has_its_size_and_passes_ctrl_c(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    control.ok(_deploy(tako_server, tmp_path, "v1"))
    script = (
        'stty size; [ -t 0 ] && echo on-a-tty; echo "TERM=$TERM"; '
        'trap "echo got-INT; exit 5" INT; echo ready; while :; do sleep 0.1; done'
    )
    message = {
        "command": "exec",
        **APP,
        "argv": ["sh", "-c", script],
        "tty": True,
        "cols": 120,
        "rows": 40,
        "term": "xterm-256color",
    }
    with tako_server.client() as client:
        result = SessionResult(_start(client, message))
        assert result.started["tty"] is True
        _collect(client, result, lambda r: b"ready" in r.stdout)
        client.send_raw(json.dumps({"kind": "resize", "cols": 100, "rows": 30}).encode() + b"\n")
        client.send_raw(json.dumps(_stdin("\x03")).encode() + b"\n")
        _collect(client, result, lambda r: False)
    text = result.text.replace("\r\n", "\n")
    assert "40 120\non-a-tty\nTERM=xterm-256color\nready\n" in text
    assert "got-INT" in text and result.exit["exit_code"] == 5
    assert result.stderr == b""  # a terminal has one stream


def test_an_interactive_shell_answers_and_follows_resizes(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    control.ok(_deploy(tako_server, tmp_path, "v1"))
    message = {"command": "exec", **APP, "argv": ["sh"], "tty": True, "cols": 80, "rows": 24}
    with tako_server.client() as client:
        result = SessionResult(_start(client, message))
        client.send_raw(json.dumps({"kind": "resize", "cols": 132, "rows": 50}).encode() + b"\n")
        client.send_raw(json.dumps(_stdin("stty size; echo $((6*7)); exit 4\r")).encode() + b"\n")
        _collect(client, result, lambda r: False)
    assert "50 132" in result.text and "42" in result.text
    assert result.exit["exit_code"] == 4


def test_exec_is_killed_when_the_client_goes_away(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    control.ok(_deploy(tako_server, tmp_path, "v1"))
    client = tako_server.client()
    try:
        message = {"command": "exec", **APP, "argv": ["sh", "-c", "echo $$; exec sleep 60"]}
        result = SessionResult(_start(client, message))
        _collect(client, result, lambda r: r.stdout.endswith(b"\n"))
        pid = int(result.text.strip())
        assert pid == result.started["pid"] and _alive(pid)
    finally:
        client.close()
    _wait_until(lambda: not _alive(pid), "the exec'd process to be killed")


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ({"command": "exec", **APP, "argv": ["env"]}, "not_found", "not deployed"),
        ({"command": "exec", **APP, "argv": []}, "invalid_request", "argv"),
        ({"command": "exec", **APP, "argv": [""]}, "invalid_request", "may not be empty"),
        ({"command": "exec", **APP, "argv": ["env"], "cols": 0}, "invalid_request", "cols"),
    ],
)
def test_exec_refuses_bad_input_and_runs_nothing(
    shared_control: ControlClient, message: dict[str, Any], code: str, words: str
) -> None:
    reply = shared_control.request(message)
    assert reply["status"] == "error" and reply["code"] == code, reply
    assert words in reply["message"]
    assert shared_control.ok({"command": "hello", "protocol_version": 1})  # the connection goes on


def test_exec_of_a_missing_program_is_a_clear_error(
    tako_server: ServerProcess, control: ControlClient, tmp_path: Path
) -> None:
    control.ok(_deploy(tako_server, tmp_path, "v1"))
    reply = control.request({"command": "exec", **APP, "argv": ["no-such-program-xyz"]})
    assert reply["status"] == "error" and "no-such-program-xyz" in reply["message"]
