"""End-to-end test hosts: Linux network namespaces with a real sshd and tako-server each.

A :class:`HostNetwork` (one per test session) makes :class:`TestHost` objects. Each host is

- a network namespace ``tako-e2e-<runid>-<n>`` joined to the test machine by a veth pair
  on a private /30 (``10.213.<octet>.1`` here, ``10.213.<octet>.2`` in the host), with
  ``lo`` up and ``net.ipv4.ip_unprivileged_port_start=0`` (tako-server binds 80/443 as
  user ``tako``);
- a private mount namespace held by one ``sleep infinity`` process, in which per-host
  temp dirs are bind-mounted over ``/opt/tako``, ``/var/run/tako`` and ``/home/tako``;
- a real ``/usr/sbin/sshd`` (own host key, key-only login for user ``tako``) and, when
  asked, a real ``tako-server`` running as ``tako`` from the world-readable venv that
  ``scripts/server-venv`` builds. Processes started over SSH inherit sshd's namespaces, so
  they see the host's private paths.

A *bare* host (``make_hosts(n, bare=True)``) is a fresh VPS instead: sshd lets only root in
(with the client key in a private ``/root/.ssh/authorized_keys``), and there is no user
``tako`` and no tako-server. Its mount namespace also has a private copy of ``/etc`` without
``tako`` (so the installer's ``useradd`` never touches the machine's ``/etc/passwd``) and
empty private ``/usr/local/bin``, ``/var/log`` and ``/tmp`` (where the onefile tako-server
unpacks itself); ``/opt/tako``, ``/var/run/tako`` and
``/home/tako`` are empty root-owned dirs. A tako-server the installer started there is
stopped with SIGTERM (pidfile and socket owner) before the host's processes are killed.

Rules: traffic goes only to these hosts; every process is started here with a kept handle
and ended by its PID; :meth:`HostNetwork.close` removes every namespace and veth it made.
The client side (:class:`ClientHome`) is a temp ``HOME`` with an ed25519 key that every
host authorises and a ``known_hosts`` filled from the hosts' real public keys.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
SERVER_VENV = Path(os.environ.get("TAKO_SERVER_VENV", "/opt/tako-venv"))
SOCKET_PATH = "/var/run/tako/tako.sock"
ECHO_SOCKET = "/var/run/tako/echo.sock"  # jsonl_echo.py in transport tests
SERVER_ENV = {
    "HOME": "/home/tako",
    "USER": "tako",
    "PATH": f"{SERVER_VENV}/bin:/usr/local/bin:/usr/bin:/bin",
    "TAKO_ACME_ENABLED": "false",  # hosts have no route out; tests opt in with Pebble
}
PRIVATE_PATHS = ("/opt/tako", "/var/run/tako", "/home/tako")
BARE_PATHS = ("/etc", "/root", "/usr/local/bin", "/var/log", "/tmp")  # private on bare hosts
SUBNET_PREFIX = "10.213"
_LOCK_FILE = Path("/run/tako-e2e.lock")
_REQUIRED_TOOLS = ("ip", "unshare", "nsenter", "setpriv", "ssh-keygen", "curl", "useradd")


class HarnessError(RuntimeError):
    """The harness could not build or drive a test host (the test errors, it does not skip)."""


def unavailable_reason() -> str | None:
    """Why the e2e harness cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "e2e hosts need root (network and mount namespaces, user 'tako')"
    missing = [tool for tool in _REQUIRED_TOOLS if shutil.which(tool) is None]
    if not Path("/usr/sbin/sshd").exists():
        missing.append("sshd (Debian package openssh-server)")
    if missing:
        return f"e2e hosts need missing tools: {', '.join(missing)} (run scripts/setup)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


