"""Demo driver for ``scripts/demo``: one test host, one real deploy, one real request.

Uses the end-to-end harness (``tests/e2e/hosts.py``): a network namespace with its own
sshd and tako-server running as user ``tako``, reached over a veth pair. Everything it
makes is torn down at the end (unless ``--keep``, which waits for Enter).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from tests.e2e.hosts import HostNetwork, unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
ROUTE = "hello-python.test"


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def main(argv: list[str]) -> int:
    reason = unavailable_reason()
    if reason:
        print(f"demo: {reason}", file=sys.stderr)
        return 1
    network = HostNetwork()
    work = Path(tempfile.mkdtemp(prefix="tako-demo-"))
    try:
        step("making a test host (network namespace + sshd + tako-server)")
        (host,) = network.make_hosts(1)
        client = network.client_home(work / "home")
        app = work / "python-app"
        shutil.copytree(ROOT / "examples" / "python-app", app)
        text = (app / "tako.toml").read_text().split("[envs.production]")[0]
        (app / "tako.toml").write_text(
            text + f'[envs.production]\nroute = "{ROUTE}"\nservers = ["{host.name}"]\n'
        )
        for args in (
            ("servers", "add", host.address, "--name", host.name),
            ("deploy", "--yes", "-c", str(app / "tako.toml")),
        ):
            step("tako " + " ".join(args))
            done = client.run_tako(*args, timeout=600)
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            if done.returncode != 0:
                print(host.log_tail("tako-server"), file=sys.stderr)
                return done.returncode
        url = f"https://{ROUTE}/"
        response = host.curl(url, "-k", "--fail")
        step(f"GET {url}  (resolved to {host.address})")
        print(f"URL: {url}")
        print(f"Response: {response.stdout.strip() or response.stderr.strip()}")
        if "--keep" in argv:
            input("host is running; press Enter to tear it down ")
        return 0 if response.returncode == 0 else 1
    finally:
        network.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
