"""Workflows across two hosts sharing a real PostgreSQL queue, driven through ``tako``.

The harness starts a throwaway PostgreSQL cluster on this machine listening on the
hosts' gateway addresses; ``tako credentials set postgres_url`` hands its URL to the
deploy. Checked: a multi-server deploy without ``postgres_url`` is refused naming the
fix; 200 runs enqueued on one host are each completed exactly once by the workers of
both hosts; a schedule every minute enqueues one run per tick for 3 ticks while a
redeploy runs in between, and each tick's run is completed once.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.hosts import ClientHome, HostNetwork, TestHost, run
from tests.helpers import postgres

REPO = Path(__file__).resolve().parents[2]
WORKER_APP = REPO / "examples" / "workflows-worker"
ROUTE = "wfdemo.test"
DONE = re.compile(r"\[(\w+)\] run (\d+) done \(200\)")

ENQUEUE = """
import hashlib, hmac, json, sys, urllib.request
token = hmac.new(open('/opt/tako/workflows.key', 'rb').read(), b'wfdemo/production',
                 hashlib.sha256).hexdigest()
for n in range(int(sys.argv[1])):
    body = json.dumps({'group': 'jobs', 'payload': {'n': n, 'sleep': 0.02}}).encode()
    request = urllib.request.Request('http://127.0.0.1:7433/v1/runs', data=body,
                                     headers={'Authorization': 'Bearer ' + token})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201, response.status
