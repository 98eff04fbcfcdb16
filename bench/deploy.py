"""Deploy, cold-start and crash-recovery benchmark on network-namespace hosts (not a test).

Usage (as root; builds the e2e server venv on first use, like the e2e tests)::

    python bench/deploy.py [--hosts 1,2,5,10] [--reps 1] [--cold 5] [--json PATH]

Makes ``max(--hosts)`` hosts with the e2e harness (tests/e2e/hosts.py: real sshd and
tako-server each, in its own network namespace), then:

1. for each host count N (interleaved over ``--reps``): ``tako deploy --timings`` of a small
   Python app (examples/python-app, an app of its own per N) to the first N hosts, then a
   redeploy after changing one file; the wall time of the ``tako`` command and of each
   phase (build; connect, lock, upload, prepare, rollout: the slowest server's);
2. cold start on host 1: ``tako scale 0`` with ``idle_timeout = 1``, wait until the
   instance is gone, then time one HTTPS request (request written to response head read,
   TLS already up) — ``--cold`` times, medians; the app's own boot is measured separately
   on the same host (its exact command line, spawned until its port accepts, polled every
   2 ms) and subtracted; a warm request gives the floor;
3. crash to replaced: SIGKILL the running instance of a freshly deployed app (its first
   crash: later ones wait a doubling backoff), then time until a request is answered 200
   again (a new connection every 10 ms).

Prints markdown tables and writes JSON (``--json``, default ``bench/results/deploy-<time>
.json``). Every host, namespace and process is torn down at the end (HostNetwork.close).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.hosts import ClientHome, HostNetwork, TestHost, unavailable_reason  # noqa: E402

EXAMPLE = ROOT / "examples" / "python-app"
PHASES = ("build", "connect", "lock", "upload", "prepare", "rollout")

BOOT_PROBE = """
import os, socket, subprocess, sys, time
port, workdir, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
env = dict(os.environ, HOST="127.0.0.1", PORT=str(port), TAKO_APP_NAME="bench-boot-probe")
start = time.monotonic()
proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
try:
    while time.monotonic() < start + 30:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                print(f"{time.monotonic() - start:.4f}")
                break
        time.sleep(0.002)
    else:
        print("timeout")
finally:
    proc.kill()
    proc.wait()
"""


def make_app(tmp: Path, name: str, hosts: list[TestHost]) -> Path:
    app = tmp / name
    shutil.copytree(EXAMPLE, app)
    toml = (app / "tako.toml").read_text().split("[envs.production]")[0]
    toml = toml.replace('name = "hello-python"', f'name = "{name}"')
    servers = json.dumps([h.name for h in hosts])
    toml += f'[envs.production]\nroute = "{name}.test"\nservers = {servers}\nidle_timeout = 1\n'
    (app / "tako.toml").write_text(toml)
    return app


def tako(client: ClientHome, app: Path, *args: str) -> str:
    done = client.run_tako(*args, "-c", str(app / "tako.toml"), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"tako {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def parse_timings(out: str) -> dict[str, Any]:
    """``build``, ``total`` and per server its phases, from ``tako deploy --timings``."""
    lines = out.split("\nTimings\n", 1)[1].splitlines()
    found: dict[str, Any] = {"servers": {}}
    for line in lines:
        parts = [p.strip() for p in line.split("  ") if p.strip()]
        if not parts or parts[0] in ("Summary",) or parts[0].startswith(("✓", "✗")):
            break
        if parts[0] in ("build", "total"):
            found[parts[0]] = float(parts[1].rstrip("s"))
            continue
        found["servers"][parts[0]] = {
            p.split()[0]: float(p.split()[1].rstrip("s")) for p in parts[1:-1]
        }
    return found


def machine_busy() -> float:
    """Seconds of CPU time the whole machine has spent busy (all cores, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def deploy_once(client: ClientHome, app: Path) -> dict[str, Any]:
    started, busy, cli = time.monotonic(), machine_busy(), children_cpu()
    out = tako(client, app, "deploy", "--yes", "--timings")
    wall = time.monotonic() - started
    # what bounds a deploy to many namespace hosts: the `tako` command's own CPU, and how
    # many of the machine's cores were busy on average (all "servers" share them)
    cli_cpu, busy = children_cpu() - cli, machine_busy() - busy
    timings = parse_timings(out)
    row = {
        "wall": wall,
        "build": timings.get("build", 0.0),
        "cli_cpu": cli_cpu,
        "busy_cores": busy / wall,
    }
    for phase in PHASES[1:]:
        row[phase] = max((s.get(phase, 0.0) for s in timings["servers"].values()), default=0.0)
    row["servers"] = timings["servers"]
    return row


def https_request(host: TestHost, route: str, timeout: float = 35.0) -> tuple[int, float]:
    """(status, seconds from the request written to the response head read); TLS first."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host.address, 443), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=route) as tls:
            request = f"GET / HTTP/1.1\r\nHost: {route}\r\nConnection: close\r\n\r\n"
            started = time.monotonic()
            tls.sendall(request.encode())
            head = b""
            while b"\r\n" not in head:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                head += chunk
            elapsed = time.monotonic() - started
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, elapsed


def app_pids(host: TestHost, app: str) -> list[int]:
    """PIDs of ``app``'s instances on ``host`` (its network namespace, its environment)."""
    assert host._holder is not None
    netns = os.readlink(f"/proc/{host._holder.pid}/ns/net")
    marker = f"TAKO_APP_NAME={app}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") != netns:
                continue
            if marker in Path(f"/proc/{entry}/environ").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


