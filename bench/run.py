"""Benchmark tako's edge against nginx, HAProxy and Caddy as reverse proxies (not a test).

Usage::

    python bench/run.py [--quick] [--reps 3] [--duration 10] [--conns 64,256,1000,5000]
                        [--workers N] [--idle-conns 5000] [--source-addresses 64]
                        [--json PATH] [--profile]

One run starts an upstream and, in front of it, tako's edge, nginx, HAProxy and Caddy
(bench/proxies.py), then measures, in this order:

1. idle memory: PSS summed over each proxy's processes (``/proc/<pid>/smaps_rollup``);
2. memory at ``--idle-conns`` idle TLS keep-alive connections (bench/idle.py opens them,
   one request each, holds them while PSS is read, then checks they are still served);
3. the load matrix: ``wrk`` over HTTPS and HTTP at each connection count, ``reps`` times,
   the proxies interleaved within each repetition (so a noisy minute hurts all of them);
   per cell (``--duration``, at least 2 s per 1,000 connections) the medians of req/s,
   p50 and p99, errors (socket errors and non-2xx/3xx responses, summed over the
   repetitions), CPU time per 1,000 proxied requests (``utime + stime`` of the proxy's
   processes over the run, from ``/proc/<pid>/stat``) and listen drops (connections the
   kernel dropped from a full listen queue during the run: each cost a 1 s SYN retransmit);
4. memory after the load.

wrk's connections come from ``--source-addresses`` loopback addresses (bench/srcaddr.c,
an LD_PRELOAD shim), as 5,000 users come from many addresses: tako caps connections and
requests per client address. File descriptor limits are raised for every process.
Results are printed as markdown tables and written as JSON (``--json``, default
``bench/results/proxy-<time>.json``) so runs can be compared.
``--profile`` records a py-spy profile of one tako worker during an HTTPS run.
Everything listens on 127.0.0.1 only; every process started is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import measure  # noqa: E402
from bench.proxies import (  # noqa: E402
    UPSTREAM_NGINX,
    Proxy,
    free_port,
    start,
    start_proxies,
    stop,
    wait_port,
)

WRK_TIMEOUT = "10s"  # a slow response is counted in the latency, not as an error


@dataclass
class WrkRun:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: int
    non_2xx: int
    cpu_s: float = 0.0
    listen_overflows: int = 0  # connections the kernel dropped from a full listen queue


@dataclass
class Cell:
    """One proxy x scheme x connection count: medians over the repetitions."""

    proxy: str
    scheme: str
    conns: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors + non-2xx/3xx, summed over the repetitions
    non_2xx: int
    requests: int
    cpu_ms_per_1k: float  # proxy CPU time (user + system) per 1,000 requests
    listen_overflows: int = 0  # summed over the repetitions (the proxy's or the upstream's)


@dataclass
class Memory:
    """PSS in MiB summed over the proxy's processes."""

    proxy: str
    idle_mib: float
    idle_tls_mib: float = float("nan")
    idle_tls_held: int = 0
    idle_tls_failed: int = 0
    idle_tls_alive: int = 0
    after_mib: float = float("nan")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> WrkRun:
    """req/s, p50, p99, request count, socket errors and non-2xx/3xx from wrk's output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkRun(
        rps,
        p50,
        p99,
        requests,
        sum(int(x) for x in errors.groups()) if errors else 0,
        int(non2xx.group(1)) if non2xx else 0,
    )


def run_wrk(url: str, conns: int, duration: float, env: dict[str, str], log: Path) -> WrkRun:
    """One wrk run; its report is appended to ``log`` (kept with the run's configs)."""
    threads = min(conns, 2)
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency"]
    argv += ["--timeout", WRK_TIMEOUT, url]
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=duration + 120, env=env
    ).stdout
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(argv)}\n{out}\n")
    return parse_wrk(out)


