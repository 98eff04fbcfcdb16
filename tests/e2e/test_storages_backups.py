"""Storages and backups end to end: the real ``tako`` CLI, a real host (sshd + tako-server
in a network namespace) and a real S3 API server (moto_server with TLS, inside that host's
namespace, its CA given to tako-server through ``TAKO_STORAGE_CA_BUNDLE``).

The tests of this module run in order on one app (``tests/apps/storageapp``): deploy is
refused without credentials; the S3 binding reaches the app, which puts and gets an
object with what it got; a note in its ``local`` storage and a row in its SQLite database
are backed up (the bucket holds no plaintext), wiped, restored and served again; the
backup decrypts locally; another app's backup is refused; wrong credentials make
``tako backups now`` fail loudly; a second server with a ``local`` binding is refused.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from tests.e2e.hosts import ClientHome, HostNetwork, TestHost, wait_for
from tests.helpers.s3 import (
    S3Account,
    TestCA,
    make_credentials,
    moto_argv,
    moto_available,
    wait_listening,
)

APP_SOURCE = Path(__file__).resolve().parents[1] / "apps" / "storageapp" / "app.py"
ROUTE = "vault-app.test"
OTHER_ROUTE = "other-app.test"
S3_PORT = 9443
ID_RE = re.compile(r"backup (\d{8}T\d{6}Z-[0-9a-f]{6}) stored and verified")


@pytest.fixture(scope="module")
def ca(host_network: HostNetwork) -> TestCA:
    if not moto_available():
        pytest.skip("moto_server is missing (pip install 'moto[server]'; run scripts/setup)")
    directory = host_network.root / "s3"
    directory.mkdir(mode=0o755, exist_ok=True)
    return TestCA(directory)


@pytest.fixture(scope="module")
def hosts(make_hosts: Callable[..., list[TestHost]], ca: TestCA) -> list[TestHost]:
    return make_hosts(2, server_env={"TAKO_STORAGE_CA_BUNDLE": str(ca.pem)})


@pytest.fixture(scope="module")
def s3(hosts: list[TestHost], ca: TestCA) -> Iterator[S3Account]:
    """moto_server in the first host's namespace on :9443 (127.0.0.1 there, its address here)."""
    host = hosts[0]
    cert, key = ca.issue("s3-server", ["127.0.0.1", host.address])
    proc = host.spawn(moto_argv(cert, key, S3_PORT), user="root", log_name="moto")
    try:
        wait_listening(host.address, S3_PORT)
        account = make_credentials(f"https://{host.address}:{S3_PORT}", ca.pem)
        for bucket in ("app-media", "app-backups"):
            account.client().create_bucket(Bucket=bucket)
        yield account
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def cli(
    host_network: HostNetwork, hosts: list[TestHost], tmp_path_factory: pytest.TempPathFactory
) -> ClientHome:
    home = host_network.client_home(tmp_path_factory.mktemp("storage-client"))
    for host in hosts:
        done = home.run_tako("servers", "add", host.address, "--name", host.name)
        assert done.returncode == 0, done.stdout + done.stderr
    return home


def _write_app(directory: Path, name: str, route: str, body: str) -> Path:
    directory.mkdir(parents=True)
    shutil.copy(APP_SOURCE, directory / "app.py")
    (directory / "tako.toml").write_text(
        f'name = "{name}"\nruntime = "python"\nmain = "app.py"\n\n' + body.replace("@ROUTE", route)
    )
    return directory


STORAGES = """
[storages.media]
provider = "s3"
bucket = "app-media"
endpoint = "https://127.0.0.1:9443"
region = "us-east-1"
force_path_style = true

[storages.backups]
provider = "s3"
bucket = "app-backups"
endpoint = "https://127.0.0.1:9443"
region = "us-east-1"
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, ca: TestCA, hosts: list[TestHost]) -> Path:
    body = f"""[vars]
S3_CA = "{ca.pem}"

