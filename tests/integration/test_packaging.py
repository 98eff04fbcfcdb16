"""How tako-server ships: systemd unit, release build, executable, Docker files, examples.

Fast checks read the real files (unit directives, the unit embedded in the installer, the
example settings against the server's own settings parser, the Dockerfile's stages and
COPY sources, the PyInstaller entry script). ``systemd-analyze verify`` checks the real
unit text inside a throw-away root that holds the binaries it names. The slow checks run
``scripts/build-release`` (cached under build/ by source hash) and the executable it made.
Docker is not available here, so the Dockerfile is checked statically, and its builder
stage is replayed without Docker: the files it COPYs, alone, must build the executable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tako_server.settings import read_config_file
from tests.helpers import release

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "tako-server.service"
INSTALLER = REPO / "scripts" / "install-server.sh"
EXAMPLE_CONFIG = REPO / "packaging" / "server-config.example.toml"
EXEC_START = "/usr/local/bin/tako-server run --data-dir /opt/tako --socket /var/run/tako/tako.sock"


def unit_directives(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values, in order, of a systemd unit file."""
    found: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault((section, key.strip()), []).append(value.strip())
    return found


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("Service", "Type", "notify"),
        ("Service", "NotifyAccess", "all"),
        ("Service", "User", "tako"),
        ("Service", "Group", "tako"),
        ("Service", "ExecStart", EXEC_START),
        ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Service", "Restart", "always"),
        ("Service", "RestartSec", "1"),
        ("Service", "KillMode", "process"),
        ("Service", "ExecStop", "/usr/local/bin/tako-server prepare-stop --data-dir /opt/tako"),
        ("Service", "TimeoutStopSec", "30min"),
        ("Service", "RuntimeDirectory", "tako"),
        ("Service", "RuntimeDirectoryMode", "0700"),
        ("Service", "RuntimeDirectoryPreserve", "yes"),
        ("Service", "LimitNOFILE", "1048576"),
        ("Service", "AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("Service", "CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("Service", "NoNewPrivileges", "true"),
        ("Service", "ProtectSystem", "full"),
        ("Service", "PrivateTmp", "yes"),
        ("Service", "ReadWritePaths", "/opt/tako"),
        ("Install", "WantedBy", "multi-user.target"),
    ],
)
def test_unit_sets_directive(section: str, key: str, value: str) -> None:
    assert unit_directives(UNIT.read_text())[(section, key)] == [value]


@pytest.mark.parametrize("key", ["MemoryDenyWriteExecute", "ProtectHome", "SystemCallFilter"])
def test_unit_leaves_out_hardening_that_breaks_app_runtimes(key: str) -> None:
    assert ("Service", key) not in unit_directives(UNIT.read_text())


