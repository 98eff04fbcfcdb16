"""A throwaway PostgreSQL cluster for tests and benchmarks (Debian's ``postgresql`` binaries).

PostgreSQL refuses to run as root, so the cluster belongs to the system user ``tako``
(``setpriv``). It lives in a fresh temp dir, listens on the given addresses and a free
port with password (scram) logins only, and :meth:`PostgresServer.stop` ends the one
``postgres`` process it started (by PID: SIGINT = fast shutdown, SIGKILL after a bound)
and removes the directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "tako"
PASSWORD = "tako-queue-test"


def available() -> str | None:
    """Why a cluster cannot be started here (None: it can)."""
    if not (BIN / "postgres").exists():
        return "PostgreSQL 15 binaries are not installed (apt-get install postgresql)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no system user {USER!r} to own the cluster"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One cluster: ``start()``, ``url(host)``, ``stop()``."""

    def __init__(self, listen: list[str]) -> None:
        self.listen = listen
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="tako-pg-"))
        self.data = self.root / "data"
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"PostgresServer({self.listen}, port={self.port}, pid={pid})"

    def _as_user(self) -> list[str]:
        return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups"]

    def url(self, host: str = "127.0.0.1") -> str:
        return f"postgresql://{USER}:{PASSWORD}@{host}:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> PostgresServer:
        entry = pwd.getpwnam(USER)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [*self._as_user(), str(BIN / "initdb"), "-D", str(self.data), "-U", USER,
             f"--pwfile={pwfile}", "--auth=scram-sha-256", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, timeout=120,
        )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 10.213.0.0/16 scram-sha-256\n")
        options = {
            "listen_addresses": ",".join(self.listen),
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "fsync": "off",
            "max_connections": "100",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = '{v}'\n" for k, v in options.items())
        log = (self.root / "postgres.log").open("ab")
        self.proc = subprocess.Popen(
            [*self._as_user(), str(BIN / "postgres"), "-D", str(self.data)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.listen[0], self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postgres did not listen within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.root / "postgres.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
