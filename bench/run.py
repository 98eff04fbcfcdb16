"""Benchmark tako's edge against nginx, HAProxy and Caddy as reverse proxies (not a test).

Usage::

    python bench/run.py [--quick] [--reps 3] [--duration 10] [--conns 64,256] [--workers N]
                        [--profile]

One run starts: an upstream (a separate nginx answering ``200 hello`` on loopback, keep-alive),
tako's edge (real worker processes, HTTPS with a self-signed certificate, its access log
on and metrics counted as ``tako-server`` runs by default; nginx's access log is off, so
the ratio is conservative), and nginx,
HAProxy and Caddy (Debian packages) proxying to the same upstream. Each proxy is driven
by ``wrk`` over HTTP and HTTPS at each connection count, ``reps`` times; the table shows
medians of req/s, p50 and p99 latency, the ratio to nginx, errors, and tako's idle RSS.
``--profile`` records a py-spy profile of one tako worker during an HTTPS run.
Everything listens on 127.0.0.1 only; every process started is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UPSTREAM_NGINX = """
worker_processes 1;
daemon off;
pid {dir}/upstream.pid;
error_log {dir}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ return 200 "hello from upstream\\n"; }}
  }}
}}
"""

PROXY_NGINX = """
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream app {{ server 127.0.0.1:{up}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{http} backlog=4096;
    listen 127.0.0.1:{https} ssl backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}
}}
"""

PROXY_HAPROXY = """
global
  nbthread {workers}
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend web
  bind 127.0.0.1:{http}
  bind 127.0.0.1:{https} ssl crt {pem}
  option forwardfor
  default_backend app
backend app
  server s1 127.0.0.1:{up}
"""

PROXY_CADDY = """
{{
  admin off
  auto_https off
}}
http://127.0.0.1:{http} {{
  reverse_proxy 127.0.0.1:{up}
}}
https://127.0.0.1:{https} {{
  tls {cert} {key}
  reverse_proxy 127.0.0.1:{up}
}}
"""

EDGE_LAUNCHER = """
import asyncio, signal, sys, uvloop
from pathlib import Path
from tako_server.edge import Backend, Edge, EdgeApp, EdgeConfig, EdgeSnapshot

class Hooks:  # tako_server.edge.EdgeHooks: what the edge asks of the rest of the server
    async def cold_start(self, key): return []
    async def challenge(self, token): return None
    def app_log(self, key, line): print(key, line, file=sys.stderr)
    def report(self, reporter, in_flight): pass

async def main():
    up, http, https, certs, workers = sys.argv[1:6]
    access_log = sys.argv[6] if len(sys.argv) > 6 else ""
    # as tako-server runs by default: access log on (metrics count in every process)
    edge = Edge(Hooks(), http_port=int(http), https_port=int(https),
                certs_dir=Path(certs), workers=int(workers), host="127.0.0.1",
                config=EdgeConfig(access_log=access_log))
    app = EdgeApp("bench/prod", (Backend(1, "127.0.0.1", int(up)),), None, False)
    edge.update(EdgeSnapshot(routes=(("127.0.0.1", "bench/prod"),), apps={"bench/prod": app}))
    await edge.start()
    print("READY", *edge.worker_pids, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await edge.stop(1.0)

uvloop.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


@dataclass
class Proxy:
    name: str
    http: int
    https: int
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, conns: int, duration: float) -> Result:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return Result(rps, p50, p99, errors)


def make_cert(directory: Path) -> tuple[Path, Path, Path]:
    cert, key, pem = directory / "cert.pem", directory / "key.pem", directory / "both.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return cert, key, pem


def start(argv: list[str], log: Path, **kw: object) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]