def measured(
    proxy: Proxy, url: str, conns: int, duration: float, env: dict[str, str], log: Path
) -> WrkRun:
    """One wrk run with the proxy's CPU time over it."""
    assert proxy.proc is not None
    pids = measure.tree(proxy.proc.pid)
    before, overflows = measure.cpu_seconds(pids), measure.listen_overflows()
    result = run_wrk(url, conns, duration, env, log)
    result.cpu_s = measure.cpu_seconds(pids) - before
    result.listen_overflows = measure.listen_overflows() - overflows
    return result


def url_of(proxy: Proxy, scheme: str) -> str:
    return f"{scheme}://127.0.0.1:{proxy.https if scheme == 'https' else proxy.http}/"


def run_matrix(proxies: list[Proxy], args: argparse.Namespace, env: dict[str, str]) -> list[Cell]:
    cells: list[Cell] = []
    for scheme in ("https", "http"):
        for conns in [int(c) for c in args.conns.split(",")]:
            runs: dict[str, list[WrkRun]] = {p.name: [] for p in proxies}
            for p in proxies:  # warm-up: connections, TLS, pools
                run_wrk(url_of(p, scheme), conns, 1.0, env, args.work / f"wrk-{p.name}.txt")
            duration = cell_duration(args.duration, conns)
            for rep in range(args.reps):
                # each repetition starts with the next proxy, every other one in reverse:
                # no proxy always runs right after the same one's load (its connections
                # closing, its log being flushed)
                order = proxies[rep % len(proxies) :] + proxies[: rep % len(proxies)]
                for p in reversed(order) if rep % 2 else order:
                    log = args.work / f"wrk-{p.name}.txt"
                    runs[p.name].append(measured(p, url_of(p, scheme), conns, duration, env, log))
            for p in proxies:
                cells.append(summarize(p.name, scheme, conns, runs[p.name]))
                c = cells[-1]
                if any(r.requests == 0 for r in runs[p.name]):
                    print(f"  {p.name}: a run completed no request (see wrk-{p.name}.txt)")
                print(
                    f"  {c.proxy:12} {scheme:5} c={conns:<5} {c.rps:9.0f} req/s "
                    f"p99 {c.p99_ms:7.2f} ms  errors {c.errors}  cpu {c.cpu_ms_per_1k:.1f} ms/1k"
                    f"  listen drops {c.listen_overflows}",
                    flush=True,
                )
    return cells


def cell_duration(duration: float, conns: int) -> float:
    """At least 2 s per 1,000 connections: opening 5,000 TLS connections takes seconds on
    a small machine, and a shorter run would measure little but that ramp."""
    return max(duration, conns / 500)


def summarize(name: str, scheme: str, conns: int, runs: list[WrkRun]) -> Cell:
    requests = sum(r.requests for r in runs)
    return Cell(
        name,
        scheme,
        conns,
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.socket_errors + r.non_2xx for r in runs),
        sum(r.non_2xx for r in runs),
        requests,
        1000 * 1000 * sum(r.cpu_s for r in runs) / requests if requests else float("nan"),
        sum(r.listen_overflows for r in runs),
    )


def pss_mib(proxy: Proxy) -> float:
    assert proxy.proc is not None
    return measure.pss_kib(measure.tree(proxy.proc.pid)) / 1024


