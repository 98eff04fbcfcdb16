"""Build stage planning and execution, asset merging, artifact file selection, main check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tako_client.build.plan import BuildError, BuildPlan, Stage, Target
from tako_client.build.presets import load_preset
from tako_client.build.stages import (
    PatternSet,
    StageRun,
    build_env,
    check_main,
    merge_assets,
    plan_stage_runs,
    run_command,
    run_stages,
    select_artifact_files,
)


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture
def node_ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    make_tree(
        ws,
        {
            "apps/web/package.json": json.dumps({"scripts": {"build": "tsc"}}),
            "apps/web/package-lock.json": "{}",
            "packages/ui/x": "",
        },
    )
    return ws


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (
            BuildPlan(runtime="node"),
            [StageRun("build", "apps/web", "npm ci", "npm run build")],
        ),
        (
            BuildPlan(runtime="node", build=Stage("build", run="make web")),
            [StageRun("build", "apps/web", "npm ci", "make web")],
        ),
        (
            BuildPlan(runtime="node", build=Stage("build", install="pnpm i")),
            [StageRun("build", "apps/web", "pnpm i", "npm run build")],
        ),
        (
            BuildPlan(
                runtime="node",
                stages=(
                    Stage("ui", cwd="../../packages/ui", run="make", exclude=("*.map",)),
                    Stage("web", install="npm i", run="npm run build"),
                ),
            ),
            [
                StageRun("ui", "packages/ui", None, "make", ("*.map",)),
                StageRun("web", "apps/web", "npm i", "npm run build"),
            ],
        ),
    ],
    ids=[
        "preset-default",
        "build-run-keeps-preset-install",
        "build-install-keeps-preset-run",
        "stages-only",
    ],
)
def test_stage_precedence_is_stages_then_build_then_preset(
    node_ws: Path, plan: BuildPlan, expected: list[StageRun]
) -> None:
    assert plan_stage_runs(plan, load_preset("node"), node_ws, "apps/web") == expected


def test_stage_cwd_escaping_the_workspace_is_rejected(node_ws: Path) -> None:
    plan = BuildPlan(runtime="node", stages=(Stage("evil", cwd="../../../outside", run="x"),))
    with pytest.raises(BuildError, match="escapes the source workspace"):
        plan_stage_runs(plan, load_preset("node"), node_ws, "apps/web")


def test_stage_with_missing_working_directory_is_rejected(node_ws: Path) -> None:
    plan = BuildPlan(runtime="node", stages=(Stage("web", cwd="nope", run="x"),))
    with pytest.raises(BuildError, match="working directory 'apps/web/nope' does not exist"):
        plan_stage_runs(plan, load_preset("node"), node_ws, "apps/web")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"build": Stage("b", run="x"), "stages": (Stage("s", run="y"),)}, "mutually exclusive"),
        ({"build": Stage("b", cwd="../x")}, r"\[build\].cwd '../x' must stay inside"),
        ({"assets": ("../shared",)}, "asset directory"),
        ({"main": "/abs/app.py"}, "main"),
    ],
)
def test_build_plan_rejects_inputs_breaking_its_rules(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(BuildError, match=message):
        BuildPlan(runtime="python", **kwargs)  # type: ignore[arg-type]


def test_commands_stream_output_lines_and_keep_the_callers_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "tako-test-tool"
    tool.write_text("#!/bin/sh\necho tool-ran\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    env = build_env(load_preset("python"), None, "v1")
    lines: list[str] = []
    run_command("s", "echo one; echo two >&2; tako-test-tool", tmp_path, env, lines.append)
    assert lines == ["$ echo one; echo two >&2; tako-test-tool", "one", "two", "tool-ran"]


def test_failed_command_names_stage_command_exit_code_and_last_output(tmp_path: Path) -> None:
    env = build_env(load_preset("python"), None, "v1")
    command = "for i in $(seq 1 30); do echo line$i; done; exit 3"
    with pytest.raises(BuildError) as info:
        run_command("web", command, tmp_path, env, lambda _line: None)
    assert str(info.value) == f"build stage 'web' failed: `{command}` exited with code 3"
    assert info.value.hint is not None
    assert (
        "line30" in info.value.hint
        and "line11" in info.value.hint
        and "line10\n" not in info.value.hint
    )


def test_stages_run_install_then_run_in_their_cwd_and_stop_at_first_failure(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a/.keep": "", "b/.keep": ""})
    runs = [
        StageRun("a", "a", "echo install > log", "echo run >> log"),
        StageRun("b", "b", None, "false"),
        StageRun("c", "a", None, "echo never >> log"),
    ]
    with pytest.raises(BuildError, match="build stage 'b' failed"):
        run_stages(runs, tmp_path, build_env(load_preset("python"), None, "v1"), lambda _line: None)
    assert (tmp_path / "a" / "log").read_text() == "install\nrun\n"


def test_go_target_sets_cross_compilation_environment() -> None:
    env = build_env(load_preset("go"), Target("aarch64", "musl"), "v1")
    assert (env["GOOS"], env["GOARCH"], env["CGO_ENABLED"]) == ("linux", "arm64", "0")
    assert env["TAKO_TARGET"] == "linux-aarch64-musl" and env["TAKO_BUILD"] == "v1"


def test_assets_merge_into_public_in_order_later_entries_win(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {
            "public/keep.txt": "keep",
            "dist/client/a.js": "first",
            "dist/client/shared.css": "first",
            "static/shared.css": "second",
        },
    )
    merge_assets(tmp_path, ["dist/client", "static"])
    assert {
        p.relative_to(tmp_path / "public").as_posix(): p.read_text()
        for p in (tmp_path / "public").rglob("*")
        if p.is_file()
    } == {"keep.txt": "keep", "a.js": "first", "shared.css": "second"}


def test_missing_asset_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"asset directory 'dist' \(from tako.toml\) does not"):
        merge_assets(tmp_path, ["dist"])


FILES = [
    ".env.production",
    "apps/web/.env",
    "apps/web/.tako/x",
    "apps/web/dist/a.js",
    "apps/web/dist/a.js.map",
    "apps/web/node_modules/m/i.js",
    "apps/web/package.json",
    "apps/web/src/s.ts",
    "packages/ui/dist/u.js",
    "packages/ui/dist/u.js.map",
    "README.md",
]


@pytest.mark.parametrize(
    ("include", "excludes", "expected"),
    [
        (
            None,
            [],
            [
                "apps/web/dist/a.js",
                "apps/web/dist/a.js.map",
                "apps/web/node_modules/m/i.js",
                "apps/web/package.json",
                "apps/web/src/s.ts",
                "packages/ui/dist/u.js",
                "packages/ui/dist/u.js.map",
                "README.md",
            ],
        ),
        (
            PatternSet.of("apps/web", ["dist/**", "package.json"]),
            [PatternSet.of("apps/web", ["**/*.map"])],
            ["apps/web/dist/a.js", "apps/web/package.json"],
        ),
        (
            None,
            [
                PatternSet.of("apps/web", ["node_modules/", "*.map"]),
                PatternSet.of("packages/ui", ["*.map"]),
            ],
            [
                "apps/web/dist/a.js",
                "apps/web/package.json",
                "apps/web/src/s.ts",
                "packages/ui/dist/u.js",
                "README.md",
            ],
        ),
    ],
    ids=["forced-only", "include-relative-to-base", "excludes-scoped-to-their-base"],
)
def test_artifact_selection_applies_forced_excludes_include_then_scoped_excludes(
    include: PatternSet | None, excludes: list[PatternSet | None], expected: list[str]
) -> None:
    assert select_artifact_files(FILES, include, excludes) == expected


def test_main_must_exist_in_the_built_app_directory(tmp_path: Path) -> None:
    with pytest.raises(
        BuildError, match=r"main 'dist/server.js' does not exist .*apps/web/dist/server.js"
    ):
        check_main(tmp_path, "apps/web", "dist/server.js", [])


def test_main_excluded_by_patterns_is_an_error(tmp_path: Path) -> None:
    make_tree(tmp_path, {"app.py": ""})
    with pytest.raises(BuildError, match="excluded from the artifact"):
        check_main(tmp_path, ".", "app.py", ["other.py"])
    check_main(tmp_path, ".", "app.py", ["app.py"])