def start_proxies(
    work: Path, up: int, workers: int, names: list[str], access_log: bool = True
) -> list[Proxy]:
    cert, key, pem = make_cert(work)
    proxies: list[Proxy] = []
    fmt = {"dir": work, "up": up, "cert": cert, "key": key, "pem": pem, "workers": workers}
    if "tako" in names:
        p = Proxy("tako", free_port(), free_port())
        launcher = work / "edge_launcher.py"
        launcher.write_text(EDGE_LAUNCHER)
        p.proc = subprocess.Popen(
            [
                sys.executable,
                str(launcher),
                str(up),
                str(p.http),
                str(p.https),
                str(work / "certs"),
                str(workers),
                str(work / "access.log") if access_log else "",
            ],
            stdout=subprocess.PIPE,
            stderr=(work / "tako.log").open("wb"),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        line = p.proc.stdout.readline().decode().split()  # type: ignore[union-attr]
        if not line or line[0] != "READY":
            raise RuntimeError(f"tako edge did not start: see {work / 'tako.log'}")
        p.pids = [p.proc.pid, *(int(x) for x in line[1:])]
        proxies.append(p)
    if "nginx" in names and shutil.which("nginx"):
        p = Proxy("nginx", free_port(), free_port())
        conf = work / "nginx.conf"
        conf.write_text(PROXY_NGINX.format(**fmt, http=p.http, https=p.https))
        p.proc = start(["nginx", "-c", str(conf), "-p", str(work)], work / "nginx.log")
        proxies.append(p)
    if "haproxy" in names and shutil.which("haproxy"):
        p = Proxy("haproxy", free_port(), free_port())
        conf = work / "haproxy.cfg"
        conf.write_text(PROXY_HAPROXY.format(**fmt, http=p.http, https=p.https))
        p.proc = start(["haproxy", "-f", str(conf)], work / "haproxy.log")
        proxies.append(p)
    if "caddy" in names and shutil.which("caddy"):
        p = Proxy("caddy", free_port(), free_port())
        conf = work / "Caddyfile"
        conf.write_text(PROXY_CADDY.format(**fmt, http=p.http, https=p.https))
        env = {
            **os.environ,
            "HOME": str(work),
            "XDG_DATA_HOME": str(work),
            "GOMAXPROCS": str(workers),
        }
        p.proc = start(
            ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"],
            work / "caddy.log",
            env=env,
        )
        proxies.append(p)
    for p in proxies:
        wait_port(p.http)
        wait_port(p.https)
    return proxies


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def profile(pid: int, url: str, out: Path, seconds: int) -> None:
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    run_wrk(url, 64, seconds - 1)
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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="1 rep of 3 s per cell")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--conns", default="64,256")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--proxies", default="tako,nginx,haproxy,caddy")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--access-log",
        choices=("on", "off"),
        default="on",
        help="tako's access log (on: as tako-server runs by default)",
    )
    args = ap.parse_args()
    if args.quick:
        args.reps, args.duration = 1, 3.0
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="tako-bench-"))
    up_port = free_port()
    (work / "upstream.conf").write_text(UPSTREAM_NGINX.format(dir=work, port=up_port))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            start(["nginx", "-c", str(work / "upstream.conf"), "-p", str(work)], work / "up.log")
        )
        wait_port(up_port)
        proxies = start_proxies(
            work, up_port, args.workers, args.proxies.split(","), args.access_log == "on"
        )
        procs += [p.proc for p in proxies if p.proc is not None]
        tako = next((p for p in proxies if p.name == "tako"), None)
        idle_rss = rss_mb(tako.pids) if tako else float("nan")
        results = run_matrix(proxies, args)
        print_table(results, args, idle_rss, tako)
        access = work / "access.log"
        if access.exists():  # proof it was on; then gone (it reaches a GB in a full run)
            size = access.stat().st_size
            with access.open("rb") as handle:
                lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
            print(f"tako access log: {lines} lines, {size / 1e6:.0f} MB (deleted)")
            access.unlink()
        if args.profile and tako is not None and len(tako.pids) > 1:
            profile(tako.pids[1], f"https://127.0.0.1:{tako.https}/", work / "tako-profile.txt", 10)
    finally:
        stop(procs)
        print(f"\nlogs and configs: {work}")


def run_matrix(
    proxies: list[Proxy], args: argparse.Namespace
) -> dict[tuple[str, str, int], Result]:
    results: dict[tuple[str, str, int], Result] = {}
    conns = [int(c) for c in args.conns.split(",")]
    for scheme in ("https", "http"):
        for c in conns:
            for p in proxies:
                port = p.https if scheme == "https" else p.http
                url = f"{scheme}://127.0.0.1:{port}/"
                run_wrk(url, c, 1.0)  # warm-up (connections, TLS, pools)
                runs = [run_wrk(url, c, args.duration) for _ in range(args.reps)]
                results[(p.name, scheme, c)] = Result(
                    statistics.median(r.rps for r in runs),
                    statistics.median(r.p50_ms for r in runs),
                    statistics.median(r.p99_ms for r in runs),
                    sum(r.errors for r in runs),
                )
                r = results[(p.name, scheme, c)]
                print(f"  {p.name:8} {scheme:5} c={c:<4} {r.rps:9.0f} req/s", flush=True)
    return results


def print_table(
    results: dict[tuple[str, str, int], Result],
    args: argparse.Namespace,
    idle_rss: float,
    tako: Proxy | None,
) -> None:
    print(
        f"\nwrk -t2, {args.duration:.0f}s x {args.reps} (medians), {os.cpu_count()} cores, "
        f"tako workers={args.workers}"
    )
    print(
        f"{'proxy':8} {'scheme':6} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'x nginx':>7} {'errors':>6}"
    )
    for (name, scheme, c), r in sorted(
        results.items(), key=lambda kv: (kv[0][1], kv[0][2], -kv[1].rps)
    ):
        base = results.get(("nginx", scheme, c))
        ratio = f"{r.rps / base.rps:.2f}" if base and base.rps else "-"
        print(
            f"{name:8} {scheme:6} {c:5d} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {ratio:>7} "
            f"{r.errors:6d}"
        )
    if tako is not None:
        print(
            f"\ntako edge idle RSS (main + workers): {idle_rss:.1f} MB; "
            f"after load: {rss_mb(tako.pids):.1f} MB"
        )
    print(json.dumps({f"{n}/{s}/{c}": round(r.rps) for (n, s, c), r in results.items()}))


if __name__ == "__main__":
    main()
