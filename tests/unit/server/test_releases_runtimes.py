"""Runtime prep commands, start commands and instance environments of a release."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tako_common.errors import TakoError
from tako_common.protocol import ReleaseManifest
from tako_server import runtimes
from tako_server.launch import ReleaseRef, instance_environ
from tako_server.runtimes import PrepError


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")


DEPS = '{"dependencies": {"ms": "^2.1.3"}}'
NPM_QUIET = ["--no-audit", "--no-fund"]


@pytest.mark.parametrize(
    ("runtime", "install", "manager", "files", "expected"),
    [
        ("node", None, None, {"package.json": DEPS, "package-lock.json": "{}"},
         [["npm", "ci", "--omit=dev", *NPM_QUIET]]),
        ("node", None, None, {"package.json": DEPS},
         [["npm", "install", "--omit=dev", *NPM_QUIET]]),
        ("node", None, None, {"package.json": "{}", "package-lock.json": "{}"}, []),
        ("node", None, None, {"package.json": '{"devDependencies": {"vite": "6"}}'}, []),
        ("node", None, None, {"package-lock.json": "{}"}, []),  # a build output without deps
        ("node", None, "pnpm", {"package.json": DEPS, "pnpm-lock.yaml": ""},
         [["pnpm", "install", "--prod", "--frozen-lockfile"]]),
        ("node", None, "pnpm", {"package.json": DEPS}, [["pnpm", "install", "--prod"]]),
        ("node", None, "yarn", {"package.json": DEPS, "yarn.lock": ""},
         [["yarn", "install", "--production", "--frozen-lockfile"]]),
        ("bun", None, None, {"package.json": DEPS}, [["bun", "install", "--production"]]),
        ("bun", None, None, {"package.json": DEPS, "bun.lock": ""},
         [["bun", "install", "--production", "--frozen-lockfile"]]),
        ("bun", None, None, {"package.json": DEPS, "bun.lockb": ""},
         [["bun", "install", "--production", "--frozen-lockfile"]]),
        ("bun", None, "npm", {"package.json": DEPS, "package-lock.json": "{}"},
         [["npm", "ci", "--omit=dev", *NPM_QUIET]]),
        ("deno", None, None, {"package.json": DEPS}, []),
        ("go", None, None, {}, []),
        ("node", "make deps", "pnpm", {"package.json": DEPS}, [["/bin/sh", "-c", "make deps"]]),
        ("python", None, None, {}, []),
    ],
)
def test_prep_commands_by_runtime_package_manager_and_files(
    tmp_path: Path,
    runtime: str,
    install: str | None,
    manager: str | None,
    files: dict[str, str],
    expected: list[list[str]],
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert runtimes.prep_commands(runtime, install, tmp_path, manager) == expected


@pytest.mark.parametrize(
    ("files", "last"),
    [(["requirements.txt"], ["-r", "requirements.txt"]), (["pyproject.toml"], ["."])],
)
def test_python_prep_makes_a_venv_with_the_server_interpreter(
    tmp_path: Path, files: list[str], last: list[str]
) -> None:
    _touch(tmp_path, *files)
    if "requirements.txt" in files:
        (tmp_path / "requirements.txt").write_text("flask==3.0\n")
    venv, deps = runtimes.prep_commands("python", None, tmp_path)
    assert venv == [sys.executable, "-m", "venv", ".venv"]
    assert deps[0] == str(tmp_path / ".venv/bin/python") and deps[-len(last) :] == last


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ({"runtime": "bun", "main": "src/index.ts"}, ["bun", "run", "src/index.ts"]),
        ({"runtime": "node", "main": "server.js"}, ["node", "server.js"]),
        ({"runtime": "deno", "main": "main.ts"}, ["deno", "run", "-A", "main.ts"]),
        ({"runtime": "python", "main": "app.py"}, [sys.executable, "app.py"]),
        (
            {"runtime": "node", "main": "a.js", "start": ["node", "--enable-x", "{main}"]},
            ["node", "--enable-x", "a.js"],
        ),
        (  # only an exact "{main}" argument is replaced (001)
            {"runtime": "node", "main": "a.js", "start": ["x", "--entry={main}", "{main}.map"]},
            ["x", "--entry={main}", "{main}.map"],
        ),
        (
            {
                "runtime": "python",
                "main": "mysite.wsgi:application",
                "start": ["/bin/sh", "-c", 'exec gunicorn "$1"', "gunicorn", "{main}"],
            },
            ["/bin/sh", "-c", 'exec gunicorn "$1"', "gunicorn", "mysite.wsgi:application"],
        ),
    ],
)
def test_start_command_by_runtime_and_override(
    tmp_path: Path, manifest: dict[str, object], expected: list[str]
) -> None:
    assert runtimes.start_command(manifest, tmp_path) == expected


def test_start_command_prefers_the_release_venv_and_absolute_binaries(tmp_path: Path) -> None:
    _touch(tmp_path, ".venv/bin/python")
    assert runtimes.start_command({"runtime": "python", "main": "app.py"}, tmp_path) == [
        str(tmp_path / ".venv/bin/python"),
        "app.py",
    ]
    assert runtimes.start_command({"runtime": "go", "main": "bin/server"}, tmp_path) == [
        str(tmp_path / "bin/server")
    ]


def test_unknown_runtime_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TakoError, match="unsupported runtime 'cobol'"):
        runtimes.start_command({"runtime": "cobol", "main": "x"}, tmp_path)


def _release(workdir: Path, runtime: str, main: str, env: str = "production") -> ReleaseRef:
    manifest = ReleaseManifest(runtime=runtime, main=main)  # type: ignore[arg-type]
    return ReleaseRef("web", env, "v9" if env == "staging" else "v1", workdir, workdir, manifest)


def test_app_environment_merges_vars_secrets_and_tako_names(tmp_path: Path) -> None:
    (tmp_path / "node_modules/.bin").mkdir(parents=True)
    env = instance_environ(
        _release(tmp_path, "node", "a.js", env="staging"),
        variables={"A": "1", "TAKO_ENV": "spoofed", "LANG": "C"},
        secrets={"S": "2"},
        server_env={"PATH": "/usr/bin", "HOME": "/home/tako", "LANG": "de_DE.UTF-8"},
    )
    assert (env["A"], env["S"], env["NODE_ENV"], env["HOME"]) == (
        "1",
        "2",
        "production",
        "/home/tako",
    )
    assert (env["TAKO_ENV"], env["TAKO_BUILD"], env["TAKO_APP_NAME"]) == ("staging", "v9", "web")
    assert env["PATH"].split(":")[:2] == [str(tmp_path / "node_modules/.bin"), "/usr/bin"]
    assert env["LANG"] == "C"  # the server's LANG is a default that [vars] may override


def test_instance_environment_inherits_only_path_home_and_lang(tmp_path: Path) -> None:
    server_env = {"PATH": "/usr/bin", "HOME": "/home/tako", "LANG": "C.UTF-8"}
    env = instance_environ(_release(tmp_path, "python", "app.py"), {}, {}, server_env)
    assert env["LANG"] == "C.UTF-8" and env["PYTHONUNBUFFERED"] == "1"
    assert set(env) == {
        "PATH",
        "HOME",
        "LANG",
        "PYTHONUNBUFFERED",
        "TAKO_ENV",
        "TAKO_BUILD",
        "TAKO_APP_NAME",
    }


async def test_failed_prep_reports_the_last_output_lines(tmp_path: Path) -> None:
    script = "for i in $(seq 1 50); do echo line $i; done; exit 4"
    with pytest.raises(PrepError, match="failed with exit code 4") as info:
        await runtimes.prepare("node", script, tmp_path, {"PATH": "/usr/bin:/bin"})
    assert info.value.tail[-1] == "line 50" and len(info.value.tail) == runtimes.TAIL_LINES
    assert info.value.hint is not None and "line 50" in info.value.hint


async def test_missing_prep_program_is_a_prep_error(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(DEPS)
    with pytest.raises(PrepError, match="could not start"):
        await runtimes.prepare("bun", None, tmp_path, {"PATH": str(tmp_path)})


def test_a_frozen_server_builds_a_node_apps_environment_without_any_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tako_server import runtimes

    monkeypatch.setattr(runtimes.sys, "frozen", True, raising=False)
    monkeypatch.setattr(runtimes.shutil, "which", lambda _name: None)
    environ = instance_environ(
        _release(tmp_path, "node", "server.js"), {}, {}, {"PATH": "/usr/bin:/bin"}
    )
    assert environ["NODE_ENV"] == "production" and environ["PATH"] == "/usr/bin:/bin"


def test_a_located_release_gets_its_data_dir_and_storage_bindings(tmp_path: Path) -> None:
    from tako_common.layout import ServerLayout
    from tako_common.protocol import S3Target, StorageBinding
    from tako_server.launch import ensure_data_dirs

    layout = ServerLayout(tmp_path)
    manifest = ReleaseManifest(runtime="python", main="app.py")
    layout.release_dir("web", "production", "v1").mkdir(parents=True)
    release = ReleaseRef.locate(layout, "web", "production", "v1", manifest)
    target = S3Target(
        bucket="media", endpoint="https://s3.example.com", region="auto",
        access_key_id="AKIA1", secret_access_key="s3cret",
    )
    storages = [
        StorageBinding(name="uploads", provider="local"),
        StorageBinding(name="media", provider="s3", s3=target),
    ]
    env = instance_environ(
        release, {"TAKO_STORAGE_MEDIA_BUCKET": "spoofed"}, {}, {"PATH": "/usr/bin"},
        storages=storages,
    )
    data = tmp_path / "apps" / "web" / "production" / "data"
    assert env["TAKO_DATA_DIR"] == str(data / "app")
    assert env["TAKO_STORAGE_UPLOADS_PATH"] == str(data / "storages" / "uploads")
    assert env["TAKO_STORAGE_MEDIA_BUCKET"] == "media"  # bindings win over [vars]
    assert env["TAKO_STORAGE_MEDIA_SECRET_ACCESS_KEY"] == "s3cret"
    assert env["TAKO_STORAGES"] == "uploads,media"
    ensure_data_dirs(release, storages)
    assert (data / "app").is_dir() and (data / "storages" / "uploads").is_dir()
    assert oct((data / "app").stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize(
    ("text", "declares"),
    [
        ("", False),
        ("\n  \n", False),
        ("# no dependencies: the standard library is enough\n", False),
        ("  # indented comment\n\n", False),
        ("flask==3.0\n", True),
        ("# web\nflask\n", True),
        ("-r base.txt\n", True),
        ("-e .\n", True),
        ("--index-url https://example.org/simple\n", True),
    ],
)
def test_a_requirements_file_declares_something_unless_only_blank_or_comments(
    text: str, declares: bool
) -> None:
    assert runtimes.declares_requirements(text) is declares


def test_python_prep_without_requirements_makes_the_venv_without_pip_and_installs_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "requirements.txt").write_text("# nothing needed\n")
    assert runtimes.prep_commands("python", None, tmp_path) == [
        [sys.executable, "-m", "venv", "--without-pip", ".venv"]
    ]
