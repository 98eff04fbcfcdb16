"""Main resolution (deploy 000): tako.toml main, then for JS index.<ext> presets the existing
index.<ext>, then src/index.<ext>, then the preset's main; Python candidates and modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_client.build.mains import js_main, resolve_main
from tako_client.build.plan import BuildError
from tako_client.build.presets import load_preset
from tako_client.build.stages import check_main


def touch(root: Path, *names: str) -> None:
    for rel in names:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")


@pytest.mark.parametrize(
    ("preset_main", "files", "expected"),
    [
        # rule 2 applies: the preset's main is index.<ext> or src/index.<ext>
        ("index.ts", [], "index.ts"),  # nothing exists: the preset's main
        ("index.ts", ["index.js"], "index.js"),  # an existing index.<ext> of any JS ext
        ("index.ts", ["index.jsx", "index.tsx"], "index.tsx"),  # ext order ts, tsx, js, jsx
        ("index.ts", ["src/index.ts"], "src/index.ts"),
        ("index.ts", ["index.jsx", "src/index.ts"], "index.jsx"),  # root before src/
        ("index.js", ["src/index.tsx", "src/index.js"], "src/index.tsx"),
        ("src/index.ts", ["index.ts"], "index.ts"),
        ("src/index.jsx", [], "src/index.jsx"),
        ("index.ts", ["index.mjs", "main.ts"], "index.ts"),  # only ts/tsx/js/jsx count
        # rule 3: any other preset main is used as it is
        ("main.ts", ["index.ts"], "main.ts"),
        ("tako-static-server.mjs", ["index.ts", "src/index.ts"], "tako-static-server.mjs"),
        (None, ["index.ts"], None),
    ],
)
def test_js_main_resolution_order(
    preset_main: str | None, files: list[str], expected: str | None
) -> None:
    assert js_main(preset_main, set(files).__contains__) == expected


@pytest.mark.parametrize(
    ("runtime", "preset", "files", "configured", "expected"),
    [
        ("bun", None, ["src/index.ts"], "server.ts", "server.ts"),  # rule 1 always wins
        ("bun", None, [], None, "index.ts"),
        ("bun", None, ["src/index.ts"], None, "src/index.ts"),
        ("node", None, ["index.ts", "src/index.js"], None, "index.ts"),
        ("deno", None, ["index.ts"], None, "main.ts"),  # deno's main.ts is not index.<ext>
        ("node", "vite", ["index.js"], None, "tako-static-server.mjs"),
        ("node", "astro", ["src/index.ts"], None, "dist/server/entry.mjs"),
        ("go", None, [], None, "app"),
        ("python", None, ["main.py"], None, "main.py"),
        ("python", None, ["app.py", "main.py"], None, "app.py"),
        ("python", None, [], None, "app.py"),
        ("python", "fastapi", ["api.py"], None, "api:app"),
        ("python", "fastapi", ["app/main.py"], None, "app.main:app"),
        ("python", "fastapi", ["app/__init__.py", "main.py"], None, "main:app"),
        ("python", "fastapi", [], None, "main:app"),
        ("python", "flask", ["wsgi.py"], None, "wsgi:app"),
        ("python", "django", ["mysite/wsgi.py", "mysite/asgi.py"], None,
         "mysite.wsgi:application"),
        ("python", "django", ["shop/asgi.py"], None, "shop.asgi:application"),
        ("python", "django", ["mysite/wsgi.py"], "other.wsgi:application",
         "other.wsgi:application"),
    ],
)
def test_main_resolution_by_runtime_and_preset(
    tmp_path: Path,
    runtime: str,
    preset: str | None,
    files: list[str],
    configured: str | None,
    expected: str,
) -> None:
    touch(tmp_path, *files)
    assert resolve_main(load_preset(runtime, preset), tmp_path, configured) == expected


def test_django_prefers_asgi_when_only_uvicorn_serves_it(tmp_path: Path) -> None:
    touch(tmp_path, "mysite/wsgi.py", "mysite/asgi.py")
    django = load_preset("python", "django")
    assert resolve_main(django, tmp_path, None, prefer="asgi") == "mysite.asgi:application"
    assert resolve_main(django, tmp_path, None, prefer="wsgi") == "mysite.wsgi:application"


def test_django_without_a_project_module_is_an_error_naming_what_was_looked_for(
    tmp_path: Path,
) -> None:
    touch(tmp_path, "manage.py", "app.py")
    with pytest.raises(BuildError, match=r"found none of \*\.wsgi:application") as info:
        resolve_main(load_preset("python", "django"), tmp_path, None)
    assert info.value.hint is not None and "main" in info.value.hint


@pytest.mark.parametrize(
    ("files", "kept", "ok"),
    [
        (["mysite/wsgi.py"], ["mysite/wsgi.py"], True),
        (["mysite/wsgi/__init__.py"], ["mysite/wsgi/__init__.py"], True),
        ([], [], False),
        (["mysite/wsgi.py"], ["other.py"], False),  # filtered out of the artifact
    ],
)
def test_a_module_main_must_exist_and_be_part_of_the_artifact(
    tmp_path: Path, files: list[str], kept: list[str], ok: bool
) -> None:
    touch(tmp_path, *files)
    if ok:
        check_main(tmp_path, ".", "mysite.wsgi:application", kept)
    else:
        with pytest.raises(BuildError, match="mysite.wsgi:application"):
            check_main(tmp_path, ".", "mysite.wsgi:application", kept)
