"""What a plan resolves to in an app directory: package manager (and where it came from),
main, start, dev and app_root — the one answer deploy, `tako config` and `tako init` use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tako_client.appctx import pick_runtime
from tako_client.build.plan import BuildError, BuildPlan
from tako_client.build.resolve import resolve_app


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize(
    ("runtime", "configured", "files", "manager", "source"),
    [
        ("node", None, {}, "npm", "node default"),
        ("node", None, {"pnpm-lock.yaml": ""}, "pnpm", "pnpm-lock.yaml"),
        ("node", None, {"yarn.lock": ""}, "yarn", "yarn.lock"),
        ("node", None, {"bun.lock": ""}, "bun", "bun.lock"),
        ("bun", None, {"package-lock.json": "{}"}, "npm", "package-lock.json"),
        ("bun", None, {}, "bun", "bun default"),
        ("node", None, {"package.json": '{"packageManager": "yarn@4.0.0"}'}, "yarn",
         "package.json packageManager"),
        ("node", "pnpm", {"package-lock.json": "{}"}, "pnpm", "tako.toml"),  # tako.toml wins
        ("deno", None, {"package-lock.json": "{}"}, None, ""),  # deno: only when named
        ("deno", "npm", {}, "npm", "tako.toml"),
        ("python", None, {"package-lock.json": "{}"}, None, ""),
        ("go", None, {}, None, ""),
    ],
)
def test_package_manager_detection(
    tmp_path: Path,
    runtime: str,
    configured: str | None,
    files: dict[str, str],
    manager: str | None,
    source: str,
) -> None:
    tree(tmp_path, files)
    resolved = resolve_app(BuildPlan(runtime=runtime, package_manager=configured), tmp_path)
    assert (resolved.package_manager, resolved.package_manager_source) == (manager, source)


@pytest.mark.parametrize(
    ("plan", "files", "message"),
    [
        (BuildPlan(runtime="python", package_manager="pnpm"), {},
         "package_manager 'pnpm' applies to JS runtimes"),
        (BuildPlan(runtime="go", app_root="src"), {}, "app_root applies to JS runtimes"),
        (BuildPlan(runtime="node", app_root="workflows"), {}, "app_root 'workflows' is not a "
         "directory"),
        (BuildPlan(runtime="node", main="main:app"), {}, "is a Python module specifier"),
        (BuildPlan(runtime="python", main="main:app"), {"requirements.txt": "flask\n"},
         "list uvicorn \\(ASGI\\) or gunicorn \\(WSGI\\)"),
        (BuildPlan(runtime="python", preset="fastapi"), {"requirements.txt": "fastapi\n"},
         "is an ASGI app: list uvicorn"),
        (BuildPlan(runtime="node", preset="js/vite"), {}, "namespaced aliases"),
        (BuildPlan(runtime="node", preset="tanstack"), {}, "unknown preset 'tanstack'"),
    ],
)
def test_what_deploy_would_refuse_is_refused_when_resolving(
    tmp_path: Path, plan: BuildPlan, files: dict[str, str], message: str
) -> None:
    tree(tmp_path, files)
    with pytest.raises(BuildError, match=message):
        resolve_app(plan, tmp_path)


@pytest.mark.parametrize(
    ("plan", "files", "main", "start", "dev"),
    [
        (BuildPlan(runtime="node"), {"src/index.js": ""}, "src/index.js", None,
         ["node", "--watch", "src/index.js"]),
        (BuildPlan(runtime="node", start=("node", "--x={main}", "{main}")), {}, "index.js",
         ["node", "--x={main}", "index.js"], ["node", "--watch", "index.js"]),
        (BuildPlan(runtime="node", preset="remix"), {}, "build/server/index.js",
         ["remix-serve", "build/server/index.js"], ["remix", "vite:dev"]),
        (BuildPlan(runtime="node", preset="remix", start=("node", "server.mjs")), {},
         "build/server/index.js", ["node", "server.mjs"], ["remix", "vite:dev"]),
        (BuildPlan(runtime="python", preset="fastapi"), {"requirements.txt": "uvicorn\n"},
         "main:app",
         ["/bin/sh", "-c", 'exec uvicorn --host "$HOST" --port "$PORT" "$1"', "uvicorn",
          "main:app"],
         ["uvicorn", "--reload", "main:app"]),
        (BuildPlan(runtime="python", preset="django"),
         {"requirements.txt": "django\ngunicorn\n", "mysite/wsgi.py": "", "mysite/asgi.py": ""},
         "mysite.wsgi:application",
         ["/bin/sh", "-c", 'exec gunicorn --bind "$HOST:$PORT" --access-logfile - "$1"',
          "gunicorn", "mysite.wsgi:application"],
         ["python", "manage.py", "runserver"]),
        (BuildPlan(runtime="python", preset="django"),
         {"requirements.txt": "django\nuvicorn\n", "mysite/wsgi.py": "", "mysite/asgi.py": ""},
         "mysite.asgi:application",
         ["/bin/sh", "-c", 'exec uvicorn --host "$HOST" --port "$PORT" "$1"', "uvicorn",
          "mysite.asgi:application"],
         ["python", "manage.py", "runserver"]),
        (BuildPlan(runtime="python"), {"app.py": ""}, "app.py", None, ["python", "app.py"]),
    ],
)
def test_main_start_and_dev_resolve_with_exact_main_arguments(
    tmp_path: Path,
    plan: BuildPlan,
    files: dict[str, str],
    main: str,
    start: list[str] | None,
    dev: list[str],
) -> None:
    tree(tmp_path, files)
    resolved = resolve_app(plan, tmp_path)
    assert (resolved.main, resolved.start_argv, resolved.dev_argv) == (main, start, dev)


@pytest.mark.parametrize(
    ("runtime", "configured", "expected"),
    [("node", None, "src"), ("bun", ".", "."), ("deno", "app", "app"), ("python", None, None)],
)
def test_app_root_defaults_to_src_for_js_runtimes(
    tmp_path: Path, runtime: str, configured: str | None, expected: str | None
) -> None:
    (tmp_path / "app").mkdir()
    plan = BuildPlan(runtime=runtime, app_root=configured)
    assert resolve_app(plan, tmp_path).app_root == expected


@pytest.mark.parametrize(
    ("configured", "preset", "files", "expected"),
    [
        ("bun", "vite", {}, "bun"),
        (None, "vite", {"bun.lock": "", "package.json": "{}"}, "bun"),
        (None, "vite", {"package.json": "{}"}, "node"),
        (None, "vite", {}, "node"),  # nothing detected: the preset's first runtime
        (None, "django", {"package.json": "{}"}, "python"),  # detected node does not fit
        (None, "nextjs", {"deno.json": "{}"}, "node"),
        (None, None, {"requirements.txt": ""}, "python"),
    ],
)
def test_runtime_comes_from_tako_toml_then_files_that_fit_the_preset(
    tmp_path: Path, configured: str | None, preset: str | None, files: dict[str, str],
    expected: str,
) -> None:
    tree(tmp_path, files)
    assert pick_runtime(configured, preset, tmp_path) == expected


def test_package_json_packagemanager_with_a_version_is_read(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"packageManager": "pnpm@10.0.0+sha"}))
    assert resolve_app(BuildPlan(runtime="node"), tmp_path).package_manager == "pnpm"
