"""Workflows through a real tako-server: the stdlib example worker takes runs over the
queue's HTTP API, a killed worker's run is retried, ``workers = 0`` starts and stops
workers, bad input is refused and changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
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
    free_port,
)

APP = {"app": "web", "env": "production"}
WORKER = Path(__file__).resolve().parents[2] / "examples" / "workflows-worker" / "worker.py"
WAIT = 30.0


def _group(name: str, workers: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "run": ["python3", "worker.py"], "workers": workers, **extra}


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    port = free_port()
    return server_factory(env={"TAKO_WORKFLOWS_PORT": str(port)}).start()


def _deploy(server: ServerProcess, tmp_path: Path, groups: list[dict[str, Any]],
            **extra: Any) -> dict[str, Any]:
    src = tmp_path / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(APPS_DIR / "pyapp", src)
    shutil.copy(WORKER, src / "worker.py")
    name, sha = place_artifact(tar_zst_from_dir(src), server.incoming)
    with server.client() as client:
        return client.ok(deploy_message(name, sha, workflows={"groups": groups}, **extra))


def _api(server: ServerProcess) -> tuple[str, str]:
    key = (server.data_dir / "workflows.key").read_bytes()
    token = hmac.new(key, b"web/production", hashlib.sha256).hexdigest()
    return f"http://127.0.0.1:{server.extra_env['TAKO_WORKFLOWS_PORT']}", token


def _call(server: ServerProcess, path: str, body: Any = None, token: str | None = None,
          raw: bytes | None = None) -> tuple[int, Any]:
    url, own = _api(server)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        url + path, data=data, method="POST" if data is not None else "GET",
        headers={"Authorization": f"Bearer {token if token is not None else own}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=40) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, json.loads(text) if text else None


def _groups(client: ControlClient) -> dict[str, dict[str, Any]]:
    data = client.ok({"command": "workflows", **APP})
    return {g["name"]: g for g in data["groups"]}


def _runs(client: ControlClient, **extra: Any) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = client.ok({"command": "workflow_runs", **APP, **extra})["runs"]
    return runs


def _until(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _log(server: ServerProcess) -> str:
    path = server.data_dir / "apps" / "web" / "production" / "shared" / "logs" / "current.log"
    candidates = [path, *server.data_dir.glob("apps/web/production/**/current.log")]
    for candidate in candidates:
        if candidate.exists():
            return candidate.read_text(errors="replace")
    return ""


def test_the_stdlib_worker_takes_every_run_once(server: ServerProcess, tmp_path: Path) -> None:
    _deploy(server, tmp_path, [_group("jobs", 1, concurrency=4)])
    created = [_call(server, "/v1/runs", {"group": "jobs", "payload": {"n": n}}) for n in range(20)]
    assert {status for status, _ in created} == {201}
    with server.client() as client:
        _until("20 runs done", lambda: len(_runs(client)) == 20
               and all(r["state"] == "done" for r in _runs(client)))
        runs = _runs(client)
        assert sorted(r["payload"]["n"] for r in runs) == list(range(20))
        assert all(r["attempts"] == 1 for r in runs)
        group = _groups(client)["jobs"]
        assert (group["workers"], group["running"], group["done"]) == (1, 1, 20)
        status = client.ok({"command": "status", **APP})["apps"][0]
        assert status["workflows"][0]["name"] == "jobs"
    status, body = _call(server, f"/v1/runs/{runs[0]['id']}")
    assert status == 200 and body["run"]["result"] == {"echo": runs[0]["payload"]}
    assert "[jobs] run " in _log(server)  # worker output is in the app log, prefixed


def test_a_killed_workers_run_goes_back_and_is_retried(
    server: ServerProcess, tmp_path: Path
) -> None:
    _deploy(server, tmp_path, [_group("jobs", 1, concurrency=1)])
    _, body = _call(server, "/v1/runs", {"group": "jobs", "payload": {"sleep": 2}})
    run_id = body["run"]["id"]
    pattern = re.compile(rf"run {run_id} attempt 1 \(worker \S+, pid (\d+)\)")
    match = _until("the first attempt", lambda: pattern.search(_log(server)))
    os.kill(int(match.group(1)), signal.SIGKILL)
    with server.client() as client:
        def finished() -> dict[str, Any] | None:
            run = next(r for r in _runs(client) if r["id"] == run_id)
            return run if run["state"] == "done" else None

        run = _until("the retried run to finish", finished)
        assert run["attempts"] == 2
        assert "worker process exited" in run["last_error"]
        assert _groups(client)["jobs"]["restarts"] >= 1


def test_workers_zero_starts_on_waiting_runs_and_stops_when_idle(
    server: ServerProcess, tmp_path: Path
) -> None:
    _deploy(server, tmp_path, [_group("lazy", 0)], idle_timeout=2)
    with server.client() as client:
        time.sleep(1.5)  # a tick or more: nothing waits, nothing starts
        assert _groups(client)["lazy"]["running"] == 0
        client.ok({"command": "workflow_enqueue", **APP, "group": "lazy", "payload": {"x": 1}})
        _until("a worker to start", lambda: _groups(client)["lazy"]["running"] == 1)
        _until("the run to finish", lambda: _groups(client)["lazy"]["done"] == 1)
        _until("the idle worker to stop", lambda: _groups(client)["lazy"]["running"] == 0)


def test_failed_runs_are_kept_and_retry_puts_them_back(
    server: ServerProcess, tmp_path: Path
) -> None:
    _deploy(server, tmp_path, [_group("jobs", 1, retries=1)])
    _, body = _call(server, "/v1/runs", {"group": "jobs", "payload": {"fail": "boom"}})
    run_id = body["run"]["id"]
    with server.client() as client:
        failed = _until("the run to fail for good", lambda: _runs(client, failed=True))
        assert failed[0]["id"] == run_id and failed[0]["attempts"] == 2
        assert "boom" in failed[0]["last_error"]
        again = client.ok({"command": "workflow_retry", **APP, "run_id": run_id})
        assert again["run"]["state"] == "queued"
        refused = client.request({"command": "workflow_retry", **APP, "run_id": 999})
        assert refused["status"] == "error" and "no such run" in refused["message"]


def test_bad_input_is_refused_and_changes_nothing(server: ServerProcess, tmp_path: Path) -> None:
    _deploy(server, tmp_path, [_group("jobs", 0)])
    assert _call(server, "/v1/runs", {"group": "nope"})[0] == 404
    assert _call(server, "/v1/runs", raw=b"{not json")[0] == 400
    assert _call(server, "/v1/runs", {"group": "jobs", "delay": "soon"})[0] == 400
    big = {"group": "jobs", "payload": "x" * (300 * 1024)}
    assert _call(server, "/v1/runs", big)[0] == 413
    assert _call(server, "/v1/runs", {"group": "jobs"}, token="other-apps-token")[0] == 401
    assert _call(server, "/v1/claim", {"group": "jobs"}, token="")[0] == 401
    assert _call(server, "/v1/runs/1/complete", {"worker": "w"})[0] == 409
    with server.client() as client:
        assert _runs(client) == []
        reply = client.request({"command": "workflow_enqueue", **APP, "group": "nope"})
        assert reply["status"] == "error" and "unknown workflow group 'nope'" in (
            reply["message"]
        )
        bad = dict(deploy_message("x.tar.zst", "0" * 64),
                   workflows={"groups": [_group("jobs", 1, schedule="*/0 * * * *")]})
        reply = client.request(bad)
        assert reply["status"] == "error" and "a step is a whole number" in str(reply["message"])
        assert _runs(client) == []


def test_runs_and_workers_survive_a_server_restart(server: ServerProcess, tmp_path: Path) -> None:
    _deploy(server, tmp_path, [_group("jobs", 1)])
    with server.client() as client:
        _until("the worker", lambda: _groups(client)["jobs"]["running"] == 1)
    server.stop()
    server.start()
    _, body = _call(server, "/v1/runs", {"group": "jobs", "payload": {"after": "restart"}})
    with server.client() as client:
        assert _groups(client)["jobs"]["workers"] == 1
        _until("the run done by a restarted worker",
               lambda: _runs(client) and _runs(client)[0]["state"] == "done")
        assert _runs(client)[0]["id"] == body["run"]["id"]


def test_another_apps_token_sees_nothing_of_this_app(
    server: ServerProcess, tmp_path: Path
) -> None:
    _deploy(server, tmp_path, [_group("jobs", 0)])
    _deploy(server, tmp_path, [_group("jobs", 0)], app="other", routes=["other.localhost"])
    _, body = _call(server, "/v1/runs", {"group": "jobs", "payload": {"mine": True}})
    key = (server.data_dir / "workflows.key").read_bytes()
    other = hmac.new(key, b"other/production", hashlib.sha256).hexdigest()
    run_id = body["run"]["id"]
    assert _call(server, f"/v1/runs/{run_id}", token=other)[0] == 404
    assert _call(server, "/v1/claim", {"group": "jobs"}, token=other)[0] == 204
    assert _call(server, f"/v1/runs/{run_id}")[1]["run"]["state"] == "queued"  # untouched


def test_a_deploy_lets_old_workers_finish_their_runs(server: ServerProcess, tmp_path: Path) -> None:
    _deploy(server, tmp_path, [_group("jobs", 1)])
    _, body = _call(server, "/v1/runs", {"group": "jobs", "payload": {"sleep": 3}})
    run_id = body["run"]["id"]
    _until("the first attempt", lambda: f"run {run_id} attempt 1" in _log(server))
    _deploy(server, tmp_path, [_group("jobs", 1)], version="v2")
    with server.client() as client:
        run = _until("the run done", lambda: next(
            (r for r in _runs(client) if r["id"] == run_id and r["state"] == "done"), None))
        assert run["attempts"] == 1 and ".v1-" in run["worker"]  # finished by the old worker
        _until("one worker of v2", lambda: _groups(client)["jobs"]["running"] == 1)
    _, second = _call(server, "/v1/runs", {"group": "jobs", "payload": {}})
    with server.client() as client:
        done = _until("a run on v2", lambda: next(
            (r for r in _runs(client) if r["id"] == second["run"]["id"] and r["state"] == "done"),
            None))
        assert ".v2-" in done["worker"]


def test_scale_sets_a_groups_workers_and_refuses_an_unknown_group(
    server: ServerProcess, tmp_path: Path
) -> None:
    _deploy(server, tmp_path, [_group("jobs", 1)])
    with server.client() as client:
        scaled = client.ok({"command": "scale", **APP, "instances": 3, "group": "jobs"})
        assert scaled["group"] == "jobs"
        _until("3 workers", lambda: _groups(client)["jobs"]["running"] == 3)
        client.ok({"command": "scale", **APP, "instances": 0, "group": "jobs"})
        _until("no worker", lambda: _groups(client)["jobs"]["running"] == 0)
        assert _groups(client)["jobs"]["workers"] == 0
        reply = client.request({"command": "scale", **APP, "instances": 1, "group": "nope"})
        assert reply["status"] == "error" and "unknown workflow group 'nope'" in reply["message"]
        status = client.ok({"command": "status", **APP})["apps"][0]
        assert status["desired_instances"] == 1  # the app's instances were not touched


WORKER_LINE = re.compile(
    r"\S+ \[out\] \[-\] \[jobs\] (?:run (\d+) attempt 1 \(worker \S+, pid \d+\)"
    r"|run (\d+) done \(200\)|worker \S+ of jobs: 16 at once)"
)


def test_a_workers_threads_never_mix_their_lines(server: ServerProcess, tmp_path: Path) -> None:
    """16 runs at once in one worker: every line it prints is whole, so each run's
    "done" line is in the app log exactly once (threads printing together used to glue
    lines, and the glued line's second half had no ``[jobs]`` prefix)."""
    _deploy(server, tmp_path, [_group("jobs", 1, concurrency=16)])
    total = 400
    for n in range(total):
        status, _ = _call(server, "/v1/runs", {"group": "jobs", "payload": {"n": n}})
        assert status == 201
    with server.client() as client:
        _until(f"{total} runs done", lambda: _groups(client)["jobs"]["done"] == total, 60)
    run_ids = {r["id"] for r in _runs_of(server, total)}

    def done_ids() -> list[int]:
        return [int(m.group(1)) for m in re.finditer(
            r"^\S+ \[out\] \[-\] \[jobs\] run (\d+) done \(200\)$", _log(server), re.MULTILINE)]

    deadline = time.monotonic() + 10  # the worker prints "done" after the server answered
    while len(done_ids()) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in _log(server).splitlines() if " [out] [-] [jobs] " in line]
    mixed = [line for line in lines if not WORKER_LINE.fullmatch(line)]
    missing = sorted(run_ids - set(done_ids()))
    assert not mixed, f"{len(mixed)} mixed, {len(missing)} runs without done: {mixed[:5]}"
    assert sorted(done_ids()) == sorted(run_ids), missing


def _runs_of(server: ServerProcess, count: int) -> list[dict[str, Any]]:
    with server.client() as client:
        return _runs(client, limit=count)