def wait(predicate: Any, what: str, timeout: float = 60.0, interval: float = 0.02) -> float:
    """Poll until true; returns the seconds it took (raises after ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def app_boot(host: TestHost, app: str) -> float:
    """Seconds from spawning the app's exact command line to its port accepting."""
    (pid,) = app_pids(host, app)[:1]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    releases = sorted((host.paths.opt / "apps" / app / "production" / "releases").iterdir())
    workdir = f"/opt/tako/apps/{app}/production/releases/{releases[-1].name}"
    script = host.paths.root / "boot_probe.py"
    script.write_text(BOOT_PROBE)
    script.chmod(0o644)
    port = 39000 + host.index
    done = host.exec(
        " ".join(["/usr/bin/python3", str(script), str(port), workdir, *argv]), user="tako"
    )
    text = done.stdout.strip()
    if text == "timeout" or not text:
        raise RuntimeError(f"{app} did not listen within 30 s when spawned directly")
    return float(text)


def serving(host: TestHost, route: str) -> bool:
    try:
        return https_request(host, route, timeout=5.0)[0] == 200
    except OSError:
        return False


def cold_starts(client: ClientHome, host: TestHost, app: Path, count: int) -> dict[str, Any]:
    """Warm request, the app's own boot and ``count`` cold starts (ms, medians)."""
    name = app.name
    route = f"{name}.test"
    warm = [https_request(host, route)[1] for _ in range(5)]
    boots = [app_boot(host, name) for _ in range(count)]
    tako(client, app, "scale", "0")
    colds = []
    for _ in range(count):
        wait(lambda: not app_pids(host, name), f"{name} to stop (idle_timeout 1 s)", 60, 0.1)
        status, seconds = https_request(host, route)
        if status != 200:
            raise RuntimeError(f"cold start of {name} answered {status}")
        colds.append(seconds)
    tako(client, app, "scale", "1")
    ms = 1000.0
    cold, boot = statistics.median(colds) * ms, statistics.median(boots) * ms
    return {
        "warm_ms": statistics.median(warm) * ms,
        "boot_ms": boot,
        "cold_ms": cold,
        "cold_over_boot_ms": cold - boot,
        "cold_all_ms": [c * ms for c in colds],
        "boot_all_ms": [b * ms for b in boots],
    }


def crash_to_replaced(client: ClientHome, host: TestHost, tmp: Path, count: int) -> dict[str, Any]:
    """SIGKILL a healthy instance, time until a request is answered 200 again (ms).

    Each crash is the first of a fresh app: repeated crashes of one app wait a doubling
    backoff (0.5 s, 1 s, 2 s ...; reset after 30 s healthy), which is not what is measured.
    """
    times = [first_crash(client, host, make_app(tmp, f"crash-{k}", [host])) for k in range(count)]
    return {"replaced_ms": statistics.median(times), "replaced_all_ms": times}


def first_crash(client: ClientHome, host: TestHost, app: Path) -> float:
    tako(client, app, "deploy", "--yes")
    route = f"{app.name}.test"
    wait(lambda: serving(host, route) and len(app_pids(host, app.name)) == 1, f"{route} up")
    (pid,) = app_pids(host, app.name)
    os.kill(pid, signal.SIGKILL)
    seconds = wait(lambda: serving(host, route), f"{route} replaced", 60, 0.01)
    tako(client, app, "delete", "--yes")
    return 1000.0 * seconds


