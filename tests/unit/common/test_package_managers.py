"""JS package managers: detection from lockfiles and package.json, local and server installs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tako_common.package_managers import (
    Detected,
    ProjectFiles,
    detect,
    install_argv,
    run_script,
    server_install_argv,
)


def files(*present: str, package: dict[str, object] | None = None) -> ProjectFiles:
    return ProjectFiles(frozenset(present), package)


@pytest.mark.parametrize(
    ("project", "runtime", "expected"),
    [
        (files("bun.lock"), "node", Detected("bun", "bun.lock")),
        (files("bun.lockb"), "node", Detected("bun", "bun.lockb")),
        (files("pnpm-lock.yaml"), "node", Detected("pnpm", "pnpm-lock.yaml")),
        (files("yarn.lock"), "bun", Detected("yarn", "yarn.lock")),
        (files("package-lock.json"), "bun", Detected("npm", "package-lock.json")),
        (files("npm-shrinkwrap.json"), "node", Detected("npm", "npm-shrinkwrap.json")),
        (files("pnpm-lock.yaml", "package-lock.json"), "node", Detected("pnpm", "pnpm-lock.yaml")),
        (files(package={"packageManager": "pnpm@9.1.0"}), "node",
         Detected("pnpm", "package.json packageManager")),
        (files("yarn.lock", package={"packageManager": "pnpm@9"}), "node",
         Detected("yarn", "yarn.lock")),
        (files(package={"packageManager": "cargo@1"}), "node", Detected("npm", "node default")),
        (files(), "node", Detected("npm", "node default")),
        (files(), "bun", Detected("bun", "bun default")),
        (files(), "deno", Detected(None, "")),
    ],
)
def test_detection_order_lockfile_then_package_manager_field_then_runtime(
    project: ProjectFiles, runtime: str, expected: Detected
) -> None:
    assert detect(project, runtime) == expected


@pytest.mark.parametrize(
    ("manager", "project", "local", "server"),
    [
        ("npm", files(), ["npm", "install"],
         ["npm", "install", "--omit=dev", "--no-audit", "--no-fund"]),
        ("npm", files("package-lock.json"), ["npm", "ci"],
         ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"]),
        ("pnpm", files(), ["pnpm", "install"], ["pnpm", "install", "--prod"]),
        ("pnpm", files("pnpm-lock.yaml"), ["pnpm", "install", "--frozen-lockfile"],
         ["pnpm", "install", "--prod", "--frozen-lockfile"]),
        ("yarn", files("yarn.lock"), ["yarn", "install", "--frozen-lockfile"],
         ["yarn", "install", "--production", "--frozen-lockfile"]),
        ("yarn", files("yarn.lock", ".yarnrc.yml"), ["yarn", "install", "--immutable"],
         ["yarn", "install", "--immutable"]),
        ("yarn", files("yarn.lock", package={"packageManager": "yarn@4.1.0"}),
         ["yarn", "install", "--immutable"], ["yarn", "install", "--immutable"]),
        ("yarn", files("yarn.lock", package={"packageManager": "yarn@1.22.19"}),
         ["yarn", "install", "--frozen-lockfile"],
         ["yarn", "install", "--production", "--frozen-lockfile"]),
        ("bun", files("bun.lock"), ["bun", "install", "--frozen-lockfile"],
         ["bun", "install", "--production", "--frozen-lockfile"]),
        ("bun", files(), ["bun", "install"], ["bun", "install", "--production"]),
        # another manager's lockfile does not freeze this one
        ("pnpm", files("package-lock.json"), ["pnpm", "install"], ["pnpm", "install", "--prod"]),
    ],
)
def test_install_commands_are_frozen_only_with_the_managers_own_lockfile(
    manager: str, project: ProjectFiles, local: list[str], server: list[str]
) -> None:
    assert install_argv(manager, project, production=False) == local
    assert install_argv(manager, project, production=True) == server


@pytest.mark.parametrize(
    ("package", "invalid", "installs"),
    [
        (None, False, False),  # no package.json
        ({}, False, False),
        ({"devDependencies": {"vite": "^6"}}, False, False),
        ({"dependencies": {}}, False, False),
        ({"dependencies": {"ms": "^2"}}, False, True),
        ({"optionalDependencies": {"fsevents": "*"}}, False, True),
        (None, True, True),  # unreadable: the package manager says what is wrong
    ],
)
def test_the_server_installs_only_declared_runtime_dependencies(
    package: dict[str, object] | None, invalid: bool, installs: bool
) -> None:
    project = ProjectFiles(frozenset(), package, invalid)
    command = server_install_argv("npm", project)
    assert (command is not None) == installs


def test_project_files_are_read_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "pnpm-lock.yaml").write_text("")
    (tmp_path / "package.json").write_text(json.dumps({"dependencies": {"ms": "2"}}))
    project = ProjectFiles.read(tmp_path)
    assert project.present == {"pnpm-lock.yaml"} and project.declares_dependencies()
    (tmp_path / "package.json").write_text("{not json")
    assert ProjectFiles.read(tmp_path).package_json_invalid
    assert not ProjectFiles.read(tmp_path / "missing").has_package_json


def test_unknown_managers_are_refused_and_scripts_run_the_same_way() -> None:
    with pytest.raises(ValueError, match="unknown package manager 'cargo'"):
        install_argv("cargo", files(), production=False)
    assert [run_script(m, "build") for m in ("npm", "pnpm", "yarn", "bun")] == [
        "npm run build", "pnpm run build", "yarn run build", "bun run build"
    ]
