"""The management socket of a real tako-server: framing, hello, errors, socket files."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tako_common import __version__
from tako_common.protocol import MAX_DEPTH, MAX_FRAME_BYTES, PROTOCOL_VERSION
from tako_server.state import SCHEMA_VERSION
from tests.integration.conftest import ControlClient, ServerProcess

HELLO = {"command": "hello", "protocol_version": PROTOCOL_VERSION}


def test_fresh_server_lists_no_apps(shared_control: ControlClient) -> None:
    assert shared_control.ok({"command": "list"}) == {"apps": []}
    assert shared_control.ok({"command": "status"}) == {"apps": []}
    assert shared_control.ok({"command": "routes"}) == {"routes": []}


def test_hello_reports_version_and_capabilities(shared_control: ControlClient) -> None:
    data = shared_control.ok(HELLO)
    assert data["protocol_version"] == PROTOCOL_VERSION
    assert data["server_version"] == __version__
    assert {"rollback", "deploy_lock", "upgrade_mode_control"} <= set(data["capabilities"])


def test_hello_with_another_protocol_version_is_refused(shared_control: ControlClient) -> None:
    reply = shared_control.request({"command": "hello", "protocol_version": PROTOCOL_VERSION + 1})
    assert reply["status"] == "error"
    assert reply["code"] == "version_mismatch"
    assert "protocol version mismatch" in reply["message"]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"{not json\n", "bad_json"),
        (b"[1, 2]\n", "bad_request"),
        (b'{"command": "explode"}\n', "unknown_command"),
        (b'{"command": "status", "app": "Bad_Name"}\n', "invalid_request"),
        (b'{"command": "hello", "protocol_version": 1, "extra": true}\n', "invalid_request"),
        (b"\n", "bad_request"),
        (b"  \r\n", "bad_request"),
        (b'{"command": "status", "app": ' + b"[" * 40 + b"]" * 40 + b"}\n", "bad_request"),
        (b"[" * 100_000 + b"\n", "bad_request"),
        (b'{"command": "list", "command": "delete", "app": "web", "env": "x"}\n', "bad_request"),
        (
            b'{"command": "scale", "app": "web", "env": "production", "instances": true}\n',
            "invalid_request",
        ),
    ],
)
def test_bad_line_gets_an_error_and_the_connection_stays_usable(
    shared_control: ControlClient, line: bytes, code: str
) -> None:
    shared_control.send_raw(line)
    reply = shared_control.read_line()
    assert (reply["status"], reply["code"]) == ("error", code)
    assert shared_control.ok(HELLO)["protocol_version"] == PROTOCOL_VERSION


def test_empty_and_too_deep_lines_each_get_their_own_error_in_order(
    shared_control: ControlClient,
) -> None:
    deep = b'{"command": "status", "app": ' + b"[" * 33 + b"]" * 33 + b"}"
    shared_control.send_raw(b"\n" + deep + b'\n{"command": "list"}\n')
    empty, too_deep, listed = (shared_control.read_line() for _ in range(3))
    assert (empty["code"], too_deep["code"]) == ("bad_request", "bad_request")
    assert "empty line" in empty["message"]
    assert too_deep["message"] == f"request nesting is deeper than {MAX_DEPTH} levels"
    assert listed == {"status": "ok", "data": {"apps": []}}


def test_duplicate_keys_are_refused_naming_the_key_and_change_nothing(
    shared_control: ControlClient,
) -> None:
    shared_control.send_raw(b'{"command": "enter_upgrading", "owner": "a", "owner": "b"}\n')
    reply = shared_control.read_line()
    assert reply["code"] == "bad_request"
    assert reply["message"] == "duplicate key 'owner' in request: every key may appear once"
    assert shared_control.ok({"command": "server_info"})["mode"] == "normal"


def test_oversized_frame_is_refused_and_the_connection_stays_usable(
    shared_control: ControlClient,
) -> None:
    shared_control.send_raw(
        b'{"command": "hello", "pad": "' + b"x" * (MAX_FRAME_BYTES + 10) + b'"}\n'
    )
    reply = shared_control.read_line()
    assert (reply["status"], reply["code"]) == ("error", "frame_too_large")
    assert shared_control.ok(HELLO)["server_version"] == __version__


def test_many_requests_on_one_connection_are_answered_in_order(
    shared_control: ControlClient,
) -> None:
    shared_control.send_raw(
        b"".join([b'{"command": "hello", "protocol_version": 1}\n', b'{"command": "list"}\n'] * 5)
    )
    replies = [shared_control.read_line() for _ in range(10)]
    assert all(r["status"] == "ok" for r in replies)
    assert ["protocol_version" in r["data"] for r in replies] == [True, False] * 5


def test_server_info_reports_paths_ports_and_disk(
    shared_tako_server: ServerProcess, shared_control: ControlClient
) -> None:
    info = shared_control.ok({"command": "server_info"})
    assert info["mode"] == "normal"
    assert info["data_dir"] == str(shared_tako_server.data_dir)
    assert info["incoming_dir"] == str(shared_tako_server.incoming)
    assert (info["http_port"], info["https_port"]) == (
        shared_tako_server.http_port,
        shared_tako_server.https_port,
    )
    assert info["disk_free_bytes"] > 0
    assert info["acme_enabled"] is False


def test_server_info_names_the_process_and_its_takeover_status(
    shared_tako_server: ServerProcess, shared_control: ControlClient
) -> None:
    """pid + kernel start time name the process; no takeover has run (idle); a normal
    start took over from nobody."""
    assert shared_tako_server.proc is not None
    info = shared_control.ok({"command": "server_info"})
    started = datetime.fromisoformat(info["started_at"].replace("Z", "+00:00"))
    assert info["pid"] == shared_tako_server.proc.pid
    assert abs((datetime.now(UTC) - started).total_seconds()) < 600
    assert info["executable"] == os.path.realpath(sys.executable)
    assert (info["took_over_from"], info["predecessor_running"]) == (None, False)
    assert info["takeover"] == {
        "state": "idle",
        "attempt": 0,
        "successor_pid": None,
        "error": None,
        "started_at": None,
        "finished_at": None,
    }


def test_socket_is_a_symlink_to_a_private_pid_socket(shared_tako_server: ServerProcess) -> None:
    assert shared_tako_server.proc is not None
    target = os.readlink(shared_tako_server.socket)
    assert target == f"tako-{shared_tako_server.proc.pid}.sock"
    real = shared_tako_server.socket.parent / target
    assert stat.S_ISSOCK(real.stat().st_mode)
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared_tako_server.socket.parent.stat().st_mode) == 0o700


def test_stop_removes_the_pid_socket_and_the_link(tako_server: ServerProcess) -> None:
    assert tako_server.proc is not None
    pid_socket = tako_server.socket.parent / f"tako-{tako_server.proc.pid}.sock"
    assert tako_server.stop() == 0
    assert not pid_socket.exists() and not os.path.lexists(tako_server.socket)


def test_has_artifact_answers_whether_the_upload_exists(
    tako_server: ServerProcess, control: ControlClient
) -> None:
    digest = "a" * 64
    assert control.ok({"command": "has_artifact", "sha256": digest})["present"] is False
    (tako_server.incoming / f"{digest}.tar.zst").write_bytes(b"x")
    assert control.ok({"command": "has_artifact", "sha256": digest})["present"] is True


def test_unknown_app_commands_say_the_app_is_not_deployed(shared_control: ControlClient) -> None:
    for command in ("list_releases", "stop", "scale", "logs"):
        message = {"command": command, "app": "ghost", "env": "production"}
        if command == "scale":
            message["instances"] = 1
        reply = shared_control.request(message)
        assert reply["status"] == "error", reply
        assert "ghost/production is not deployed" in reply["message"]


def test_newer_schema_refuses_to_start_with_the_message(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory()
    server.data_dir.mkdir(parents=True)
    db = sqlite3.connect(server.data_dir / "runtime-state.sqlite3")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 7}")
    db.close()
    proc = server.spawn()
    assert proc.wait(timeout=30) == 1
    server.proc = None
    output = server.output()
    assert f"schema version {SCHEMA_VERSION + 7}, newer than the {SCHEMA_VERSION}" in output
    assert "Traceback" not in output


def test_invalid_config_file_refuses_to_start_with_file_and_line(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory()
    server.data_dir.mkdir(parents=True)
    (server.data_dir / "server-config.toml").write_text("[server]\nhttp_port = 1\nhtp_port = 2\n")
    proc = server.spawn()
    assert proc.wait(timeout=30) == 1
    server.proc = None
    assert "server-config.toml:3: server.htp_port" in server.output()


def test_version_command_prints_the_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tako_server.cli", "version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"tako-server {__version__}"