def run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 60, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on failure raise :class:`HarnessError` with its output."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise HarnessError(
            f"{' '.join(argv)} exited {result.returncode}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def wait_for(
    predicate: object, what: str, *, timeout: float = 15.0, interval: float = 0.05
) -> None:
    """Poll ``predicate()`` until true or raise :class:`HarnessError` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}")


def ensure_tako_user() -> None:
    """Create the system user ``tako`` (home /home/tako, shell /bin/sh) once; unlock it for keys."""
    if run(["id", "-u", "tako"], check=False).returncode != 0:
        run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                "/home/tako",
                "--no-create-home",
                "--shell",
                "/bin/sh",
                "tako",
            ]
        )
    # sshd without PAM refuses accounts whose password starts with '!' (locked); '*' = no password.
    run(["usermod", "-p", "*", "tako"])
    for path in (*PRIVATE_PATHS, "/run/sshd"):
        Path(path).mkdir(parents=True, exist_ok=True)


def tako_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("tako")
    return entry.pw_uid, entry.pw_gid


def ensure_server_venv() -> Path:
    """Build or refresh the world-readable tako-server venv (cached by a source-hash stamp)."""
    result = run(
        [str(REPO / "scripts" / "server-venv"), str(SERVER_VENV)], check=False, timeout=900
    )
    if result.returncode != 0:
        raise HarnessError(
            f"scripts/server-venv failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return SERVER_VENV / "bin" / "tako-server"


@contextmanager
def _allocation_lock() -> Iterator[None]:
    """Serialise subnet allocation between concurrent test sessions on this machine."""
    with open(_LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _free_octet() -> int:
    """A third octet of 10.213.X.0/30 that no interface on this machine uses yet."""
    text = run(["ip", "-o", "-4", "addr", "show"]).stdout
    used = {int(p.split(".")[2]) for p in text.split() if p.startswith(f"{SUBNET_PREFIX}.")}
    for octet in range(1, 255):
        if octet not in used:
            return octet
    raise HarnessError(f"no free {SUBNET_PREFIX}.X.0/30 subnet left")


@dataclass(frozen=True)
class HostPaths:
    """Per-host directories on the test machine (the sources of the private bind mounts)."""

    root: Path

    @property
    def opt(self) -> Path:
        return self.root / "opt-tako"

    @property
    def run(self) -> Path:
        return self.root / "run-tako"

    @property
    def home(self) -> Path:
        return self.root / "home-tako"

    @property
    def sshd_dir(self) -> Path:
        return self.root / "sshd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def bare(self, path: str) -> Path:
        """Source of the private bind mount over ``path`` (one of :data:`BARE_PATHS`)."""
        return self.root / "bare" / path.strip("/").replace("/", "-")


@dataclass
class TestHost:
    """One test host; ``exec`` runs commands inside its namespaces, ``curl`` reaches it."""

    __test__ = False  # not a pytest test class

    name: str
    index: int
    netns: str
    address: str
    gateway: str
    paths: HostPaths
    ssh_port: int = 22
    host_key: str = ""  # "ssh-ed25519 AAAA..." (the sshd host public key)
    bare: bool = False  # a fresh VPS: root login only, no tako user, no tako-server
    _holder: subprocess.Popen[bytes] | None = None
    _sshd: subprocess.Popen[bytes] | None = None
    _server: subprocess.Popen[bytes] | None = None
    _extra: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _veth: str = ""

    def __repr__(self) -> str:
        server = "running" if self.server_running else "stopped"
        return f"TestHost({self.name}, {self.address}, netns={self.netns}, server={server})"

    # -- commands inside the host ---------------------------------------------------

    def enter_argv(self, user: str = "root") -> list[str]:
        """argv prefix that runs a program inside the host's net+mount namespaces as ``user``."""
        if self._holder is None:
            raise HarnessError(f"{self.name} is not running")
        argv = ["nsenter", "-t", str(self._holder.pid), "-m", "-n", "--"]
        if user != "root":
            argv += [
                "setpriv",
                "--reuid",
                user,
                "--regid",
                user,
                "--init-groups",
                "--reset-env",
                "--",
            ]
        return argv

    def exec(
        self,
        command: str,
        *,
        user: str = "root",
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the host; returns the completed process (text)."""
        return run(
            [*self.enter_argv(user), "/bin/sh", "-c", command],
            check=check,
            timeout=timeout,
            input=input,
        )

    def spawn(
        self, argv: Sequence[str], *, user: str = "tako", log_name: str
    ) -> subprocess.Popen[bytes]:
        """Start a background process inside the host; it is ended by PID at teardown."""
        proc = self._popen([*self.enter_argv(user), *argv], log_name)
        self._extra.append(proc)
        return proc

    def curl(self, url: str, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        """``curl`` from the test machine; the URL's host name resolves to this host's address."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        argv = [
            "curl",
            "-sS",
            "--max-time",
            str(int(timeout)),
            "--noproxy",
            "*",
            "--resolve",
            f"{parts.hostname}:{port}:{self.address}",
            *args,
            url,
        ]
        return run(argv, check=False, timeout=timeout + 5)

    # -- processes --------------------------------------------------------------------

    @property
    def server_running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def start_sshd(self) -> None:
        self._sshd = self._popen(
            [
                *self.enter_argv(),
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
                str(self.paths.sshd_dir / "sshd_config"),
            ],
            "sshd",
        )
        wait_for(self._ssh_port_open, f"sshd on {self.name} ({self.address}:{self.ssh_port})")

    def start_server(
        self,
        extra_args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> None:
        """Start tako-server as user ``tako`` and wait until its socket accepts connections.

        ``env`` adds to :data:`SERVER_ENV` (ACME is off unless a test turns it on, e.g. with
        ``TAKO_ACME_DIRECTORY_URL`` of a Pebble on the gateway address).
        """
        if self.server_running:
            raise HarnessError(f"tako-server already runs on {self.name}")
        variables = {**SERVER_ENV, **(env or {})}
        argv = [
            *self.enter_argv("tako"),
            "/usr/bin/env",
            *(f"{k}={v}" for k, v in variables.items()),
            str(SERVER_VENV / "bin" / "tako-server"),
            "run",
            "--data-dir",
            "/opt/tako",
            "--socket",
            SOCKET_PATH,
            "--http-port",
            "80",
            "--https-port",
            "443",
            *extra_args,
        ]
        self._server = self._popen(argv, "tako-server")

        def ready() -> bool:
            if self._server is not None and self._server.poll() is not None:
                raise HarnessError(
                    f"tako-server on {self.name} exited {self._server.returncode}:\n"
                    f"{self.log_tail('tako-server')}"
                )
            return self.exec(f"test -S {SOCKET_PATH}", check=False).returncode == 0

        wait_for(ready, f"tako-server socket on {self.name}", timeout=timeout, interval=0.1)

    def stop_server(self, timeout: float = 35) -> int | None:
        """SIGTERM tako-server, SIGKILL after ``timeout``; returns its exit code."""
        proc, self._server = self._server, None
        return _terminate(proc, timeout) if proc is not None else None

    def _ssh_port_open(self) -> bool:
        import socket

        if self._sshd is not None and self._sshd.poll() is not None:
            raise HarnessError(f"sshd on {self.name} exited:\n{self.log_tail('sshd')}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((self.address, self.ssh_port)) == 0

    def _popen(self, argv: Sequence[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.paths.logs / f"{log_name}.log", "ab")  # noqa: SIM115 - closed by the child owner
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    # -- logs ---------------------------------------------------------------------------

    def log_tail(self, name: str, lines: int = 60) -> str:
        path = self.paths.logs / f"{name}.log"
        if not path.exists():
            return f"({name}: no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def logs(self, lines: int = 60) -> dict[str, str]:
        """The tail of every log this host wrote (sshd, tako-server, spawned processes)."""
        if not self.paths.logs.exists():
            return {}
        found = {
            p.stem: self.log_tail(p.stem, lines) for p in sorted(self.paths.logs.glob("*.log"))
        }
        installed = self.paths.bare("/var/log") / "tako-server.log"
        if self.bare and installed.exists():
            text = installed.read_text(errors="replace").splitlines()[-lines:]
            found["installed-tako-server"] = "\n".join(text)
        return found

    def installed_server_pids(self) -> set[int]:
        """PIDs of a tako-server the installer started: its pidfile and the socket's owner."""
        pids: set[int] = set()
        with suppress(OSError, ValueError):
            pids.add(int((self.paths.run / "tako-server.pid").read_text().strip()))
        with suppress(OSError, ValueError):
            link = os.readlink(self.paths.run / "tako.sock")
            pids.add(int(link.removeprefix("tako-").removesuffix(".sock")))
        return {pid for pid in pids if pid > 1 and Path(f"/proc/{pid}").exists()}

    def stop_installed_server(self, timeout: float = 35) -> None:
        """SIGTERM the installed tako-server so it stops its apps and its onefile bootloader
        removes its unpacked bundle; whatever is left is SIGKILLed by :meth:`close`."""
        pids = self.installed_server_pids()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with suppress(HarnessError):
            wait_for(
                lambda: not any(_is_alive(pid) for pid in pids),
                f"the installed tako-server on {self.name} to stop",
                timeout=timeout,
                interval=0.1,
            )

    def signal_servers(self) -> None:
        """SIGTERM this host's tako-server (the harness's and an installed one) without
        waiting: :meth:`close` waits for them (and SIGKILLs what hangs)."""
        pids = self.installed_server_pids() if self.bare else set()
        if self._server is not None and self._server.poll() is None:
            pids.add(self._server.pid)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def close(self) -> None:
        if self.bare:
            self.stop_installed_server()
        for proc in [*self._extra, self._server, self._sshd]:
            if proc is not None:
                _terminate(proc, 10)
        self._extra.clear()
        self._server = self._sshd = None
        if self._holder is not None:
            _terminate(self._holder, 5)
            self._holder = None
        self._kill_leftovers()
        run(["ip", "netns", "del", self.netns], check=False)
        if self._veth:
            run(["ip", "link", "del", self._veth], check=False)

    def _kill_leftovers(self) -> None:
        """SIGKILL, by PID, what our processes left in this host's namespace (orphaned apps)."""
        listed = run(["ip", "netns", "pids", self.netns], check=False).stdout.split()
        for pid in (int(p) for p in listed if p.isdigit()):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """End one process we started, by its PID: SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
    return proc.returncode


class HostNetwork:
    """Makes test hosts for one session and tears all of them down in :meth:`close`."""

    def __init__(self) -> None:
        ensure_tako_user()
        self.run_id = f"{os.getpid():x}"
        self.root = Path(tempfile.mkdtemp(prefix=f"tako-e2e-{self.run_id}-", dir="/tmp"))
        self.root.chmod(0o755)
        self.client_key = self.root / "client_ed25519"
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "tako-e2e-client",
                "-f",
                str(self.client_key),
            ]
        )
        self.hosts: list[TestHost] = []
        self._count = 0
        self._server_ready = False

    def __repr__(self) -> str:
        return f"HostNetwork(root={str(self.root)!r}, hosts={[h.name for h in self.hosts]})"

    def make_hosts(
        self,
        n: int,
        *,
        server: bool = True,
        server_env: Mapping[str, str] | None = None,
        bare: bool = False,
    ) -> list[TestHost]:
        """Make ``n`` fresh hosts with sshd running (and tako-server when ``server``);
        ``bare`` hosts are fresh VPSes (root login only, no tako user, never a server)."""
        server = server and not bare
        if server and not self._server_ready:
            ensure_server_venv()
            self._server_ready = True
        made = []
        for _ in range(n):
            host = self._make_host(bare)
            made.append(host)
            if server:
                host.start_server(env=server_env)
        return made

    def _make_host(self, bare: bool = False) -> TestHost:
        self._count += 1
        index = self._count
        paths = HostPaths(self.root / f"host{index}")
        with _allocation_lock():
            octet = _free_octet()
            netns = f"tako-e2e-{self.run_id}-{index}"
            host = TestHost(
                name=f"host{index}",
                index=index,
                netns=netns,
                address=f"{SUBNET_PREFIX}.{octet}.2",
                gateway=f"{SUBNET_PREFIX}.{octet}.1",
                paths=paths,
                bare=bare,
            )
            self.hosts.append(host)
            self._make_netns(host, octet)
        self._prepare_dirs(host)
        self._start_holder(host)
        host.start_sshd()
        return host

    def _make_netns(self, host: TestHost, octet: int) -> None:
        outer, inner = f"tke{self.run_id[-4:]}h{octet}", f"tke{octet}n"
        run(["ip", "netns", "add", host.netns])
        run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])
        host._veth = outer
        run(["ip", "link", "set", inner, "netns", host.netns])
        run(["ip", "addr", "add", f"{host.gateway}/30", "dev", outer])
        run(["ip", "link", "set", outer, "up"])
        inside = ["ip", "netns", "exec", host.netns]
        run([*inside, "ip", "link", "set", "lo", "up"])
        run([*inside, "ip", "addr", "add", f"{host.address}/30", "dev", inner])
        run([*inside, "ip", "link", "set", inner, "up"])
        run([*inside, "sysctl", "-q", "-w", "net.ipv4.ip_unprivileged_port_start=0"])

    def _prepare_dirs(self, host: TestHost) -> None:
        paths = host.paths
        for path in (paths.root, paths.sshd_dir, paths.logs):
            path.mkdir(parents=True, mode=0o755)
        if host.bare:
            self._prepare_bare_dirs(host)
        else:
            self._prepare_tako_dirs(host)
        host_key = paths.sshd_dir / "ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(host_key)])
        host.host_key = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
        (paths.sshd_dir / "sshd_config").write_text(_sshd_config(host, host_key))

    def _prepare_tako_dirs(self, host: TestHost) -> None:
        paths = host.paths
        uid, gid = tako_ids()
        for path, mode in (
            (paths.opt, 0o700),
            (paths.run, 0o700),
            (paths.home, 0o755),
            (paths.home / ".ssh", 0o700),
        ):
            path.mkdir(mode=mode)
            os.chown(path, uid, gid)
        keys = paths.home / ".ssh" / "authorized_keys"
        keys.write_text(Path(f"{self.client_key}.pub").read_text())
        keys.chmod(0o600)
        os.chown(keys, uid, gid)

    def _prepare_bare_dirs(self, host: TestHost) -> None:
        """Root-owned empty tako dirs, a private /etc without tako, root's authorised key."""
        paths = host.paths
        for path in (paths.opt, paths.run, paths.home):
            path.mkdir(mode=0o755)
        paths.bare("/etc").parent.mkdir(mode=0o755)
        run(["cp", "-a", "/etc", str(paths.bare("/etc"))])
        for name in ("passwd", "group", "shadow", "gshadow"):
            _strip_tako(paths.bare("/etc") / name)
        for mount in ("/usr/local/bin", "/var/log", "/tmp"):
            paths.bare(mount).mkdir(mode=0o755)
        paths.bare("/tmp").chmod(0o1777)  # uploads, and the onefile bundle tako-server unpacks
        (paths.bare("/tmp") / self.root.name).mkdir(mode=0o755)  # where self.root stays visible
        ssh_dir = paths.bare("/root") / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        paths.bare("/root").chmod(0o700)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(Path(f"{self.client_key}.pub").read_text())
        keys.chmod(0o600)

    def _start_holder(self, host: TestHost) -> None:
        binds = [
            (host.paths.opt, "/opt/tako"),
            (host.paths.run, "/var/run/tako"),
            (host.paths.home, "/home/tako"),
        ]
        if host.bare:  # /tmp last: every source lives in /tmp, and self.root must stay visible
            binds += [(host.paths.bare(path), path) for path in BARE_PATHS if path != "/tmp"]
            binds += [
                (self.root, str(host.paths.bare("/tmp") / self.root.name)),
                (host.paths.bare("/tmp"), "/tmp"),
            ]
        mounts = " && ".join(  # --rbind for /tmp: it carries the bind of self.root along
            f"mount {'--rbind' if dst == '/tmp' else '--bind'} {src} {dst}" for src, dst in binds
        )
        argv = [
            "ip",
            "netns",
            "exec",
            host.netns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            f"{mounts} && exec sleep infinity",
        ]
        host._holder = host._popen(argv, "holder")
        inside = "/root/.ssh/authorized_keys" if host.bare else "/home/tako/.ssh/authorized_keys"
        probe = (
            host.paths.bare("/root") / ".ssh" / "authorized_keys"
            if host.bare
            else host.paths.home / ".ssh" / "authorized_keys"
        )

        def mounted() -> bool:
            if host._holder is not None and host._holder.poll() is not None:
                raise HarnessError(
                    f"namespace holder of {host.name} exited:\n{host.log_tail('holder')}"
                )
            result = run([*host.enter_argv(), "test", "-f", inside], check=False)
            return result.returncode == 0 and probe.exists()

        wait_for(mounted, f"private mounts of {host.name}")

    def client_home(self, directory: Path) -> ClientHome:
        """A fresh client HOME in ``directory`` that trusts every live host."""
        home = ClientHome(directory, self.client_key)
        for host in self.hosts:
            home.trust(host)
        return home

    def close(self) -> None:
        # every tako-server stops its apps at once (seconds each), then each host is closed
        for host in self.hosts:
            host.signal_servers()
        for host in reversed(self.hosts):
            host.close()
        self.hosts.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _strip_tako(path: Path) -> None:
    """Drop the ``tako`` entry from a copy of passwd/group/shadow/gshadow."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if not line.startswith("tako:")))


def _sshd_config(host: TestHost, host_key: Path) -> str:
    # A bare host is a fresh VPS: root logs in with a key; tako can once it exists.
    users = "root tako" if host.bare else "tako"
    keys = ".ssh/authorized_keys" if host.bare else "/home/tako/.ssh/authorized_keys"
    return "\n".join(
        [
            f"ListenAddress {host.address}:{host.ssh_port}",
            f"HostKey {host_key}",
            f"PidFile {host.paths.sshd_dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {keys}",
            f"AllowUsers {users}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "UsePAM no",
            f"PermitRootLogin {'prohibit-password' if host.bare else 'no'}",
            "StrictModes yes",
            "AllowStreamLocalForwarding yes",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "",
        ]
    )


class ClientHome:
    """The developer machine's side: a temp HOME with the session key and a known_hosts."""

    def __init__(self, home: Path, key: Path) -> None:
        self.home = home
        self.ssh_dir = home / ".ssh"
        self.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy(key, self.ssh_dir / "id_ed25519")
        shutil.copy(f"{key}.pub", self.ssh_dir / "id_ed25519.pub")
        (self.ssh_dir / "id_ed25519").chmod(0o600)
        self.known_hosts = self.ssh_dir / "known_hosts"
        self.known_hosts.touch(mode=0o600)
        self.tako_home = home / ".tako"

    def __repr__(self) -> str:
        return f"ClientHome({str(self.home)!r})"

    def trust(self, host: TestHost, key: str | None = None) -> None:
        """Append ``host``'s key (or ``key``) to known_hosts, as ssh-keyscan would."""
        name = host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"
        with self.known_hosts.open("a") as handle:
            handle.write(f"{name} {key or host.host_key}\n")

    def forget_all(self) -> None:
        self.known_hosts.write_text("")

    @property
    def env(self) -> dict[str, str]:
        """Environment for running the ``tako`` CLI as this client (no ssh-agent)."""
        keep = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TERM", "PYENV_VERSION")
        }
        return {**keep, "HOME": str(self.home), "TAKO_HOME": str(self.tako_home), "NO_COLOR": "1"}

    def run_tako(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``tako`` console script of this Python as this client."""
        tako = Path(sys.executable).parent / "tako"
        argv = (
            [str(tako)]
            if tako.exists()
            else [sys.executable, "-c", "from tako_client.cli import main; main()"]
        )
        return subprocess.run(
            [*argv, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
            check=False,
            cwd=self.home,
        )