[envs.production]
route = "@ROUTE"
servers = ["{hosts[0].name}"]
storages = {{ files = "local", media = "media" }}
backup = {{ storage = "backups", keep_daily = 3 }}
{STORAGES}"""
    return _write_app(tmp_path_factory.mktemp("apps") / "vault", "vault-app", ROUTE, body)


def tako(
    cli: ClientHome, app: Path | None, *args: str, **kw: object
) -> subprocess.CompletedProcess[str]:
    extra = ("-c", str(app / "tako.toml")) if app is not None else ()
    return cli.run_tako(*args, *extra, timeout=300, **kw)  # type: ignore[arg-type]


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def failed(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, f"unexpected success\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def get(host: TestHost, route: str, path: str) -> object:
    done = host.curl(f"https://{route}{path}", "-k", "--fail", timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def set_credentials(cli: ClientHome, app: Path, resource: str, s3: S3Account, secret: str) -> None:
    ok(
        tako(
            cli,
            app,
            "storages",
            "credentials",
            resource,
            "--env",
            "production",
            input=f"{s3.access_key_id}\n{secret}\n",
        )
    )


def backup_now(cli: ClientHome, app: Path) -> str:
    out = ok(tako(cli, app, "backups", "now", "--env", "production"))
    found = ID_RE.search(out)
    assert found, out
    return found.group(1)


def test_deploy_is_refused_before_any_upload_without_credentials(
    cli: ClientHome, hosts: list[TestHost], app: Path, s3: S3Account
) -> None:
    out = failed(tako(cli, app, "deploy", "--yes"))
    assert "storage credentials missing for environment 'production': media, backups" in out
    assert "Build" not in out
    assert not (hosts[0].paths.opt / "incoming").exists() or not list(
        (hosts[0].paths.opt / "incoming").glob("*.tar.zst")
    )


def test_credentials_are_stored_encrypted_and_deploy_hands_the_bindings_over(
    cli: ClientHome, hosts: list[TestHost], app: Path, s3: S3Account
) -> None:
    for resource in ("media", "backups"):
        set_credentials(cli, app, resource, s3, s3.secret_access_key)
    secrets_file = (app / ".tako" / "secrets.json").read_text()
    assert s3.secret_access_key not in secrets_file and s3.access_key_id not in secrets_file
    listing = ok(tako(cli, app, "storages", "ls"))
    assert "MISSING" not in listing and "media" in listing and "(backup)" in listing
    out = ok(tako(cli, app, "deploy", "--yes"))
    assert "made backup key k" in out
    env = get(hosts[0], ROUTE, "/env")
    assert isinstance(env, dict)
    data = "/opt/tako/apps/vault-app/production/data"
    assert env["TAKO_DATA_DIR"] == f"{data}/app"
    assert env["TAKO_STORAGE_FILES_PATH"] == f"{data}/storages/files"
    assert env["TAKO_STORAGE_MEDIA_BUCKET"] == "app-media"
    assert env["TAKO_STORAGE_MEDIA_FORCE_PATH_STYLE"] == "true"
    assert env["TAKO_STORAGES"] == "files,media"
    for app_json in hosts[0].paths.opt.glob("apps/vault-app/production/releases/*/app.json"):
        assert s3.secret_access_key not in app_json.read_text()
    log = hosts[0].log_tail("tako-server", 500)
    assert s3.secret_access_key not in log


def test_the_app_puts_and_gets_an_object_with_its_binding(
    hosts: list[TestHost], app: Path, s3: S3Account
) -> None:
    assert get(hosts[0], ROUTE, "/s3?key=hello.txt&value=from-the-app") == "from-the-app"
    body = s3.client().get_object(Bucket="app-media", Key="hello.txt")["Body"].read()
    assert body == b"from-the-app"


def test_backup_restore_brings_back_the_local_storage_and_the_database(
    cli: ClientHome, hosts: list[TestHost], app: Path, s3: S3Account
) -> None:
    host = hosts[0]
    get(host, ROUTE, "/write?text=first-note-7d1f")
    backup_id = backup_now(cli, app)
    objects = s3.client().list_objects_v2(Bucket="app-backups")["Contents"]
    key = f"_tako/backups/vault-app/production/{host.name}/{backup_id}.tkb"
    assert [o["Key"] for o in objects] == [key]
    blob = s3.client().get_object(Bucket="app-backups", Key=key)["Body"].read()
    assert blob.startswith(b"TAKOBKP1")
    for plaintext in (b"first-note-7d1f", b"SQLite format 3", b"note.txt", b"app.db"):
        assert plaintext not in blob
    assert backup_id in ok(tako(cli, app, "backups", "ls", "--env", "production"))
    assert "last ok : " + backup_id in ok(tako(cli, app, "backups", "status"))

    host.exec(
        "rm -rf /opt/tako/apps/vault-app/production/data/app/* "
        "/opt/tako/apps/vault-app/production/data/storages/files/*",
        user="tako",
    )
    assert get(host, ROUTE, "/read") == {"note": None, "rows": []}
    get(host, ROUTE, "/write?text=after-the-wipe")

    out = ok(tako(cli, app, "backups", "restore", backup_id, "--yes"))
    assert f"restored backup {backup_id}" in out
    wait_for(
        lambda: host.curl(f"https://{ROUTE}/status", "-k", "--fail").returncode == 0,
        "the app after the restore",
        timeout=30,
    )
    assert get(host, ROUTE, "/read") == {"note": "first-note-7d1f", "rows": ["first-note-7d1f"]}


def test_a_downloaded_backup_decrypts_locally_with_the_keys_of_secrets_json(
    cli: ClientHome, app: Path, tmp_path: Path
) -> None:
    listing = ok(tako(cli, app, "backups", "ls"))
    backup_id = re.findall(r"\d{8}T\d{6}Z-[0-9a-f]{6}", listing)[0]
    encrypted = tmp_path / "b.tkb"
    ok(tako(cli, app, "backups", "download", backup_id, "-o", str(encrypted)))
    assert encrypted.read_bytes().startswith(b"TAKOBKP1")
    plain = tmp_path / "b.tar.zst"
    ok(tako(cli, app, "backups", "download", backup_id, "--decrypt", "-o", str(plain)))
    raw = zstandard.ZstdDecompressor().stream_reader(plain.open("rb")).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
        note = tar.extractfile("data/storages/files/note.txt")
        assert note is not None and note.read() == b"first-note-7d1f"
    assert "data/app/app.db" in names


def test_a_backup_of_another_app_is_refused(
    cli: ClientHome,
    hosts: list[TestHost],
    app: Path,
    s3: S3Account,
    tmp_path_factory: pytest.TempPathFactory,
    ca: TestCA,
) -> None:
    body = f"""[vars]
