"""Refused deploys change nothing on disk: validation, checksum and unsafe archives.

Every test here is refused, so they share one server (``shared_tako_server``); each test
lists the data dir just before its request and checks the listing is the same after it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.artifacts import Entry, place_artifact, tar_zst_from_entries
from tests.integration.conftest import ControlClient, ServerProcess, deploy_message, tree_listing


@pytest.fixture
def artifact(shared_tako_server: ServerProcess) -> tuple[str, str]:
    data = tar_zst_from_entries([Entry("app.py", data=b"print('hi')\n")])
    return place_artifact(data, shared_tako_server.incoming)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"app": "Bad_Name"}, "invalid app name"),
        ({"app": "web-"}, "invalid app name"),
        ({"env": "../prod"}, "invalid environment name"),
        ({"version": "../v1"}, "invalid release version"),
        ({"version": "a/b"}, "invalid release version"),
        ({"artifact": "../../etc/passwd.tar.zst"}, "artifact must be a file name inside"),
        ({"artifact": "/tmp/x.tar.zst"}, "artifact must be a file name inside"),
        ({"routes": []}, "routes"),
        ({"routes": [""]}, "a route cannot be empty"),
        ({"routes": ["/api/*"]}, "path-only routes are invalid"),
        ({"sha256": "0" * 64}, "expected 0000"),
        ({"sha256": "XYZ"}, "sha256 must be 64 lowercase hex digits"),
        ({"vars": {"BAD-NAME": "x"}}, "invalid variable name"),
        ({"instances": -1}, "instances"),
        ({"manifest": {"runtime": "cobol", "main": "x"}}, "runtime"),
        ({"manifest": {"runtime": "python", "main": "app.py", "app_subdir": "../x"}}, "app_subdir"),
        ({"manifest": {"runtime": "python", "main": "missing.py"}}, "main file 'missing.py'"),
    ],
)
def test_invalid_deploy_is_rejected_and_nothing_changes_on_disk(
    shared_tako_server: ServerProcess,
    shared_control: ControlClient,
    artifact: tuple[str, str],
    changes: dict[str, Any],
    message: str,
) -> None:
    name, digest = artifact
    before = tree_listing(shared_tako_server.data_dir)
    reply = shared_control.request({**deploy_message(name, digest), **changes})
    assert reply["status"] == "error", reply
    assert message in reply["message"]
    assert tree_listing(shared_tako_server.data_dir) == before
    assert shared_control.ok({"command": "list"}) == {"apps": []}


def test_missing_artifact_is_rejected_with_a_hint(shared_control: ControlClient) -> None:
    reply = shared_control.request(deploy_message("f" * 64 + ".tar.zst", "f" * 64))
    assert reply["status"] == "error"
    assert "is not in" in reply["message"] and "upload" in reply["hint"]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([Entry("app.py", data=b"x"), Entry("../escape.txt", data=b"x")], "contains '..'"),
        ([Entry("app.py", data=b"x"), Entry("/abs.txt", data=b"x")], "absolute path"),
        (
            [Entry("app.py", data=b"x"), Entry("evil", kind="symlink", target="../../../../etc")],
            "points outside",
        ),
        ([Entry("app.py", data=b"x"), Entry("fifo", kind="fifo")], "FIFO"),
    ],
)
def test_unsafe_archive_is_rejected_and_nothing_changes_on_disk(
    shared_tako_server: ServerProcess,
    shared_control: ControlClient,
    entries: list[Entry],
    message: str,
) -> None:
    name, digest = place_artifact(tar_zst_from_entries(entries), shared_tako_server.incoming)
    before = tree_listing(shared_tako_server.data_dir)
    reply = shared_control.request(deploy_message(name, digest))
    assert reply["status"] == "error", reply
    assert message in reply["message"]
    assert tree_listing(shared_tako_server.data_dir) == before