print('enqueued')
"""


@pytest.fixture(scope="module")
def hosts(make_hosts: Callable[..., list[TestHost]]) -> list[TestHost]:
    made = make_hosts(2)
    for host in made[1:]:  # every host reaches the first host's gateway, where the URL points
        run(["ip", "netns", "exec", host.netns, "ip", "route", "add",
             f"{made[0].gateway}/32", "via", host.gateway])
    return made


@pytest.fixture(scope="module")
def database(hosts: list[TestHost]) -> Iterator[postgres.PostgresServer]:
    reason = postgres.available()
    if reason:
        pytest.skip(reason)
    server = postgres.PostgresServer(["127.0.0.1", *(h.gateway for h in hosts)]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cli(host_network: HostNetwork, hosts: list[TestHost],
        tmp_path_factory: pytest.TempPathFactory) -> ClientHome:
    home = host_network.client_home(tmp_path_factory.mktemp("workflows-client"))
    for host in hosts:
        done = home.run_tako("servers", "add", host.address, "--name", host.name)
        assert done.returncode == 0, done.stdout + done.stderr
    return home


@pytest.fixture(scope="module")
def app(hosts: list[TestHost], tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("apps") / "wfdemo"
    shutil.copytree(WORKER_APP, target)
    servers = json.dumps([h.name for h in hosts])
    (target / "tako.toml").write_text(
        'name = "wfdemo"\nruntime = "python"\nmain = "app.py"\n\n'
        f'[envs.production]\nroute = "{ROUTE}"\nservers = {servers}\n\n'
        '[workflows.jobs]\nrun = ["python3", "worker.py"]\nworkers = 2\nconcurrency = 4\n\n'
        '[workflows.tick]\nrun = ["python3", "worker.py"]\nworkers = 1\n'
        'schedule = "* * * * *"\n'
    )
    return target


def tako(cli: ClientHome, app: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO)}  # this checkout's CLI, whatever the venv installed
    return cli.run_tako(*args, "-c", str(app / "tako.toml"), timeout=300, env=env, **kw)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def query(database: postgres.PostgresServer, sql: str) -> list[tuple[Any, ...]]:
    import asyncpg  # type: ignore[import-untyped]

    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(database.url())
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def done_lines(hosts: list[TestHost]) -> dict[str, Counter[tuple[str, int]]]:
    """Per host: (group, run id) -> how often its workers logged completing it."""
    found: dict[str, Counter[tuple[str, int]]] = {}
    for host in hosts:
        counter: Counter[tuple[str, int]] = Counter()
        for log in host.paths.opt.glob("apps/wfdemo/production/**/*.log"):
            for match in DONE.finditer(log.read_text(errors="replace")):
                counter[(match.group(1), int(match.group(2)))] += 1
        found[host.name] = counter
    return found


def until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_multi_server_workflows_without_postgres_url_are_refused(
    cli: ClientHome, app: Path, hosts: list[TestHost]
) -> None:
    done = tako(cli, app, "deploy", "--yes")
    assert done.returncode == 1
    assert "tako credentials set postgres_url --env production" in done.stderr
    assert not list(hosts[0].paths.opt.glob("apps/wfdemo/production/releases/*"))


def test_200_runs_are_each_completed_once_across_both_hosts(
    cli: ClientHome, app: Path, hosts: list[TestHost], database: postgres.PostgresServer
) -> None:
    url = database.url(hosts[0].gateway)
    ok(tako(cli, app, "credentials", "set", "postgres_url", "--env", "production",
            input=url + "\n"))
    out = ok(tako(cli, app, "deploy", "--yes"))
    assert url not in out
    assert "enqueued" in hosts[0].exec(f"python3 -c \"{ENQUEUE}\" 200", timeout=120).stdout
    until("200 runs done", lambda: query(
        database, "SELECT count(*) FROM tako_runs WHERE grp = 'jobs' AND state = 'done'"
    )[0][0] == 200, timeout=120)
    assert query(database, "SELECT count(*) FROM tako_runs WHERE grp = 'jobs'")[0][0] == 200
    assert query(database, "SELECT max(attempts) FROM tako_runs WHERE grp = 'jobs'")[0][0] == 1

    def jobs_done() -> dict[str, Counter[tuple[str, int]]]:
        return {
            host: Counter({k: n for k, n in lines.items() if k[0] == "jobs"})
            for host, lines in done_lines(hosts).items()
        }

    # the workers log "done" after the server answered: wait for the lines to land
    until("200 completion lines", lambda: len(sum(jobs_done().values(), Counter())) >= 200, 30)
    jobs = jobs_done()
    total: Counter[tuple[str, int]] = sum(jobs.values(), Counter())
    assert len(total) == 200 and set(total.values()) == {1}  # each run completed once
    assert all(jobs[h.name] for h in hosts), {h: len(c) for h, c in jobs.items()}  # both worked
    listing = ok(tako(cli, app, "workflows", "ls", "--env", "production"))
    assert "postgres queue" in listing and "jobs" in listing


@pytest.mark.timeout(420)
def test_a_schedule_fires_once_per_tick_across_a_redeploy(
    cli: ClientHome, app: Path, hosts: list[TestHost], database: postgres.PostgresServer
) -> None:
    def ticks() -> list[tuple[Any, ...]]:
        return query(database, "SELECT key, id FROM tako_runs WHERE grp = 'tick' ORDER BY key")

    first = len(until("a first tick", ticks, timeout=75))
    (app / "app.py").write_text((app / "app.py").read_text() + "\n# redeploy\n")
    ok(tako(cli, app, "deploy", "--yes"))  # a new release: workers drain and restart
    def enough() -> list[tuple[Any, ...]] | None:
        found = ticks()
        return found if len(found) >= first + 3 else None

    found = until("3 more ticks", enough, timeout=240)
    stamps = [key.removeprefix("schedule:") for key, _ in found]
    minutes = [time.strptime(s, "%Y-%m-%dT%H:%M:%SZ") for s in stamps]
    gaps = {time.mktime(b) - time.mktime(a) for a, b in zip(minutes, minutes[1:], strict=False)}
    assert gaps == {60.0}, stamps  # one run per tick, none missed, none twice
    ids = {run_id for _, run_id in found}
    until("every tick run done", lambda: query(
        database, "SELECT count(*) FROM tako_runs WHERE grp = 'tick' AND state <> 'done'"
    )[0][0] == 0, timeout=60)

    def tick_lines() -> dict[int, int]:
        total = sum(done_lines(hosts).values(), Counter())
        return {run_id: total[("tick", run_id)] for run_id in ids}

    until("a completion line per tick", lambda: all(tick_lines().values()), timeout=30)
    assert tick_lines() == dict.fromkeys(ids, 1)
