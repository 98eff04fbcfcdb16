"""`tako dev` with real processes on loopback: the real CLI, the real dev edge (the
server's edge code), real Python and Node apps, and curl verifying HTTPS against the
local CA the run made.

Every process a test starts carries a marker variable in its environment (inherited by
the dev edge and the apps); teardown kills what still carries it, so nothing outlives a
test, and the Ctrl-C test asserts that nothing is left to kill.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tako_client.dev.ca import LocalCA
from tako_server.devedge.ports import bind_first
from tests.integration.conftest import free_port

TAKO = [sys.executable, "-c", "from tako_client.cli import main; main()"]
MARKER = "TAKO_DEV_TEST_MARKER"
DEADLINE = 30.0

PY_APP = '''\
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MESSAGE = "python says v1"
NAMES = ("TAKO_ENV", "TAKO_APP_NAME", "GREETING", "ONLY_DEV", "ONLY_PROD", "API_KEY",
         "TAKO_DATA_DIR", "TAKO_STORAGE_UPLOADS_PATH")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/env":
            body = json.dumps({n: os.environ.get(n) for n in NAMES}).encode()
        elif self.path == "/pid":
            body = str(os.getpid()).encode()
        elif self.path == "/crash":
            print("about to crash", flush=True)
            os._exit(3)
        else:
            body = (MESSAGE + " host=" + self.headers.get("Host", "?")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("python app starting", flush=True)
ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
'''

NODE_APP = '''\
const http = require("http");
const MESSAGE = "node says v1";
http.createServer((req, res) => {
  if (req.url === "/env") {
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify({TAKO_ENV: process.env.TAKO_ENV, NODE_ENV: process.env.NODE_ENV}));
  } else {
    res.end(MESSAGE);
  }
}).listen(Number(process.env.PORT), process.env.HOST, () => console.log("node app ready"));
'''


def marked_pids(marker: str) -> list[int]:
    """Live processes (zombies included) whose environment carries ``marker``."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(check: Callable[[], object], what: str, timeout: float = DEADLINE) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class DevWorld:
    """One developer: a TAKO_HOME, fixed dev edge ports, and the processes started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.https_port = free_port()
        self.http_port = free_port()
        self.marker = uuid.uuid4().hex
        self.runs: list[DevRun] = []
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TAKO_")}
        self.env.update({
            "TAKO_HOME": str(self.home), "TAKO_DEV_HTTPS_PORT": str(self.https_port),
            "TAKO_DEV_HTTP_PORT": str(self.http_port), MARKER: self.marker, "PATH": path,
            "PYTHONUNBUFFERED": "1", "COLUMNS": "200",
        })

    @property
    def ca(self) -> Path:
        return self.home / "ca" / "tako-dev-ca.pem"

    def app(self, name: str, files: dict[str, str], toml: str = "") -> Path:
        directory = self.root / name
        directory.mkdir(parents=True)
        (directory / "tako.toml").write_text(f'name = "{name}"\n{toml}')
        for rel, text in files.items():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            (directory / rel).write_text(text)
        return directory

    def tako(self, *args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TAKO, *args], cwd=cwd, env=self.env, input=stdin, capture_output=True,
            text=True, timeout=60,
        )

    def start(self, app_dir: Path, *args: str) -> DevRun:
        run = DevRun(self, app_dir, args)
        self.runs.append(run)
        return run

    def curl(self, host: str, path: str = "/", *extra: str) -> tuple[int, str]:
        """``(status, body)`` of https://host:port/path, verified against the local CA."""
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--cacert", str(self.ca), "--resolve",
             f"{host}:{self.https_port}:127.0.0.1", "-w", "\n%{http_code}", *extra,
             f"https://{host}:{self.https_port}{path}"],
            capture_output=True, text=True, timeout=30,
        )
        if done.returncode != 0:
            return 0, done.stderr
        body, _, status = done.stdout.rpartition("\n")
        return int(status), body

    def wait_body(self, host: str, text: str, path: str = "/") -> str:
        def check() -> str | None:
            status, body = self.curl(host, path)
            return body if status == 200 and text in body else None

        return str(wait_for(check, f"{text!r} from https://{host}{path}"))

    def cleanup(self) -> None:
        for run in self.runs:
            run.kill()
        for pid in marked_pids(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class DevRun:
    """One real ``tako dev`` process (its own process group, as a terminal job is)."""

    def __init__(self, world: DevWorld, app_dir: Path, args: tuple[str, ...]) -> None:
        self.world = world
        self.log = world.root / f"{app_dir.name}-{len(world.runs)}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*TAKO, "dev", *args], cwd=app_dir, env=world.env, stdin=subprocess.PIPE,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = DEADLINE) -> None:
        def check() -> bool:
            if self.proc.poll() is not None and text not in self.output():
                raise AssertionError(f"tako dev exited {self.proc.returncode}:\n{self.output()}")
            return text in self.output()

        wait_for(check, f"{text!r} in the output of tako dev", timeout)

    def type_line(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it (to the job's process group); the exit code."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=DEADLINE)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc.stdin is not None:
            self.proc.stdin.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[DevWorld]:
    """A developer's world; on teardown its logs are printed (pytest shows them only when
    the test failed) and every process it started is gone."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    dev = DevWorld(tmp_path)
    yield dev
    for run in dev.runs:
        print(f"--- {run.log.name}\n{run.output()}")
    edge_log = dev.home / "dev" / "edge.log"
    if edge_log.exists():
        print(f"--- edge.log\n{edge_log.read_text()}")
    dev.cleanup()


def python_app(world: DevWorld, name: str = "pyweb", toml: str = "") -> Path:
    return world.app(name, {"app.py": PY_APP}, 'runtime = "python"\n' + toml)


# ------------------------------------------------------------------------------ tests


def test_a_python_app_answers_over_https_with_a_certificate_of_the_local_ca(
    world: DevWorld,
) -> None:
    app_dir = python_app(world)
    run = world.start(app_dir)
    run.wait_output("listening on 127.0.0.1:")
    out = run.output()
    url_line = out.index(f"https://pyweb.localhost:{world.https_port}/")
    assert url_line < out.index("python app starting")  # the URL first, then the app
    status, body = world.curl("pyweb.localhost")
    assert (status, body) == (200, f"python says v1 host=pyweb.localhost:{world.https_port}")
    untrusted = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--resolve",
         f"pyweb.localhost:{world.https_port}:127.0.0.1",
         f"https://pyweb.localhost:{world.https_port}/"],
        capture_output=True, text=True, timeout=30,
    )
    assert untrusted.returncode != 0  # only the generated CA makes it verify
    key = world.home / "ca" / "tako-dev-ca-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    plain = subprocess.run(  # HTTP on the edge's plain port: a local host is not redirected
        ["curl", "-sS", "--max-time", "5", f"http://pyweb.localhost:{world.http_port}/",
         "--resolve", f"pyweb.localhost:{world.http_port}:127.0.0.1"],
        capture_output=True, text=True, timeout=30,
    )
    assert plain.stdout.startswith("python says v1")


def test_editing_a_file_changes_the_response_without_restarting_tako_dev(
    world: DevWorld,
) -> None:
    app_dir = python_app(world)
    run = world.start(app_dir)
    run.wait_output("listening on")
    first_pid = world.curl("pyweb.localhost", "/pid")[1]
    source = app_dir / "app.py"
    source.write_text(source.read_text().replace("python says v1", "python says v2"))
    world.wait_body("pyweb.localhost", "python says v2")
    assert world.curl("pyweb.localhost", "/pid")[1] != first_pid  # the app restarted...
    assert run.proc.poll() is None  # ...tako dev did not
    assert "files changed (app.py): restarting pyweb" in run.output()
    (app_dir / ".gitignore").write_text("*.log\n")
    run.wait_output("files changed (.gitignore): restarting pyweb")
    wait_for(lambda: run.output().count("✓ restarted") == 2, "the second restart")
    pid = world.curl("pyweb.localhost", "/pid")[1]
    (app_dir / "more.log").write_text("x")  # ignored by .gitignore
    (app_dir / ".app.py.swp").write_text("x")  # editor litter
    time.sleep(1.5)  # longer than a poll plus the quiet spell: a restart would show
    assert world.curl("pyweb.localhost", "/pid")[1] == pid
    assert run.output().count("restarting pyweb") == 2


def test_a_node_app_under_its_own_watch_mode(world: DevWorld) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    app_dir = world.app(
        "nodeweb", {"server.js": NODE_APP, "package.json": '{"main": "server.js"}'}
    )
    run = world.start(app_dir)
    run.wait_output("listening on")
    assert "node --watch server.js" in run.output()
    assert world.curl("nodeweb.localhost")[1] == "node says v1"
    assert json.loads(world.curl("nodeweb.localhost", "/env")[1]) == {
        "TAKO_ENV": "development", "NODE_ENV": "development",
    }
    source = app_dir / "server.js"
    source.write_text(source.read_text().replace("node says v1", "node says v2"))
    world.wait_body("nodeweb.localhost", "node says v2")
    assert run.proc.poll() is None
    assert "restarting nodeweb" not in run.output()  # node --watch reloaded it itself


def test_development_vars_and_secrets_reach_the_app_and_production_ones_do_not(
    world: DevWorld,
) -> None:
    app_dir = python_app(world, toml=(
        '[vars]\nGREETING = "common"\n[vars.development]\nGREETING = "dev"\n'
        'ONLY_DEV = "yes"\n[vars.production]\nONLY_PROD = "no"\n'
        '[envs.production]\nroute = "pyweb.example.com"\nstorages = { uploads = "local" }\n'
    ))
    done = world.tako("secrets", "set", "API_KEY", "--env", "development", cwd=app_dir,
                      stdin="dev-secret\n")
    assert done.returncode == 0, done.stderr
    run = world.start(app_dir)
    run.wait_output("listening on")
    env = json.loads(world.curl("pyweb.localhost", "/env")[1])
    dev_dir = app_dir / ".tako" / "dev"
    assert env == {
        "TAKO_ENV": "development", "TAKO_APP_NAME": "pyweb", "GREETING": "dev",
        "ONLY_DEV": "yes", "ONLY_PROD": None, "API_KEY": "dev-secret",
        "TAKO_DATA_DIR": str(dev_dir / "data"),
        "TAKO_STORAGE_UPLOADS_PATH": str(dev_dir / "storages" / "uploads"),
    }
    assert (dev_dir / "storages" / "uploads").is_dir()


def test_two_apps_at_once_each_on_its_own_host(world: DevWorld) -> None:
    web = python_app(world, "web")
    api = python_app(world, "api", toml='[envs.development]\nroute = "api.test"\n')
    (api / "app.py").write_text(PY_APP.replace("python says v1", "api says hi"))
    first = world.start(web)
    first.wait_output("listening on")
    second = world.start(api)
    second.wait_output("listening on")
    assert f"also https://api.test:{world.https_port}/" in second.output()
    assert world.curl("web.localhost")[1].startswith("python says v1")
    assert world.curl("api.localhost")[1].startswith("api says hi")
    assert world.curl("api.test")[1].startswith("api says hi")
    listed = world.tako("dev", "ls", cwd=web)
    assert "web  up" in listed.stdout and "api  up" in listed.stdout, listed.stdout
    status, page = world.curl("localhost")  # the index page lists both
    assert status == 200
    assert f"https://web.localhost:{world.https_port}/" in page
    assert f"https://api.test:{world.https_port}/" in page
    status, page = world.curl("typo.localhost", "/", "-k")  # unknown host: the same list
    assert status == 404 and f"https://api.localhost:{world.https_port}/" in page
    stopped = world.tako("dev", "stop", "api", cwd=web)
    assert stopped.returncode == 0 and "stopped api" in stopped.stdout, stopped.stderr
    assert second.proc.wait(timeout=DEADLINE) == 0
    assert world.curl("web.localhost")[1].startswith("python says v1")  # the other one stays
    assert world.curl("api.localhost", "/", "-k")[0] == 404
    assert first.proc.poll() is None
    edge_pid = int((world.home / "dev" / "edge.pid").read_text())
    stopped = world.tako("dev", "stop", "--all", cwd=web)
    assert "stopped web" in stopped.stdout, stopped.stderr
    assert first.proc.wait(timeout=DEADLINE) == 0
    wait_for(lambda: edge_pid not in marked_pids(world.marker), "the dev edge to exit", 10)


def test_ctrl_c_stops_the_app_and_the_edge_and_leaves_no_process(world: DevWorld) -> None:
    app_dir = python_app(world)
    run = world.start(app_dir)
    run.wait_output("listening on")
    app_pid = int(world.curl("pyweb.localhost", "/pid")[1])
    edge_pid = int((world.home / "dev" / "edge.pid").read_text())
    assert {app_pid, edge_pid} <= set(marked_pids(world.marker))
    assert run.interrupt() == 0
    assert "interrupted (Ctrl-C): stopping pyweb" in run.output()
    wait_for(lambda: not marked_pids(world.marker), "every started process to be gone", 10)
    assert not (world.home / "dev" / "edge.sock").exists()
    with socket.socket() as sock:  # the edge's port is free again
        sock.bind(("127.0.0.1", world.https_port))


def test_a_crash_shows_the_exit_code_and_waits_for_r_instead_of_looping(
    world: DevWorld,
) -> None:
    app_dir = python_app(world)
    run = world.start(app_dir)
    run.wait_output("listening on")
    world.curl("pyweb.localhost", "/crash")
    run.wait_output("pyweb exited with code 3; waiting for a file change (or r + Enter)")
    status, page = world.curl("pyweb.localhost")
    assert status == 502 and "exited with code 3" in page
    time.sleep(1.0)
    assert run.output().count("python app starting") == 1  # no restart loop
    run.type_line("r")
    run.wait_output("restart asked (r): starting pyweb")
    world.wait_body("pyweb.localhost", "python says v1")
    assert run.output().count("python app starting") == 2


def test_static_files_of_public_are_served_by_the_edge(world: DevWorld) -> None:
    app_dir = python_app(world)
    (app_dir / "public").mkdir()
    (app_dir / "public" / "logo.txt").write_text("from public/")
    run = world.start(app_dir)
    run.wait_output("listening on")
    assert world.curl("pyweb.localhost", "/logo.txt") == (200, "from public/")


def test_an_app_that_never_listens_is_reported_while_its_output_shows(
    world: DevWorld,
) -> None:
    app_dir = world.app("sleepy", {"app.py": (
        "import time\nprint('sleepy is booting', flush=True)\ntime.sleep(120)\n"
    )}, 'runtime = "python"\n')
    run = world.start(app_dir, "--ready-timeout", "2")
    run.wait_output("sleepy has not listened on PORT=")
    assert "sleepy is booting" in run.output()
    assert "it must serve HTTP on $HOST:$PORT" in run.output()
    assert run.interrupt() == 0


def test_the_command_after_dashes_replaces_the_configured_one(world: DevWorld) -> None:
    app_dir = python_app(world, toml='dev = ["false"]\n')
    (app_dir / "other.py").write_text(PY_APP.replace("python says v1", "other command"))
    run = world.start(app_dir, "--", "python", "other.py")
    run.wait_output("listening on")
    assert world.curl("pyweb.localhost")[1].startswith("other command")
    assert "(the command line;" in run.output()


def test_a_taken_port_is_refused_naming_the_process(world: DevWorld) -> None:
    app_dir = python_app(world)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", world.https_port))
        holder.listen()
        done = subprocess.run(
            [*TAKO, "dev"], cwd=app_dir, env=world.env, capture_output=True, text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"port {world.https_port} is in use by" in done.stderr
    assert f"(pid {os.getpid()})" in done.stderr
    assert "TAKO_DEV_HTTPS_PORT" in done.stderr
    assert not marked_pids(world.marker)


def test_no_dev_command_says_which_keys_to_set(world: DevWorld) -> None:
    app_dir = world.app("bare", {"README.md": "no code"})
    done = world.tako("dev", cwd=app_dir)
    assert done.returncode == 1
    assert "no dev command" in done.stderr
    assert "dev = [" in done.stderr and "runtime" in done.stderr


def test_bad_dev_subcommand_input_is_refused(world: DevWorld) -> None:
    app_dir = python_app(world)
    for args, text in [
        (("dev", "--"), "nothing after `--`"),
        (("dev", "ls", "--", "x"), "goes with `tako dev` itself"),
        (("dev", "stop", "Bad_Name"), "invalid app name"),
        (("dev", "stop", "pyweb", "--all"), "not both"),
        (("dev", "stop", "pyweb"), "no app named 'pyweb' runs under tako dev"),
    ]:
        done = world.tako(*args, cwd=app_dir)
        assert done.returncode == 1 and text in done.stderr, (args, done.stderr)
    assert "No app runs under tako dev" in world.tako("dev", "ls", cwd=app_dir).stdout
    world.env["TAKO_DEV_HTTPS_PORT"] = "99999"
    done = world.tako("dev", cwd=app_dir)
    assert done.returncode == 1 and "invalid TAKO_DEV_HTTPS_PORT='99999'" in done.stderr
    assert not (world.home / "dev").exists()


def test_a_second_tako_dev_of_the_same_app_is_refused(world: DevWorld) -> None:
    app_dir = python_app(world)
    run = world.start(app_dir)
    run.wait_output("listening on")
    done = world.tako("dev", cwd=app_dir)
    assert done.returncode == 1
    assert "app 'pyweb' already runs under tako dev" in done.stderr
    assert "tako dev stop pyweb" in done.stderr
    assert world.curl("pyweb.localhost")[0] == 200


def test_trust_and_untrust_change_the_trust_store_and_say_what(world: DevWorld) -> None:
    if shutil.which("update-ca-certificates") is None and not Path(
        "/usr/sbin/update-ca-certificates"
    ).exists():
        pytest.skip("update-ca-certificates is not installed")
    store = world.root / "store"
    for rel in ("usr/local/share/ca-certificates", "usr/share/ca-certificates",
                "etc/ssl/certs", "etc/ca-certificates/update.d"):
        (store / rel).mkdir(parents=True)
    other, _ = LocalCA.ensure(world.root / "other-ca")  # a system always has other CAs
    (store / "usr/share/ca-certificates/other.crt").write_bytes(other.cert_pem)
    (store / "etc" / "ca-certificates.conf").write_text("other.crt\n")
    world.env["TAKO_DEV_TRUST_ROOT"] = str(store)
    app_dir = python_app(world)
    done = world.tako("dev", "trust", cwd=app_dir)
    assert done.returncode == 0, done.stderr
    installed = store / "usr/local/share/ca-certificates/tako-dev-ca.crt"
    bundle = store / "etc/ssl/certs/ca-certificates.crt"
    assert f"wrote {installed}" in done.stdout
    assert "ran update-ca-certificates: 2 added, 0 removed" in done.stdout
    assert f"{bundle} now trusts Tako dev CA" in done.stdout
    assert world.ca.read_text().strip() in bundle.read_text()
    run = world.start(app_dir)  # the bundle alone verifies the dev URL
    run.wait_output("listening on")
    assert world.curl("pyweb.localhost", "/", "--cacert", str(bundle))[0] == 200
    again = world.tako("dev", "trust", cwd=app_dir)
    assert "already holds this CA (kept)" in again.stdout
    done = world.tako("dev", "untrust", cwd=app_dir)
    assert done.returncode == 0, done.stderr
    assert f"removed {installed}" in done.stdout
    assert f"{bundle} no longer trusts Tako dev CA" in done.stdout
    assert not installed.exists()
    assert world.ca.read_text().strip() not in bundle.read_text()
    assert other.cert_pem.decode().strip() in bundle.read_text()


WS_APP = """\
import os
from aiohttp import web


async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str("echo: " + message.data)
    return ws


app = web.Application()
app.router.add_get("/ws", echo)
web.run_app(app, host=os.environ["HOST"], port=int(os.environ["PORT"]), print=print)
"""


def test_a_websocket_goes_through_the_dev_edge(world: DevWorld) -> None:
    app_dir = world.app("wsapp", {"app.py": WS_APP}, 'runtime = "python"\n')
    run = world.start(app_dir)
    run.wait_output("listening on")
    context = ssl.create_default_context(cafile=str(world.ca))
    with socket.create_connection(("127.0.0.1", world.https_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="wsapp.localhost") as tls:
            tls.sendall(
                b"GET /ws HTTP/1.1\r\nHost: wsapp.localhost\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += tls.recv(4096)
            assert head.startswith(b"HTTP/1.1 101"), head
            payload, mask = b"hello", b"\x01\x02\x03\x04"
            masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
            tls.sendall(b"\x81" + bytes([0x80 | len(payload)]) + mask + masked)
            frame = head.split(b"\r\n\r\n", 1)[1]
            while len(frame) < 2 or len(frame) < 2 + frame[1]:
                frame += tls.recv(4096)
            assert frame[0] == 0x81 and frame[2:2 + frame[1]] == b"echo: hello"


def test_the_edge_moves_on_from_a_taken_port_and_says_who_holds_it() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        free = free_port()
        bound = bind_first("127.0.0.1", (taken, free), variable="TAKO_DEV_HTTPS_PORT")
        try:
            assert bound.port == free
            [note] = bound.notes
            assert note.startswith(f"port {taken} is in use by ")
            assert note.endswith(f"(pid {os.getpid()})")
        finally:
            bound.sock.close()
