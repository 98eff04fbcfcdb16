"""Entrypoints: file paths versus Python module specifiers, and exact ``{main}`` expansion."""

from __future__ import annotations

import pytest

from tako_common.entry import expand_main, is_module_spec, module_files, module_of


@pytest.mark.parametrize(
    ("main", "is_module"),
    [
        ("main:app", True),
        ("mysite.wsgi:application", True),
        ("app.main:create_app", True),
        ("pkg.mod:obj.attr", True),
        ("app.py", False),
        ("src/index.ts", False),
        ("dist/server/entry.mjs", False),
        ("1bad:app", False),
        ("main:", False),
        (":app", False),
        ("a/b:app", False),
        ("main:app:extra", False),
    ],
)
def test_module_specifiers_are_package_module_colon_attribute(main: str, is_module: bool) -> None:
    assert is_module_spec(main) is is_module


def test_a_module_lives_in_a_file_or_a_package() -> None:
    assert module_of("mysite.wsgi:application") == "mysite.wsgi"
    assert module_files("mysite.wsgi:application") == ("mysite/wsgi.py", "mysite/wsgi/__init__.py")
    with pytest.raises(ValueError, match="not a module specifier"):
        module_of("app.py")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["node", "{main}"], ["node", "dist/a.js"]),
        (["x", "{main}", "--", "{main}"], ["x", "dist/a.js", "--", "dist/a.js"]),
        (["node", "--entry={main}"], ["node", "--entry={main}"]),
        (["node", "{main}.map", "{ main }"], ["node", "{main}.map", "{ main }"]),
        ([], []),
    ],
)
def test_only_an_exact_main_argument_is_replaced(argv: list[str], expected: list[str]) -> None:
    assert expand_main(argv, "dist/a.js") == expected