S3_CA = "{ca.pem}"

[envs.production]
route = "@ROUTE"
servers = ["{hosts[0].name}"]
backup = {{ storage = "backups" }}
{STORAGES}"""
    other = _write_app(tmp_path_factory.mktemp("apps") / "other", "other-app", OTHER_ROUTE, body)
    set_credentials(cli, other, "backups", s3, s3.secret_access_key)
    ok(tako(cli, other, "deploy", "--yes"))
    other_id = backup_now(cli, other)
    out = failed(tako(cli, app, "backups", "restore", other_id, "--yes"))
    assert f"backup {other_id} belongs to other-app/production, not vault-app/production" in out
    assert get(hosts[0], ROUTE, "/read") == {"note": "first-note-7d1f", "rows": ["first-note-7d1f"]}


def test_wrong_credentials_make_backups_fail_loudly(
    cli: ClientHome, hosts: list[TestHost], app: Path, s3: S3Account
) -> None:
    set_credentials(cli, app, "backups", s3, "not-the-secret")
    ok(tako(cli, app, "deploy", "--yes"))
    out = failed(tako(cli, app, "backups", "now", "--env", "production"))
    assert "backup of vault-app/production failed" in out and "SignatureDoesNotMatch" in out
    status = failed(tako(cli, app, "backups", "status"))
    assert "FAILED" in status and "SignatureDoesNotMatch" in status
    servers = tako(cli, None, "servers", "status")
    assert "BACKUP FAILED" in servers.stdout + servers.stderr
    set_credentials(cli, app, "backups", s3, s3.secret_access_key)  # heal for later tests
    ok(tako(cli, app, "deploy", "--yes"))
    backup_now(cli, app)
    assert "BACKUP FAILED" not in ok(tako(cli, None, "servers", "status"))


def test_a_local_binding_on_a_second_server_is_refused(
    cli: ClientHome, hosts: list[TestHost], tmp_path_factory: pytest.TempPathFactory
) -> None:
    body = f"""[envs.production]
route = "@ROUTE"
servers = ["{hosts[0].name}", "{hosts[1].name}"]
storages = {{ files = "local" }}
"""
    crowded = _write_app(
        tmp_path_factory.mktemp("apps") / "crowded", "crowded", "crowded.test", body
    )
    out = failed(tako(cli, crowded, "deploy", "--yes"))
    assert "local storage deploys only to single-server environments" in out
    for host in hosts:
        assert not (host.paths.opt / "apps" / "crowded").exists()