def print_tables(rows: list[dict[str, Any]], cold: dict[str, Any], crash: dict[str, Any]) -> None:
    print(f"\n`python bench/deploy.py {' '.join(sys.argv[1:])}` ({os.cpu_count()} cores)\n")
    print(
        "| hosts | deploy | wall s | x 1 host | tako CPU s | busy cores | "
        + " | ".join(PHASES)
        + " |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(PHASES))
    one = {r["kind"]: r["wall"] for r in rows if r["hosts"] == 1}
    for r in rows:
        base = one.get(r["kind"])
        ratio = f"{r['wall'] / base:.2f}" if base else "-"
        phases = " | ".join(f"{r[p]:.2f}" for p in PHASES)
        print(
            f"| {r['hosts']} | {r['kind']} | {r['wall']:.2f} | {ratio} | {r['cli_cpu']:.2f} "
            f"| {r['busy_cores']:.2f} | {phases} |"
        )
    print(
        "\nphases: the slowest server's seconds; build once on this machine. tako CPU s: "
        "the `tako` command's own CPU time; busy cores: the machine's busy CPU time over "
        f"the wall time (of {os.cpu_count()}: every host shares them).\n"
    )
    print("| app boot ms | warm request ms | cold start ms | cold - boot ms | crash -> 200 ms |")
    print("|---|---|---|---|---|")
    print(
        f"| {cold['boot_ms']:.0f} | {cold['warm_ms']:.1f} | {cold['cold_ms']:.0f} "
        f"| {cold['cold_over_boot_ms']:.0f} | {crash['replaced_ms']:.0f} |"
    )


def deploy_matrix(
    client: ClientHome, hosts: list[TestHost], counts: list[int], reps: int, tmp: Path
) -> list[dict[str, Any]]:
    apps = {n: make_app(tmp, f"bench-{n}", hosts[:n]) for n in counts}
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for rep in range(reps):
        for n in counts:
            app = apps[n]
            if rep:  # every repetition deploys a fresh app again: a new name each time
                app = apps[n] = make_app(tmp, f"bench-{n}-r{rep}", hosts[:n])
            runs.setdefault((n, "first"), []).append(deploy_once(client, app))
            with (app / "app.py").open("a") as handle:
                handle.write(f"# changed for the redeploy {rep}\n")
            runs.setdefault((n, "redeploy"), []).append(deploy_once(client, app))
            print(
                f"  {n:2} hosts: first {runs[(n, 'first')][-1]['wall']:.2f} s, redeploy "
                f"{runs[(n, 'redeploy')][-1]['wall']:.2f} s",
                flush=True,
            )
    rows = []
    for (n, kind), found in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        row: dict[str, Any] = {"hosts": n, "kind": kind, "runs": found}
        for key in ("wall", "cli_cpu", "busy_cores", *PHASES):
            row[key] = statistics.median(r[key] for r in found)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hosts", default="1,2,5,10")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--cold", type=int, default=5, help="cold starts and crashes to time")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(reason)
    counts = sorted({int(n) for n in args.hosts.split(",")})
    path = args.json or ROOT / "bench" / "results" / time.strftime("deploy-%Y%m%d-%H%M%S.json")
    network = HostNetwork()
    tmp = Path(tempfile.mkdtemp(prefix="tako-bench-deploy-"))
    try:
        started = time.monotonic()
        hosts = network.make_hosts(max(counts))
        print(f"{len(hosts)} hosts up in {time.monotonic() - started:.1f} s", flush=True)
        client = network.client_home(tmp / "client")
        for host in hosts:
            client.run_tako("servers", "add", host.address, "--name", host.name)
        rows = deploy_matrix(client, hosts, counts, args.reps, tmp)
        one = tmp / f"bench-{counts[0]}"
        cold = cold_starts(client, hosts[0], one, args.cold)
        crash = crash_to_replaced(client, hosts[0], tmp, args.cold)
        print_tables(rows, cold, crash)
        doc = {
            "command": f"python bench/deploy.py {' '.join(sys.argv[1:])}",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": os.cpu_count(),
            "deploys": rows,
            "cold_start": cold,
            "crash": crash,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"\nresults: {path}")
    finally:
        network.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