def hold_idle_tls(proxy: Proxy, memory: Memory, count: int, addresses: int) -> None:
    """Open ``count`` idle TLS keep-alive connections, read PSS, check they were kept."""
    holder = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "idle.py"), str(proxy.https), str(count)]
        + [str(max(1, addresses))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        held = holder.stdout.readline().split()  # "HELD n FAILED m"
        if len(held) != 4:
            raise RuntimeError(f"bench/idle.py failed against {proxy.name}: {held}")
        time.sleep(1.0)  # let the proxy settle (TLS buffers, timers)
        memory.idle_tls_mib = pss_mib(proxy)
        memory.idle_tls_held, memory.idle_tls_failed = int(held[1]), int(held[3])
        holder.stdin.write("\n")
        holder.stdin.flush()
        alive = holder.stdout.readline().split()  # "ALIVE n"
        memory.idle_tls_alive = int(alive[1]) if len(alive) == 2 else 0
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    print(
        f"  {proxy.name:8} {count} idle TLS: {memory.idle_tls_mib:.1f} MiB PSS, "
        f"held {memory.idle_tls_held}, failed {memory.idle_tls_failed}, "
        f"still served {memory.idle_tls_alive}",
        flush=True,
    )


def wrk_env(work: Path, addresses: int) -> dict[str, str]:
    shim = measure.source_shim(work) if addresses > 1 else None
    if shim is None:
        if addresses > 1:
            print("no C compiler: wrk connects from one source address (127.0.0.1)")
        return dict(os.environ)
    return {**os.environ, "LD_PRELOAD": str(shim), "BENCH_SOURCE_ADDRESSES": str(addresses)}


def ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}" if base else "-"


def print_tables(cells: list[Cell], memory: list[Memory], args: argparse.Namespace) -> None:
    print(
        f"\n`python bench/run.py {' '.join(sys.argv[1:])}`: wrk, {args.duration:.0f} s x "
        f"{args.reps} (medians), {os.cpu_count()} cores, {args.workers} workers per proxy\n"
    )
    print(
        "| proxy | scheme | conns | req/s | x nginx | p50 ms | p99 ms | p99 x nginx | errors "
        "| CPU ms / 1k req | listen drops |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    nginx = {(c.scheme, c.conns): c for c in cells if c.proxy == "nginx"}
    for c in sorted(cells, key=lambda c: (c.scheme != "https", c.conns, -c.rps)):
        base = nginx.get((c.scheme, c.conns))
        print(
            f"| {c.proxy} | {c.scheme.upper()} | {c.conns} | {c.rps:,.0f} "
            f"| {ratio(c.rps, base.rps if base else None)} | {c.p50_ms:.2f} | {c.p99_ms:.2f} "
            f"| {ratio(c.p99_ms, base.p99_ms if base else None)} "
            f"| {c.errors if c.requests else 'no request'} "
            f"| {c.cpu_ms_per_1k:.1f} | {c.listen_overflows} |"
        )
    base_mem = next((m for m in memory if m.proxy == "nginx"), None)
    print(
        f"\n| proxy | PSS idle MiB | PSS {args.idle_conns} idle TLS MiB | x nginx "
        "| held / served | PSS after load MiB |"
    )
    print("|---|---|---|---|---|---|")
    for m in memory:
        print(
            f"| {m.proxy} | {m.idle_mib:.1f} | {m.idle_tls_mib:.1f} "
            f"| {ratio(m.idle_tls_mib, base_mem.idle_tls_mib if base_mem else None)} "
            f"| {m.idle_tls_held} / {m.idle_tls_alive} | {m.after_mib:.1f} |"
        )


def write_json(
    path: Path, cells: list[Cell], memory: list[Memory], args: argparse.Namespace
) -> None:
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    doc = {
        "command": f"python bench/run.py {' '.join(sys.argv[1:])}",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": rev,
        "cpus": os.cpu_count(),
        "args": vars(args),
        "cells": [asdict(c) for c in cells],
        "memory": [asdict(m) for m in memory],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"\nresults: {path}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="1 rep of 3 s per cell")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--conns", default="64,256,1000,5000")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument(
        "--proxies",
        default="tako,nginx,haproxy,caddy",
        help="also tako-nolog (access log off), tako@REF (the edge of git commit REF) and "
        "nginx-log (nginx with a JSON access log like tako's)",
    )
    ap.add_argument("--idle-conns", type=int, default=5000, help="idle TLS connections (0: skip)")
    ap.add_argument("--source-addresses", type=int, default=64, help="loopback client addresses")
    ap.add_argument("--json", type=Path, default=None, help="results file")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-conns", type=int, default=64, help="wrk connections while profiling")
    ap.add_argument(
        "--access-log",
        choices=("on", "off"),
        default="on",
        help="tako's access log (on: as tako-server runs by default)",
    )
    args = ap.parse_args()
    if args.quick:
        args.reps, args.duration = 1, 3.0
    if args.json is None:
        args.json = ROOT / "bench" / "results" / time.strftime("proxy-%Y%m%d-%H%M%S.json")
    return args


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (TAKO_SETUP_BENCH=1 scripts/setup)")
    print(f"file descriptors: {measure.raise_nofile()}")
    work = args.work = Path(tempfile.mkdtemp(prefix="tako-bench-"))
    up_port = free_port()
    (work / "upstream.conf").write_text(UPSTREAM_NGINX.format(dir=work, port=up_port))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            start(["nginx", "-c", str(work / "upstream.conf"), "-p", str(work)], work / "up.log")
        )
        wait_port(up_port)
        names = args.proxies.split(",")
        proxies = start_proxies(work, up_port, args.workers, names, procs, args.access_log == "on")
        env = wrk_env(work, args.source_addresses)
        time.sleep(1.0)  # every worker started and settled
        memory = [Memory(p.name, pss_mib(p)) for p in proxies]
        if args.idle_conns:
            for p, m in zip(proxies, memory, strict=True):
                hold_idle_tls(p, m, args.idle_conns, args.source_addresses)
        cells = run_matrix(proxies, args, env)
        for p, m in zip(proxies, memory, strict=True):
            m.after_mib = pss_mib(p)
        print_tables(cells, memory, args)
        write_json(args.json, cells, memory, args)
        report_access_log(work / "access.log")
        report_access_log(work / "nginx-access.log", "nginx-log")
        tako = next((p for p in proxies if p.name == "tako"), None)
        if args.profile and tako is not None and tako.proc is not None:
            worker = measure.tree(tako.proc.pid)[1:2]
            if worker:
                out = work / "tako-profile.txt"
                profile(worker[0], url_of(tako, "https"), out, args, env, work / "wrk-tako.txt")
    finally:
        stop(procs)
        for log in ("access.log", "nginx-access.log"):  # GBs after a full run, even a failed one
            (work / log).unlink(missing_ok=True)
        print(f"\nlogs and configs: {work}")


