"""KeyLines: every kind of TOML key is found on its line; unknown paths fall back to a prefix."""

from __future__ import annotations

import tomllib

import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from tako_common.config.lines import KeyLines

DOC = '''\
# comment
name = "x"  # trailing comment
[envs.production]
route = "a.com"
storages = { uploads = "p", nested.key = { deep = 1 } }
routes = [
  "a.com",
  'b.com/]x',
]
note = """
[not_a_table]
fake = 1
"""
[[build_stages]]
run = "one"
[[build_stages]]
cwd = "two"
[[a]]
[[a.b]]
x = 1
[[a]]
[[a.b]]
y = 2
[servers.la.workflows.email]
"quoted.key" = 2
dotted.inner = 3
'''


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("name",), 2),
        (("envs",), 3),
        (("envs", "production"), 3),
        (("envs", "production", "route"), 4),
        (("envs", "production", "storages", "uploads"), 5),
        (("envs", "production", "storages", "nested", "key", "deep"), 5),
        (("envs", "production", "routes"), 6),
        (("envs", "production", "routes", 0), 7),
        (("envs", "production", "routes", 1), 8),
        (("envs", "production", "note"), 10),
        (("build_stages", 0), 14),
        (("build_stages", 0, "run"), 15),
        (("build_stages", 1), 16),
        (("build_stages", 1, "cwd"), 17),
        (("a", 0, "b", 0, "x"), 20),
        (("a", 1, "b", 0), 22),
        (("a", 1, "b", 0, "y"), 23),
        (("servers", "la", "workflows", "email"), 24),
        (("servers", "la", "workflows", "email", "quoted.key"), 25),
        (("servers", "la", "workflows", "email", "dotted", "inner"), 26),
    ],
)
def test_key_lines_finds_each_key_on_its_line(path: tuple[str | int, ...], line: int) -> None:
    tomllib.loads(DOC)  # the scanner is only ever given valid TOML
    assert KeyLines.build(DOC).line_of(path) == line


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("envs", "production", "missing"), 3),
        (("envs", "production", "routes", 7), 6),
        (("build_stages", 1, "run"), 16),
    ],
)
def test_key_lines_falls_back_to_the_nearest_recorded_prefix(
    path: tuple[str | int, ...], line: int
) -> None:
    assert KeyLines.build(DOC).line_of(path) == line


def test_key_lines_text_inside_multiline_strings_is_not_a_table() -> None:
    assert KeyLines.build(DOC).line_of(("not_a_table",)) is None


KEYS = st.text(alphabet="abcxyz_-.9 ", min_size=1, max_size=6)
SCALARS = st.one_of(
    st.integers(-5, 5), st.booleans(), st.text(alphabet='ab"\n\\[]=#\'', max_size=6)
)


def _tables(children: st.SearchStrategy[object]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(KEYS, children, min_size=1, max_size=3)


DOCS = _tables(
    st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            _tables(inner), st.lists(SCALARS, max_size=3), st.lists(_tables(inner), max_size=2)
        ),
        max_leaves=12,
    )
)


def _leaves(value: object, path: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, (*path, index))]
    return [path]


@settings(max_examples=150, deadline=None)
@given(DOCS)
def test_key_lines_locates_every_leaf_key_of_generated_documents(doc: dict[str, object]) -> None:
    text = tomlkit.dumps(doc)
    assert tomllib.loads(text) == doc
    index = KeyLines.build(text)
    lines = text.splitlines()
    for path in _leaves(doc, ()):
        line = index.line_of(path)
        assert line is not None, (path, text)
        key = str(path[-1])
        assert key in lines[line - 1] or tomlkit.dumps({key: 0}).split(" = ")[0] in (
            lines[line - 1]
        ), (path, line, text)
