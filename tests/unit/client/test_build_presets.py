"""Built-in presets: loading, rejection of unsupported refs, commands and main resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tako_client.build.plan import BuildError
from tako_client.build.presets import BUILTIN_PRESETS, load_preset, parse_preset, split_runtime


@pytest.mark.parametrize("name", BUILTIN_PRESETS)
def test_every_builtin_preset_loads_from_package_data(name: str) -> None:
    preset = load_preset(name)
    assert preset.name == preset.runtime == name
    assert len(preset.content_hash) == 64


@pytest.mark.parametrize(
    ("runtime", "name", "message"),
    [
        ("bun", "tanstack-start", "unknown preset 'tanstack-start'"),
        ("bun", "js/tanstack-start", "namespaced aliases are not supported"),
        ("bun", "github:someone/preset", "github: references are not supported"),
        ("bun", "node", "preset 'node' is for runtime 'node', not 'bun'"),
        ("ruby", None, "unknown preset 'ruby'"),
    ],
)
def test_unsupported_presets_are_rejected_with_a_clear_error(
    runtime: str, name: str | None, message: str
) -> None:
    with pytest.raises(BuildError, match=message) as info:
        load_preset(runtime, name)
    assert info.value.hint is not None and "bun, deno, go, node, python" in info.value.hint


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
    ("files", "install"),
    [({}, "npm install"), ({"package-lock.json": "{}"}, "npm ci")],
)
def test_node_install_uses_npm_ci_only_with_a_lockfile(
    tmp_path: Path, files: dict[str, str], install: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert load_preset("node").install_command(tmp_path) == install


@pytest.mark.parametrize(
    ("runtime", "manifest", "content", "expected"),
    [
        ("node", "package.json", {"scripts": {"build": "tsc"}}, "npm run build"),
        ("node", "package.json", {"scripts": {"start": "node ."}}, None),
        ("bun", "package.json", {"scripts": {"build": "vite build"}}, "bun run build"),
        ("bun", None, None, None),
        ("deno", "deno.json", {"tasks": {"build": "deno run b.ts"}}, "deno task build"),
        ("go", None, None, "go build -o app ."),
        ("python", None, None, None),
    ],
)
def test_build_command_runs_only_when_the_project_defines_the_script(
    tmp_path: Path, runtime: str, manifest: str | None, content: object, expected: str | None
) -> None:
    if manifest:
        (tmp_path / manifest).write_text(json.dumps(content))
    assert load_preset(runtime).build_command(tmp_path) == expected


@pytest.mark.parametrize(
    ("runtime", "files", "configured", "expected"),
    [
        ("bun", [], None, "index.ts"),
        ("bun", ["src/index.ts"], None, "src/index.ts"),
        ("bun", ["index.js", "src/index.ts"], None, "index.js"),
        ("bun", ["src/index.tsx"], "server.ts", "server.ts"),
        ("node", ["src/index.mjs"], None, "src/index.mjs"),
        ("python", ["main.py"], None, "main.py"),
        ("python", ["app.py", "main.py"], None, "app.py"),
        ("python", [], None, "app.py"),
        ("go", [], None, "app"),
    ],
)
def test_main_resolution_prefers_config_then_existing_candidates_then_preset(
    tmp_path: Path, runtime: str, files: list[str], configured: str | None, expected: str
) -> None:
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert load_preset(runtime).resolve_main(tmp_path, configured) == expected


def test_go_preset_is_target_specific_and_js_presets_are_shared() -> None:
    assert load_preset("go").target_specific is True
    assert not any(load_preset(name).target_specific for name in ("bun", "node", "deno", "python"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'name = "x"\nruntime = "x"\ncolour = 1\n', "unknown key"),
        (b'name = "x"\nruntime = "x"\n[build]\nrn = "a"\n', "build.rn"),
        (b'runtime = "x"\n', "name must be a non-empty string"),
        (b"name = [", "invalid preset"),
    ],
)
def test_invalid_preset_documents_are_rejected(text: bytes, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        parse_preset(text, source="x.toml")
