"""Artifact cache: key, hit/miss/corruption, pruning plan, and whole local builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tako_client.build.artifacts import (
    KEEP_ARTIFACTS,
    KEEP_SOURCES,
    CacheEntry,
    build_artifact,
    cache_key,
    plan_prune,
)
from tako_client.build.bundle import list_tar_zst
from tako_client.build.plan import BuildError, BuildPlan, Stage, Target
from tests.unit.client.gitrepo import git, isolated_git, write  # noqa: F401

pytestmark = pytest.mark.usefixtures("isolated_git")

NOW = 1_000_000.0


def names(paths: list[Path]) -> list[str]:
    return sorted(p.name for p in paths)


# --- pure pruning plan ---------------------------------------------------------------


def entries(prefix: str, suffix: str, count: int, age0: float = 1000.0) -> list[CacheEntry]:
    return [CacheEntry(Path(f"/a/{prefix}{i:03d}{suffix}"), NOW - age0 - i) for i in range(count)]


def test_prune_keeps_the_newest_30_sources_and_90_artifacts() -> None:
    sources = entries("v", "-source.tar.zst", KEEP_SOURCES + 2)
    artifacts = entries("artifact-shared-", ".tar.zst", KEEP_ARTIFACTS + 1)
    doomed = plan_prune(sources + artifacts, NOW)
    assert names(doomed) == [
        f"artifact-shared-{KEEP_ARTIFACTS:03d}.tar.zst",
        f"v{KEEP_SOURCES:03d}-source.tar.zst",
        f"v{KEEP_SOURCES + 1:03d}-source.tar.zst",
    ]


def test_prune_removes_metadata_of_pruned_and_missing_artifacts() -> None:
    artifacts = entries("artifact-shared-", ".tar.zst", KEEP_ARTIFACTS + 1)
    metas = [CacheEntry(e.path.with_suffix("").with_suffix(".json"), e.mtime) for e in artifacts]
    orphan = CacheEntry(Path("/a/artifact-linux-x86_64-glibc-deadbeef.json"), NOW)
    doomed = plan_prune(artifacts + metas + [orphan], NOW)
    assert names(doomed) == [
        "artifact-linux-x86_64-glibc-deadbeef.json",
        f"artifact-shared-{KEEP_ARTIFACTS:03d}.json",
        f"artifact-shared-{KEEP_ARTIFACTS:03d}.tar.zst",
    ]


def test_prune_never_removes_entries_younger_than_the_grace_period() -> None:
    fresh = entries("v", "-source.tar.zst", KEEP_SOURCES + 5, age0=0.0)
    assert plan_prune(fresh, NOW, grace=600.0) == []


@pytest.mark.parametrize(("age", "removed"), [(10.0, False), (3600.0, True)])
def test_prune_removes_stale_temporary_files_only(age: float, removed: bool) -> None:
    tmp = CacheEntry(Path("/a/artifact-shared-x.tar.zst.tmp-123"), NOW - age)
    other = CacheEntry(Path("/a/notes.txt"), NOW - 10_000)
    assert plan_prune([tmp, other], NOW) == ([tmp.path] if removed else [])


def test_cache_key_is_canonical_json_order_independent() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


# --- whole local builds ---------------------------------------------------------------


def python_app(root: Path) -> Path:
    write(
        root,
        {
            "app.py": "print('hi')\n",
            "requirements.txt": "",
            "static/logo.svg": "<svg/>",
            ".env": "SECRET=1",
        },
    )
    return root


def plan_with_build(**kwargs: object) -> BuildPlan:
    build = Stage("build", run="mkdir -p dist && echo built > dist/out.txt")
    return BuildPlan(runtime="python", build=build, **kwargs)  # type: ignore[arg-type]


def test_first_build_misses_then_the_same_inputs_hit_the_cache(tmp_path: Path) -> None:
    app = python_app(tmp_path / "app")
    lines: list[str] = []
    first = build_artifact(plan_with_build(), app, on_output=lines.append)
    assert not first.cache_hit and "$ mkdir -p dist && echo built > dist/out.txt" in lines
    second = build_artifact(plan_with_build(), app)
    assert second.cache_hit and second.path == first.path and second.sha256 == first.sha256
    meta = json.loads(first.path.with_suffix("").with_suffix(".json").read_text())
    assert meta["cache_key"][:16] in first.path.name and meta["size"] == first.size
    assert not (app / ".tako" / "build" / f"work-{first.version}").exists()


def test_corrupt_cached_artifact_is_rebuilt(tmp_path: Path) -> None:
    app = python_app(tmp_path / "app")
    first = build_artifact(plan_with_build(), app)
    first.path.write_bytes(b"garbage")
    again = build_artifact(plan_with_build(), app)
    assert not again.cache_hit and again.sha256 == first.sha256


def test_missing_metadata_forces_a_rebuild(tmp_path: Path) -> None:
    app = python_app(tmp_path / "app")
    first = build_artifact(plan_with_build(), app)
    first.path.with_suffix("").with_suffix(".json").unlink()
    assert not build_artifact(plan_with_build(), app).cache_hit


@pytest.mark.parametrize(
    ("edit_source", "second_plan"),
    [
        (True, plan_with_build()),
        (False, plan_with_build(exclude=("*.svg",))),
        (False, plan_with_build(runtime_version="3.12")),
    ],
    ids=["source", "patterns", "runtime-version"],
)
def test_changing_source_or_plan_changes_the_cache_key(
    tmp_path: Path, edit_source: bool, second_plan: BuildPlan
) -> None:
    app = python_app(tmp_path / "app")
    first = build_artifact(plan_with_build(), app)
    if edit_source:
        (app / "app.py").write_text("print('changed')\n")
    second = build_artifact(second_plan, app)
    assert second.path != first.path and not second.cache_hit


def test_artifact_contents_respect_forced_excludes_assets_and_patterns(tmp_path: Path) -> None:
    app = python_app(tmp_path / "app")
    plan = plan_with_build(assets=("static",), exclude=("requirements.txt",))
    built = build_artifact(plan, app)
    members = {m.name for m in list_tar_zst(built.path)}
    assert members == {"app.py", "dist/out.txt", "public/logo.svg", "static/logo.svg"}


def test_monorepo_artifact_keeps_source_root_layout_and_manifest_records_subdir(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    write(repo, {"libs/shared.py": "X = 1\n", "README.md": "mono"})
    python_app(repo / "apps" / "api")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "Add api")
    stages = (
        Stage("libs", cwd="../../libs", run="echo compiled > shared.out"),
        Stage("api", run="test -f ../../libs/shared.out"),
    )
    built = build_artifact(
        BuildPlan(runtime="python", stages=stages, install="pip install -r requirements.txt"),
        repo / "apps" / "api",
    )
    members = {m.name for m in list_tar_zst(built.path)}
    assert {"apps/api/app.py", "libs/shared.py", "libs/shared.out", "README.md"} <= members
    commit = git(repo, "rev-parse", "--short", "HEAD").strip()
    assert built.version == commit
    assert built.manifest == {
        "runtime": "python",
        "runtime_version": None,
        "main": "app.py",
        "start": None,
        "app_subdir": "apps/api",
        "commit": commit,
        "commit_message": "Add api",
        "git_dirty": False,
        "install": "pip install -r requirements.txt",
    }


def test_build_fails_when_main_is_not_produced(tmp_path: Path) -> None:
    app = python_app(tmp_path / "app")
    with pytest.raises(BuildError, match="main 'server.py' does not exist"):
        build_artifact(BuildPlan(runtime="python", main="server.py"), app)


def test_failed_stage_keeps_no_artifact_and_names_the_stage(tmp_path: Path) -> None:
    app = python_app(tmp_path / "app")
    plan = BuildPlan(runtime="python", build=Stage("build", run="echo boom; exit 7"))
    with pytest.raises(BuildError, match="build stage 'build' failed: `echo boom; exit 7` exited"):
        build_artifact(plan, app)
    assert not list((app / ".tako" / "artifacts").glob("artifact-*"))


def test_target_specific_runtime_needs_a_target_and_labels_the_artifact(tmp_path: Path) -> None:
    app = tmp_path / "app"
    write(app, {"main.go": "package main\n", "app": "prebuilt"})
    plan = BuildPlan(runtime="go", build=Stage("build", run="true"))
    with pytest.raises(BuildError, match="no target"):
        build_artifact(plan, app)
    built = build_artifact(plan, app, target=Target("x86_64", "musl"))
    assert built.path.name.startswith("artifact-linux-x86_64-musl-")


def test_each_build_prunes_the_cache(tmp_path: Path) -> None:
    app = python_app(tmp_path / "app")
    artifacts = app / ".tako" / "artifacts"
    artifacts.mkdir(parents=True)
    orphan = artifacts / "artifact-shared-0000000000000000.json"
    orphan.write_text("{}")
    build_artifact(plan_with_build(), app)
    assert not orphan.exists()


# --- framework presets (real local builds; the build scripts stand in for the frameworks) ---


def members(path: Path) -> set[str]:
    return {m.name for m in list_tar_zst(path)}


def vite_like_app(root: Path) -> Path:
    script = (
        "mkdir -p dist/assets && echo '<h1>hi</h1>' > dist/index.html"
        " && echo js > dist/assets/a.js"
    )
    write(
        root,
        {
            "package.json": json.dumps({"scripts": {"build": script}, "devDependencies": {}}),
            "index.html": "<h1>src</h1>",
            "src/main.js": "console.log(1)",
            "public/icon.svg": "<svg/>",
        },
    )
    return root


def test_vite_preset_ships_public_and_its_static_server_only(tmp_path: Path) -> None:
    app = vite_like_app(tmp_path / "app")
    plan = BuildPlan(runtime="node", preset="vite", build=Stage("build", install="true"))
    lines: list[str] = []
    built = build_artifact(plan, app, on_output=lines.append)
    assert "$ npm run build" in lines  # the preset's build, with the detected manager
    assert members(built.path) == {
        "public/index.html", "public/assets/a.js", "public/icon.svg", "tako-static-server.mjs"
    }
    assert built.manifest["main"] == "tako-static-server.mjs" and built.manifest["start"] is None
    assert (built.manifest["package_manager"], built.manifest["app_root"]) == ("npm", "src")


def test_a_preset_build_that_does_not_produce_its_output_names_it(tmp_path: Path) -> None:
    app = vite_like_app(tmp_path / "app")
    (app / "package.json").write_text(json.dumps({"scripts": {"build": "true"}}))
    plan = BuildPlan(runtime="node", preset="vite", build=Stage("build", install="true"))
    with pytest.raises(BuildError, match="preset 'vite': the build did not produce dist/index"):
        build_artifact(plan, app)


def test_nextjs_preset_keeps_the_standalone_node_modules_and_drops_the_rest(
    tmp_path: Path,
) -> None:
    build = (
        "mkdir -p .next/standalone/node_modules/next .next/static/chunks .next/cache"
        " node_modules/x && echo s > .next/standalone/server.js"
        " && echo n > .next/standalone/node_modules/next/i.js"
        " && echo c > .next/static/chunks/c.js && echo x > .next/cache/x"
        " && echo x > node_modules/x/i"
    )
    app = tmp_path / "app"
    write(app, {"package.json": json.dumps({"scripts": {"build": build}}), "public/f.ico": "i"})
    plan = BuildPlan(runtime="node", preset="nextjs", build=Stage("build", install="true"))
    built = build_artifact(plan, app)
    assert members(built.path) == {
        ".next/standalone/server.js",
        ".next/standalone/node_modules/next/i.js",
        ".next/standalone/.next/static/chunks/c.js",
        ".next/standalone/public/f.ico",
        "public/f.ico",
        "tako-next-server.mjs",
    }
    assert built.manifest["main"] == "tako-next-server.mjs"


def test_pnpm_lockfile_makes_the_build_and_the_manifest_use_pnpm(tmp_path: Path) -> None:
    app = tmp_path / "app"
    write(app, {"package.json": "{}", "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
                "index.js": "x"})
    plan = BuildPlan(runtime="node", build=Stage("build", run="false"))
    lines: list[str] = []
    with pytest.raises(BuildError):  # stops at `false` (or earlier, without pnpm installed)
        build_artifact(plan, app, on_output=lines.append)
    assert "$ pnpm install --frozen-lockfile" in lines


def test_django_preset_main_and_start_come_from_the_project_and_requirements(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    write(app, {"manage.py": "", "requirements.txt": "django\ngunicorn\n",
                "mysite/__init__.py": "", "mysite/wsgi.py": "application = None\n"})
    plan = BuildPlan(
        runtime="python", preset="django", build=Stage("build", install="true", run="true")
    )
    built = build_artifact(plan, app)
    assert built.manifest["main"] == "mysite.wsgi:application"
    assert built.manifest["start"][:2] == ["/bin/sh", "-c"]
    assert built.manifest["start"][-2:] == ["gunicorn", "{main}"]
    assert "package_manager" not in built.manifest and "app_root" not in built.manifest
    assert "mysite/wsgi.py" in members(built.path)


def test_changing_the_package_manager_changes_the_cache_key(tmp_path: Path) -> None:
    app = tmp_path / "app"
    write(app, {"package.json": "{}", "index.js": "x"})
    npm = build_artifact(BuildPlan(runtime="node", build=Stage("b", install="true")), app)
    yarn = build_artifact(
        BuildPlan(runtime="node", package_manager="yarn", build=Stage("b", install="true")), app
    )
    assert not yarn.cache_hit and yarn.path != npm.path
    assert yarn.manifest["package_manager"] == "yarn"
