"""Benchmark the workflows job queue: enqueue -> complete throughput and latency (not a test).

Usage::

    python bench/workflows.py [--runs 2000] [--workers 8] [--store sqlite,postgres]

For each store, tako-server's queue (the real :class:`WorkflowService` and its loopback
HTTP API, as the daemon runs them) serves one app; a separate client process enqueues
``--runs`` runs as fast as it can while ``--workers`` concurrent HTTP workers long-poll
``/v1/claim`` and ``/v1/runs/{id}/complete`` each run at once (no work). Latency is from
just before the enqueue request to the worker's completed answer; throughput is runs
completed per second over the whole batch. PostgreSQL is a throwaway local cluster
(``tests/helpers/postgres.py``: Debian's binaries, run as user ``tako``, fsync off like
the tests) reached over TCP on 127.0.0.1. Everything started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def _client(url: str, token: str, runs: int, workers: int) -> dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    started: dict[int, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async with aiohttp.ClientSession(headers=headers) as http:

        async def worker(n: int) -> None:
            while not done.is_set():
                body = {"group": "bench", "worker": f"w{n}", "wait": 1}
                async with http.post(f"{url}/v1/claim", json=body) as answer:
                    if answer.status == 204:
                        continue
                    run = (await answer.json())["run"]
                complete = {"worker": f"w{n}", "result": None}
                async with http.post(f"{url}/v1/runs/{run['id']}/complete", json=complete) as r:
                    assert r.status == 200, r.status
                latencies.append(time.perf_counter() - started[run["payload"]["n"]])
                if len(latencies) == runs:
                    done.set()

        async def producer() -> None:
            for n in range(runs):
                started[n] = time.perf_counter()
                body = {"group": "bench", "payload": {"n": n}}
                async with http.post(f"{url}/v1/runs", json=body) as answer:
                    assert answer.status == 201, answer.status

        begin = time.perf_counter()
        tasks = [asyncio.ensure_future(worker(n)) for n in range(workers)]
        await producer()
        await asyncio.wait_for(done.wait(), 300)
        elapsed = time.perf_counter() - begin
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies.sort()
    return {
        "runs": runs,
        "seconds": elapsed,
        "per_second": runs / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


async def _serve(store: str, runs: int, workers: int, pg_url: str | None) -> dict[str, Any]:
    from tako_common.protocol import WorkflowGroupSpec, WorkflowsSpec
    from tako_server.supervisor.logs import AppLog
    from tako_server.supervisor.process import free_port
    from tako_server.workflows.api import QueueApi
    from tako_server.workflows.service import AppWorkflows, WorkflowService

    tmp = Path(tempfile.mkdtemp(prefix="tako-bench-wf-"))
    port = free_port()
    service = WorkflowService(
        tmp, port, log_for=lambda key: AppLog(tmp / "logs"),
        credentials=lambda app, env: {"postgres_url": pg_url or ""},
    )
    group = WorkflowGroupSpec(name="bench", run=["true"], workers=0)
    spec = WorkflowsSpec(groups=[group], shared=store == "postgres")
    queue = await service.store_for("bench", "production", spec)
    service.apps["bench/production"] = AppWorkflows("bench", "production", spec, 300, queue)
    api = QueueApi(service, port)
    await api.start()
    service.start()
    try:
        argv = [sys.executable, __file__, "--client", f"http://127.0.0.1:{port}",
                service.token("bench", "production"), str(runs), str(workers)]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
        if proc.returncode != 0:
            raise RuntimeError(f"client exited {proc.returncode}")
        result: dict[str, Any] = json.loads(out)
        return result
    finally:
        await api.stop()
        await service.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--store", default="sqlite,postgres")
    parser.add_argument("--client", nargs=4, metavar=("URL", "TOKEN", "RUNS", "WORKERS"))
    args = parser.parse_args()
    if args.client:
        url, token, runs, workers = args.client
        print(json.dumps(asyncio.run(_client(url, token, int(runs), int(workers)))))
        return
    rows = []
    for store in args.store.split(","):
        pg = None
        if store == "postgres":
            from tests.helpers.postgres import PostgresServer

            pg = PostgresServer(["127.0.0.1"]).start()
        try:
            result = asyncio.run(_serve(store, args.runs, args.workers, pg.url() if pg else None))
        finally:
            if pg is not None:
                pg.stop()
        rows.append((store, result))
    print(f"{'store':<10} {'runs':>6} {'runs/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for store, r in rows:
        print(f"{store:<10} {r['runs']:>6} {r['per_second']:>8.0f} {r['p50_ms']:>8.1f}"
              f" {r['p99_ms']:>8.1f}")


if __name__ == "__main__":
    main()
