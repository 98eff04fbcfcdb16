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
#: one app log line: "<time> [out|err|tako] [<instance or ->] <text>"
LOG_LINE = re.compile(r"(\S+) \[(out|err|tako)\] \[([^\]]+)\] (.*)")
#: the whole text of a worker's line saying it completed a run (a glued line is no match)
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


def app_log(host: TestHost) -> list[str]:
    """The app's log lines on one host (every rotated file too, oldest first)."""
    lines: list[str] = []
    for log in sorted(host.paths.opt.glob("apps/wfdemo/production/**/*.log"),
                      key=lambda p: (p.name != "previous.log", str(p))):
        lines.extend(log.read_text(errors="replace").splitlines())
    return lines


def done_lines(hosts: list[TestHost]) -> dict[str, Counter[tuple[str, int]]]:
    """Per host: (group, run id) -> how often its workers logged completing it."""
    found: dict[str, Counter[tuple[str, int]]] = {}
    for host in hosts:
        counter: Counter[tuple[str, int]] = Counter()
        for line in app_log(host):
            parsed = LOG_LINE.fullmatch(line)
            done = DONE.fullmatch(parsed.group(4)) if parsed and parsed.group(2) == "out" else None
            if done:
                counter[(done.group(1), int(done.group(2)))] += 1
        found[host.name] = counter
    return found


def explain_done_lines(hosts: list[TestHost], group: str, run_ids: set[int]) -> str:
    """What the app logs say about ``group``'s completion lines: counts per host, run ids
    without (or with several) lines, the log lines naming those runs, and every line of
    the group that is not a whole line of a known shape (glued output, errors)."""
    counts = {h: Counter({k[1]: n for k, n in c.items() if k[0] == group})
              for h, c in done_lines(hosts).items()}
    total: Counter[int] = sum(counts.values(), Counter())
    missing = sorted(run_ids - set(total))
    twice = sorted(r for r, n in total.items() if n > 1)
    report = [f"{group}: {len(run_ids)} runs; done lines per host "
              f"{ {h: sum(c.values()) for h, c in counts.items()} }; "
              f"missing {missing}; more than once {twice}"]
    wanted = missing + twice
    named = re.compile(rf"\brun ({'|'.join(map(str, wanted))})\b") if wanted else None
    known = re.compile(rf"\[{group}\] (run \d+ (attempt \d+ \(worker \S+, pid \d+\)"
                       rf"|done \(200\))|worker \S+ of {group}: \d+ at once)")
    for host in hosts:
        lines = app_log(host)
        report.append(f"--- {host.name}: {len(lines)} app log lines")
        odd = [line for line in lines if f"[{group}]" in line and not (
            (parsed := LOG_LINE.fullmatch(line)) and known.fullmatch(parsed.group(4)))]
        about = [line for line in lines if named is not None and named.search(line)]
        report += [f"  unexpected: {line}" for line in odd[:30]]
        report += [f"  names a missing run: {line}" for line in about[:40]]
    return "\n".join(report)


def until(what: str, check: Callable[[], Any], timeout: float,
          explain: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    details = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{details}")


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

    run_ids = {row[0] for row in query(database, "SELECT id FROM tako_runs WHERE grp = 'jobs'")}

    def jobs_done() -> Counter[int]:
        return sum((Counter({k[1]: n for k, n in lines.items() if k[0] == "jobs"})
                    for lines in done_lines(hosts).values()), Counter())

    def explain() -> str:
        return explain_done_lines(hosts, "jobs", run_ids)

    # the workers log "done" after the server answered: wait for the lines to land
    until("200 completion lines", lambda: set(jobs_done()) >= run_ids, 30, explain)
    assert jobs_done() == dict.fromkeys(run_ids, 1), explain()  # each run completed once
    per_host = done_lines(hosts)
    assert all(any(k[0] == "jobs" for k in per_host[h.name]) for h in hosts), explain()  # both
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

    def explain() -> str:
        return explain_done_lines(hosts, "tick", ids)

    until("a completion line per tick", lambda: all(tick_lines().values()), 30, explain)
    assert tick_lines() == dict.fromkeys(ids, 1), explain()
