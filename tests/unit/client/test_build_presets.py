"""Built-in presets: loading and merging, refusal of unsupported refs, install and build
commands by package manager."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tako_client.build.plan import BuildError
from tako_client.build.presets import (
    BASE_PRESETS,
    BUILTIN_PRESETS,
    FRAMEWORK_PRESETS,
    load_preset,
    parse_preset,
    preset_runtimes,
    presets_for,
    split_runtime,
    support_dir,
)

FRAMEWORK_RUNTIMES = [
    (name, runtime) for name in FRAMEWORK_PRESETS for runtime in preset_runtimes(name)
]


@pytest.mark.parametrize("name", BASE_PRESETS)
def test_every_base_preset_loads_from_package_data(name: str) -> None:
    preset = load_preset(name)
    assert preset.name == preset.runtime == name and not preset.is_framework
    assert len(preset.content_hash) == 64
    assert preset.dev is not None and preset.main is not None


@pytest.mark.parametrize(("name", "runtime"), FRAMEWORK_RUNTIMES)
def test_every_framework_preset_lays_over_each_of_its_runtimes(name: str, runtime: str) -> None:
    base = load_preset(runtime)
    preset = load_preset(runtime, name)
    assert (preset.name, preset.runtime, preset.base) == (name, runtime, runtime)
    assert preset.exclude[: len(base.exclude)] == base.exclude  # base excludes first
    assert preset.dev is not None and preset.dev != base.dev
    assert preset.content_hash not in (base.content_hash, "")
    for support in preset.support:
        assert (support_dir() / support).is_file()


def test_the_issue_presets_exist_for_their_runtimes() -> None:
    assert set(presets_for("node")) >= {"node", "vite", "nextjs", "tanstack-start", "astro",
                                        "remix", "react-router"}
    assert presets_for("python") == ["python", "django", "fastapi", "flask"]
    assert presets_for("go") == ["go"]
    assert set(BUILTIN_PRESETS) == set(BASE_PRESETS) | set(FRAMEWORK_PRESETS)


@pytest.mark.parametrize(
    ("runtime", "name", "main", "start", "assets", "include"),
    [
        ("node", "vite", "tako-static-server.mjs", None, ("dist",),
         ("public/**", "tako-static-server.mjs")),
        ("bun", "nextjs", "tako-next-server.mjs", None, (),
         (".next/standalone/**", "public/**", "tako-next-server.mjs")),
        ("node", "tanstack-start", "tako-fetch-server.mjs", None, ("dist/client",), ()),
        ("node", "astro", "dist/server/entry.mjs", None, ("dist/client",), ()),
        ("node", "remix", "build/server/index.js", ("remix-serve", "{main}"),
         ("build/client",), ()),
        ("bun", "react-router", "build/server/index.js", ("react-router-serve", "{main}"),
         ("build/client",), ()),
        ("python", "django", None, None, (), ()),
        ("python", "fastapi", "main:app", None, (), ()),
        ("python", "flask", "app:app", None, (), ()),
        ("node", None, "index.js", None, (), ()),
    ],
)
def test_framework_preset_facts(
    runtime: str,
    name: str | None,
    main: str | None,
    start: tuple[str, ...] | None,
    assets: tuple[str, ...],
    include: tuple[str, ...],
) -> None:
    preset = load_preset(runtime, name)
    assert (preset.main, preset.start, preset.assets, preset.include) == (
        main, start, assets, include
    )


def test_python_framework_presets_name_their_interface_and_candidates() -> None:
    assert load_preset("python", "fastapi").interface == "asgi"
    assert load_preset("python", "flask").interface == "wsgi"
    django = load_preset("python", "django")
    assert django.interface is None
    assert django.main_candidates == ("*.wsgi:application", "*.asgi:application")
    assert ".venv/" in django.exclude  # the local build venv is never deployed


@pytest.mark.parametrize(
    ("runtime", "name", "message"),
    [
        ("bun", "js/tanstack-start", "namespaced aliases are not supported"),
        ("bun", "github:someone/preset", "github: references are not supported"),
        ("bun", "tanstack", "unknown preset 'tanstack'"),
        ("bun", "node", "preset 'node' is for runtime 'node', not 'bun'"),
        ("node", "django", "preset 'django' is for runtime 'python', not 'node'"),
        ("python", "vite", "preset 'vite' is for runtime 'node' or 'bun' or 'deno', not 'python'"),
        ("deno", "nextjs", "preset 'nextjs' is for runtime 'node' or 'bun', not 'deno'"),
        ("ruby", None, "unknown runtime 'ruby'"),
    ],
)
def test_unsupported_presets_are_rejected_with_a_clear_error(
    runtime: str, name: str | None, message: str
) -> None:
    with pytest.raises(BuildError, match=message) as info:
        load_preset(runtime, name)
    assert info.value.hint is not None


def test_an_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(BuildError) as info:
        load_preset("node", "sveltekit")
    assert info.value.hint is not None
    for name in BUILTIN_PRESETS:
        assert name in info.value.hint


@pytest.mark.parametrize(
    ("value", "expected"),
    [("bun", ("bun", None)), ("bun@1.2.3", ("bun", "1.2.3")), ("go@1.22", ("go", "1.22"))],
)
def test_split_runtime_separates_the_pinned_version(
    value: str, expected: tuple[str, str | None]
) -> None:
    assert split_runtime(value) == expected


@pytest.mark.parametrize("value", ["", "@1", "bun@"])
def test_split_runtime_rejects_malformed_values(value: str) -> None:
    with pytest.raises(BuildError):
        split_runtime(value)


@pytest.mark.parametrize(
    ("runtime", "manager", "files", "install"),
    [
        ("node", "npm", {}, "npm install"),
        ("node", "npm", {"package-lock.json": "{}"}, "npm ci"),
        ("node", "pnpm", {}, "pnpm install"),
        ("node", "pnpm", {"pnpm-lock.yaml": ""}, "pnpm install --frozen-lockfile"),
        ("node", "yarn", {"yarn.lock": ""}, "yarn install --frozen-lockfile"),
        ("node", "yarn", {"yarn.lock": "", ".yarnrc.yml": ""}, "yarn install --immutable"),
        ("bun", "bun", {"bun.lock": ""}, "bun install --frozen-lockfile"),
        ("bun", "npm", {"package-lock.json": "{}"}, "npm ci"),
        ("deno", None, {}, None),
        ("deno", None, {"package.json": "{}"}, "deno install"),
        ("deno", "npm", {}, "npm install"),
        ("python", None, {}, None),
        ("go", None, {}, None),
    ],
)
def test_local_install_uses_the_package_manager_frozen_with_its_lockfile(
    tmp_path: Path, runtime: str, manager: str | None, files: dict[str, str], install: str | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert load_preset(runtime).install_command(tmp_path, manager) == install


@pytest.mark.parametrize(
    ("runtime", "name", "manager", "manifest", "content", "expected"),
    [
        ("node", None, "npm", "package.json", {"scripts": {"build": "tsc"}}, "npm run build"),
        ("node", None, "pnpm", "package.json", {"scripts": {"build": "tsc"}}, "pnpm run build"),
        ("node", None, "npm", "package.json", {"scripts": {"start": "node ."}}, None),
        ("bun", None, "bun", "package.json", {"scripts": {"build": "vite build"}},
         "bun run build"),
        ("bun", None, "bun", None, None, None),
        ("deno", None, None, "deno.json", {"tasks": {"build": "deno run b.ts"}},
         "deno task build"),
        ("go", None, None, None, None, "go build -o app ."),
        ("python", None, None, None, None, None),
        # a framework's build always runs: a missing script is the package manager's error
        ("node", "vite", "yarn", "package.json", {"scripts": {}}, "yarn run build"),
        ("deno", "vite", None, "package.json", {"scripts": {}}, "deno task build"),
    ],
)
def test_build_command_by_preset_package_manager_and_scripts(
    tmp_path: Path,
    runtime: str,
    name: str | None,
    manager: str | None,
    manifest: str | None,
    content: object,
    expected: str | None,
) -> None:
    if manifest:
        (tmp_path / manifest).write_text(json.dumps(content))
    assert load_preset(runtime, name).build_command(tmp_path, manager) == expected


def test_nextjs_build_copies_static_files_into_the_standalone_tree(tmp_path: Path) -> None:
    command = load_preset("node", "nextjs").build_command(tmp_path, "pnpm")
    assert command is not None and command.startswith("pnpm run build && ")
    assert "cp -R .next/static .next/standalone/.next/" in command


def test_django_build_makes_a_local_venv_and_collects_static_files(tmp_path: Path) -> None:
    preset = load_preset("python", "django")
    install = preset.install_command(tmp_path)
    run = preset.build_command(tmp_path)
    assert install is not None and install.startswith("python3 -m venv .venv")
    assert run is not None and run.startswith(".venv/bin/python ")
    assert run.endswith("django_collectstatic.py") and str(support_dir()) in run


def test_go_preset_is_target_specific_and_the_others_are_shared() -> None:
    assert load_preset("go").target_specific is True
    assert not any(load_preset(name).target_specific for name in ("bun", "node", "deno", "python"))
    assert not load_preset("node", "vite").target_specific


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'name = "x"\nruntime = "x"\ncolour = 1\n', "unknown key"),
        (b'name = "x"\nruntime = "x"\n[build]\nrn = "a"\n', "build.rn"),
        (b'runtime = "x"\n', "name must be a non-empty string"),
        (b'name = "x"\n', "set either runtime or runtimes"),
        (b'name = "x"\nruntime = "x"\nruntimes = ["x"]\n', "set either runtime or runtimes"),
        (b'name = "x"\nruntime = "x"\ninterface = "cgi"\n', "interface must be asgi or wsgi"),
        (b'name = "x"\nruntime = "x"\ndev = []\n', "dev must be a non-empty array"),
        (b'name = "x"\nruntime = "x"\nsupport = ["nope.js"]\n', "support file 'nope.js'"),
        (b"name = [", "invalid preset"),
    ],
)
def test_invalid_preset_documents_are_rejected(text: bytes, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        parse_preset(text, source="x.toml")