def report_access_log(access: Path, who: str = "tako") -> None:
    """Proof ``who``'s access log was on; then it is deleted (it reaches GBs in a full run)."""
    if access.exists():
        size = access.stat().st_size
        with access.open("rb") as handle:
            lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
        print(f"{who} access log: {lines} lines, {size / 1e6:.0f} MB (deleted)")
        access.unlink()


def profile(
    pid: int, url: str, out: Path, args: argparse.Namespace, env: dict[str, str], log: Path
) -> None:
    """py-spy record one tako worker for 10 s while wrk drives HTTPS (``--profile-conns``)."""
    seconds = 10
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy not installed (pip install py-spy): no profile")
        return
    rec = subprocess.Popen(
        [
            spy,
            "record",
            "-p",
            str(pid),
            "-d",
            str(seconds),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(out),
            *(["--native"] if os.environ.get("BENCH_NATIVE") else []),
            *(["--idle"] if os.environ.get("BENCH_IDLE") else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    run_wrk(url, args.profile_conns, seconds - 1, env, log)
    rec.wait(timeout=seconds + 30)
    print(f"\npy-spy raw profile of one tako worker: {out}")
    summarize_profile(out)


def summarize_profile(path: Path, top: int = 25) -> None:
    """Self time per function from py-spy's raw (collapsed) output."""
    if not path.exists():
        return
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        leaf = re.sub(r"\s*\(.*?/([^/]+\.py):\d+\)", r" (\1)", frames[-1])
        own[leaf] = own.get(leaf, 0) + n
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