def _fake_root(tmp_path: Path, unit_text: str) -> Path:
    """A root with systemd's own units, /bin/kill and an executable tako-server."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "bin").mkdir()
    shutil.copy2("/bin/kill", root / "bin" / "kill")
    binary = root / "usr/local/bin/tako-server"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "tako-server.service").write_text(unit_text)
    return root


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "tako-server.service"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(not Path("/usr/lib/systemd/system").is_dir(), reason="needs systemd's units")
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    ("mutation", "clean"),
    [(None, True), (("KillMode=process", "KillMode=sometimes"), False)],
)
def test_systemd_analyze_verify_accepts_the_real_unit_and_flags_a_broken_one(
    tmp_path: Path, mutation: tuple[str, str] | None, clean: bool
) -> None:
    text = UNIT.read_text()
    if mutation is not None:
        text = text.replace(*mutation)
    result = _verify(_fake_root(tmp_path, text))
    assert result.returncode == 0, result.stderr
    assert (result.stderr.strip() == "") is clean, result.stderr


def test_installer_embeds_the_unit_file_verbatim() -> None:
    script = INSTALLER.read_text()
    start = script.index("cat <<'UNIT'\n") + len("cat <<'UNIT'\n")
    end = script.index("\nUNIT\n", start)
    assert script[start:end] + "\n" == UNIT.read_text()


def test_example_settings_are_accepted_by_the_server_with_every_key_uncommented(
    tmp_path: Path,
) -> None:
    assert read_config_file(EXAMPLE_CONFIG) == {}
    uncommented = re.sub(r"^# (\w+ = )", r"\1", EXAMPLE_CONFIG.read_text(), flags=re.MULTILINE)
    path = tmp_path / "server-config.toml"
    path.write_text(uncommented)
    settings = read_config_file(path)
    assert {"http_port", "https_port", "workers", "acme_email", "acme_enabled"} <= set(settings)


def _entry_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "tako_server_main", REPO / "packaging" / "tako_server_main.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["tako-server", "run", "--data-dir", "/opt/tako"], None),
        (["tako-server", "version"], None),
        (["tako-server", "-m", "tako_server.edge", "--channel-fd", "3"], "tako_server.edge"),
        (["tako-server", "-m", "tako_server"], "tako_server"),
    ],
)
def test_entry_script_runs_tako_server_modules_like_python_dash_m(
    argv: list[str], module: str | None
) -> None:
    assert _entry_module().module_to_run(argv) == module


@pytest.mark.parametrize("module", ["os", "tako_serverx", "tako_common.names"])
def test_entry_script_refuses_modules_outside_tako_server(module: str) -> None:
    with pytest.raises(SystemExit, match="runs only modules of tako_server"):
        _entry_module().module_to_run(["tako-server", "-m", module])


@pytest.mark.parametrize(
    ("environ", "frozen", "expected"),
    [
        ({"LD_LIBRARY_PATH": "/tmp/_MEI1", "A": "1"}, True, {"A": "1"}),
        (
            {"LD_LIBRARY_PATH": "/tmp/_MEI1:/opt/lib", "LD_LIBRARY_PATH_ORIG": "/opt/lib"},
            True,
            {"LD_LIBRARY_PATH": "/opt/lib"},
        ),
        ({"LD_LIBRARY_PATH": "/opt/lib"}, False, {"LD_LIBRARY_PATH": "/opt/lib"}),
    ],
)
def test_entry_script_hides_the_bundle_loader_path_from_children(
    environ: dict[str, str], frozen: bool, expected: dict[str, str]
) -> None:
    _entry_module().clean_frozen_environment(environ, frozen)
    assert environ == expected


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions (NAME, arguments) of each stage, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text()
    logical = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
    )
    stages: list[list[tuple[str, str]]] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        name, _, args = line.strip().partition(" ")
        if name.upper() == "FROM":
            stages.append([])
        stages[-1].append((name.upper(), " ".join(args.split())))
    return stages


def _args(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in stage if instruction == name]


def test_dockerfile_builds_in_a_builder_stage_and_ships_only_the_executable() -> None:
    builder, runtime = dockerfile_stages()
    assert _args(builder, "FROM") == ["python:3.11-slim-bookworm AS builder"]
    assert any("./scripts/build-release --server-only" in a for a in _args(builder, "RUN"))
    assert _args(runtime, "FROM") == ["debian:12-slim AS runtime"]
    assert all("--from=builder" in a for a in _args(runtime, "COPY"))
    assert not any("python" in a for a in _args(runtime, "RUN"))
    assert not any("setcap" in a for a in _args(runtime, "RUN"))
    assert _args(runtime, "USER") == ["tako"]
    assert any("--uid 1000" in a for a in _args(runtime, "RUN"))
    assert _args(runtime, "VOLUME") == ["/opt/tako"]
    assert _args(runtime, "EXPOSE") == ["80 443"]
    assert json.loads(_args(runtime, "ENTRYPOINT")[0]) == EXEC_START.split()


def _builder_copy_sources() -> list[str]:
    builder = dockerfile_stages()[0]
    sources = []
    for args in _args(builder, "COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        sources += parts[:-1]
    return sources


def test_every_dockerfile_copy_source_exists_and_is_not_docker_ignored() -> None:
    ignored = {
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    for source in _builder_copy_sources():
        assert (REPO / source).exists(), source
        assert source.split("/")[0] not in ignored, source


def test_compose_file_publishes_web_ports_and_keeps_data_in_a_named_volume() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    service = compose["services"]["tako-server"]
    assert service["ports"] == ["80:80", "443:443"]
    assert service["volumes"] == ["tako-data:/opt/tako"]
    assert "tako-data" in compose["volumes"]
    assert service["sysctls"]["net.ipv4.ip_unprivileged_port_start"] == "0"


# --------------------------------------------------------------------------- slow: real build

needs_daemon = pytest.mark.skipif(
    not release.daemon_sources_present(), reason="tako_server/cli.py does not exist yet"
)


def _run_frozen(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the executable with no Python anywhere on PATH."""
    return subprocess.run(
        [str(binary), *args],
        env={"PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
@needs_daemon
def test_build_release_makes_a_verified_tarball_of_a_self_contained_executable(
    tmp_path: Path,
) -> None:
    tarball = release.build_release(wheel=True)
    assert tarball.name == f"tako-server-{release.target()}.tar.gz"
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert Path(f"{tarball}.sha256").read_text() == f"{digest}  {tarball.name}\n"
    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["LICENSE", "server-config.example.toml", "tako-server"]
        assert members["tako-server"].mode & 0o111
        tar.extractall(tmp_path, **_DATA_FILTER)
    result = _run_frozen(tmp_path / "tako-server", "version")
    assert (result.returncode, result.stdout) == (0, f"tako-server {release.package_version()}\n")
    wheels = list((REPO / "dist").glob(f"tako-{release.package_version()}-py3-none-any.whl"))
    assert len(wheels) == 1


# tarfile's extraction filters exist from Python 3.11.4 on; Debian 12 has 3.11.2 (the
# member names were checked just above, so plain extraction is safe there).
_DATA_FILTER: dict[str, str] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


@pytest.mark.slow
@needs_daemon
def test_pipx_install_of_the_wheel_puts_working_tako_commands_on_path(tmp_path: Path) -> None:
    """A user's install: pipx, Debian's Python, nothing from the checkout on PATH."""
    release.build_release(wheel=True)
    (wheel,) = (REPO / "dist").glob(f"tako-{release.package_version()}-py3-none-any.whl")
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(home),
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(bin_dir),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
    }
    base = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    done = subprocess.run(
        [sys.executable, "-m", "pipx", "install", "--python", base, str(wheel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    version = release.package_version()

    def run(*argv: str, cwd: Path = tmp_path) -> str:
        result = subprocess.run(
            argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        return result.stdout

    assert run("tako", "--version").strip() == f"tako {version}"
    assert run("tako-server", "version").strip() == f"tako-server {version}"
    assert run("tako-server", "--version").strip() == f"tako-server {version}"
    app = tmp_path / "web"
    app.mkdir()
    (app / "app.py").write_text("print('hello')\n")
    run("tako", "init", cwd=app)  # the template ships in the wheel
    text = (app / "tako.toml").read_text()
    assert 'runtime = "python"' in text
    assert "python" in run("tako", "config", "--env", "production", cwd=app)  # presets too
    site = tmp_path / "site"
    site.mkdir()
    (site / "package.json").write_text('{"devDependencies": {"vite": "6"}}')
    run("tako", "init", cwd=site)  # framework presets and their support files ship too
    assert "tako-static-server.mjs" in run("tako", "config", "--json", cwd=site)


BUNDLED_MODULES = [
    "uvloop.loop",
    "httptools.parser.parser",
    "cryptography.hazmat.bindings._rust",
    "pydantic_core._pydantic_core",
    "pydantic_settings",
    "acme.client",
    "josepy",
    "aiohttp.web",
    "OpenSSL.crypto",
    "zstandard.backend_c",
    "_sqlite3",
    "tako_server.daemon",
    "tako_server.edge.__main__",
]


@pytest.mark.slow
@needs_daemon
@pytest.mark.parametrize("module", BUNDLED_MODULES)
def test_executable_bundles_native_and_lazily_imported_modules(module: str) -> None:
    release.build_release()
    analysis = (REPO / "build/pyinstaller/build-tmp/tako-server/Analysis-00.toc").read_text()
    as_path = "'" + module.replace(".", "/") + "."
    assert f"'{module}'" in analysis or as_path in analysis


@pytest.mark.slow
@needs_daemon
def test_executable_runs_tako_server_modules_and_refuses_others() -> None:
    release.build_release()
    binary = release.EXECUTABLE
    refused = _run_frozen(binary, "-m", "os")
    assert refused.returncode != 0 and "runs only modules of tako_server" in refused.stderr
    worker = _run_frozen(binary, "-m", "tako_server.edge", "--help")
    assert (worker.returncode, "--channel-fd" in worker.stdout) == (0, True), worker.stderr


@pytest.mark.slow
@needs_daemon
def test_docker_builder_stage_builds_from_the_files_it_copies(tmp_path: Path) -> None:
    context = tmp_path / "src"
    for source in _builder_copy_sources():
        target = context / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / source, target)
    # The build venv holds only pyproject's dependencies and PyInstaller, keyed (its stamp)
    # by pyproject.toml, the PyInstaller requirement and `python -VV`: the checkout's venv has
    # the same key, so the replay reuses it (a fresh one is minutes of pip) and still builds
    # the executable from the copied files alone (a wrong key would rebuild it in the copy).
    release.build_release()
    (context / "build").mkdir()
    (context / "build" / "release-venv").symlink_to(REPO / "build" / "release-venv")
    env = {**os.environ, "PYTHON": sys.executable, "SOURCE_DATE_EPOCH": "0"}
    build = subprocess.run(
        [str(context / "scripts" / "build-release"), "--server-only"],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
        timeout=release.BUILD_TIMEOUT,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert (context / "dist" / f"tako-server-{release.target()}.tar.gz").is_file()
