"""The proxies of the benchmark: configurations and start/stop, all on 127.0.0.1.

One upstream (a separate nginx answering ``200 hello`` with keep-alive) and, in front of
it, tako's edge (real worker processes, HTTPS with a self-signed certificate, its access
log on and metrics counted as ``tako-server`` runs by default; nginx's access log is off,
so the ratio is conservative), nginx, HAProxy and Caddy (Debian packages) with the same
number of workers/threads. Limits are set for 5,000 client connections (each proxy also
holds an upstream connection per request in flight); the processes inherit the file
descriptor limit that bench/measure.py raised; both nginx accept every pending connection
per wake-up (``multi_accept on``: 5,000 connections arrive at once, and a listen queue
that overflows costs a 1 s SYN retransmit that would be measured as the proxy's latency).
Every process started here is stopped by PID in :func:`stop`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

UPSTREAM_NGINX = """
worker_processes 1;
daemon off;
pid {dir}/upstream.pid;
error_log {dir}/upstream-error.log warn;
events {{ worker_connections 16000; multi_accept on; }}
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
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
events {{ worker_connections 16000; multi_accept on; }}
http {{
  {access_log}
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

# nginx-log: nginx with an access log like tako's (JSON, the same fields), buffered in
# 64 KiB writes as tako's batches are: what a log line per request costs nginx
NGINX_ACCESS_LOG = """log_format tako escape=json '{{"time":"$time_iso8601","host":"$host",'
    '"method":"$request_method","path":"$uri","status":$status,"bytes":$body_bytes_sent,'
    '"duration_ms":$request_time,"upstream_ms":"$upstream_header_time",'
    '"cold_start_ms":null,"app":"bench","env":"prod","instance":1,'
    '"request_id":"$request_id","client":"$remote_addr"}}';
  access_log {dir}/nginx-access.log tako buffer=64k flush=1s;"""

PROXY_HAPROXY = """
global
  nbthread {workers}
  maxconn 9000  # about 2 fds each: under the 20,000 a container may cap us at
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
import asyncio, json, os, signal, sys, uvloop
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
    extra = json.loads(os.environ.get("BENCH_EDGE_CONFIG") or "{}")  # EdgeConfig fields
    # as tako-server runs by default: access log on (metrics count in every process)
    edge = Edge(Hooks(), http_port=int(http), https_port=int(https),
                certs_dir=Path(certs), workers=int(workers), host="127.0.0.1",
                config=EdgeConfig(access_log=access_log, **extra))
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


@dataclass
class Proxy:
    name: str
    http: int
    https: int
    proc: subprocess.Popen[bytes] | None = None


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


def start_tako(
    name: str,
    work: Path,
    up: int,
    workers: int,
    access_log: str,
    procs: list[subprocess.Popen[bytes]],
) -> Proxy:
    """tako's edge as ``name``: ``tako`` (this checkout), ``tako-nolog`` (its access log
    off) or ``tako@REF`` (the edge of git commit REF, from a detached worktree, started by
    that commit's own bench launcher: a before/after comparison in one interleaved run)."""
    root, launcher_src = ROOT, EDGE_LAUNCHER
    if name.startswith("tako@"):
        root = checkout(name[5:], work)
        launcher_src = launcher_of(root)
    p = Proxy(name, free_port(), free_port())
    launcher = work / f"edge_launcher-{name.replace('@', '-')}.py"
    launcher.write_text(launcher_src)
    log = work / f"{name.replace('@', '-')}.log"
    p.proc = subprocess.Popen(
        [sys.executable, str(launcher), str(up), str(p.http), str(p.https),
         str(work / "certs"), str(workers), access_log],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    procs.append(p.proc)
    line = p.proc.stdout.readline().decode().split()  # type: ignore[union-attr]
    if not line or line[0] != "READY":
        raise RuntimeError(f"{name} edge did not start: see {log}")
    return p


def checkout(ref: str, work: Path) -> Path:
    """A detached copy of commit ``ref``'s files under ``work`` (``git archive``: no
    worktree to clean up in the repository)."""
    dest = work / f"src-{ref}"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def launcher_of(root: Path) -> str:
    """The ``EDGE_LAUNCHER`` of a checkout's bench (in proxies.py, or run.py before the
    split): it matches that commit's edge API."""
    import ast

    for rel in ("bench/proxies.py", "bench/run.py"):
        path = root / rel
        if not path.exists():
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "EDGE_LAUNCHER" for t in node.targets
            ):
                return ast.literal_eval(node.value)  # type: ignore[no-any-return]
    raise RuntimeError(f"no EDGE_LAUNCHER in {root}/bench")


def start_proxies(
    work: Path,
    up: int,
    workers: int,
    names: list[str],
    procs: list[subprocess.Popen[bytes]],
    access_log: bool = True,
) -> list[Proxy]:
    """Start the named proxies; each process joins ``procs`` as soon as it exists, so the
    caller's :func:`stop` ends it even when a later one fails to start."""
    cert, key, pem = make_cert(work)
    proxies: list[Proxy] = []
    fmt = {"dir": work, "up": up, "cert": cert, "key": key, "pem": pem, "workers": workers}
    for name in names:
        if name == "tako" or name == "tako-nolog" or name.startswith("tako@"):
            log = str(work / "access.log") if access_log and name != "tako-nolog" else ""
            proxies.append(start_tako(name, work, up, workers, log, procs))
    for name in ("nginx", "nginx-log"):
        if name not in names or not shutil.which("nginx"):
            continue
        p = Proxy(name, free_port(), free_port())
        conf = work / f"{name}.conf"
        log = NGINX_ACCESS_LOG.format(dir=work) if name == "nginx-log" else "access_log off;"
        conf.write_text(
            PROXY_NGINX.format(**fmt, name=name, http=p.http, https=p.https, access_log=log)
        )
        p.proc = start(["nginx", "-c", str(conf), "-p", str(work)], work / f"{name}.log")
        proxies.append(p)
        procs.append(p.proc)
    if "haproxy" in names and shutil.which("haproxy"):
        p = Proxy("haproxy", free_port(), free_port())
        conf = work / "haproxy.cfg"
        conf.write_text(PROXY_HAPROXY.format(**fmt, http=p.http, https=p.https))
        p.proc = start(["haproxy", "-f", str(conf)], work / "haproxy.log")
        proxies.append(p)
        procs.append(p.proc)
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
        procs.append(p.proc)
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
