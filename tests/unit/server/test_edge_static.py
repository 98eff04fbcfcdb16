"""Static file resolution under public/: extensions, prefixes, traversal, ETag, snapshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tako_server.edge.messages import SnapshotPush, decode, encode
from tako_server.edge.policy import Rejected
from tako_server.edge.snapshot import Backend, EdgeApp, EdgeSnapshot, EdgeState
from tako_server.edge.static import (
    content_type_for,
    etag_for,
    etag_matches,
    has_extension,
    resolve_static,
    static_head,
)


@pytest.fixture
def public(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    (root / "assets").mkdir(parents=True)
    (root / "app.js").write_text("js")
    (root / "assets" / "site.css").write_text("css")
    (root / "with space.txt").write_text("sp")
    (root / "folder.d").mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (root / "inside.js").symlink_to(root / "app.js")
    return root


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a.js", True),
        ("/a/b.min.css", True),
        ("/a", False),
        ("/a.", False),
        ("/x.d/", False),
        ("/.env", True),
        ("/", False),
    ],
)
def test_has_extension(path: str, expected: bool) -> None:
    assert has_extension(path) is expected


@pytest.mark.parametrize(
    ("path", "prefix", "relative"),
    [
        ("/app.js", "", "app.js"),
        ("/assets/site.css", "", "assets/site.css"),
        ("/web/app.js", "/web", "app.js"),
        ("/web/assets/site.css", "/web", "assets/site.css"),
        ("/with%20space.txt", "", "with space.txt"),
        ("/inside.js", "", "app.js"),  # symlink inside public/ is fine
    ],
)
def test_resolves_files_under_public(public: Path, path: str, prefix: str, relative: str) -> None:
    found = resolve_static(public, path, prefix)
    assert found is not None
    assert found.path == (public / relative).resolve()


@pytest.mark.parametrize(
    "path",
    ["/missing.js", "/folder.d", "/noext", "/web/app.js", "/webapp.js"],
)
def test_falls_through_to_the_app(public: Path, path: str) -> None:
    assert resolve_static(public, path, "/web2") is None


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/a%00.js",
        "/a%5c..%5csecret.txt",
        "/escape.txt",
    ],
)
def test_traversal_is_refused(public: Path, path: str) -> None:
    with pytest.raises(Rejected) as info:
        resolve_static(public, path)
    assert info.value.status == 400


def test_etag_is_strong_from_size_and_mtime(public: Path) -> None:
    file = public / "app.js"
    os.utime(file, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    found = resolve_static(public, "/app.js")
    assert found is not None
    assert found.etag == etag_for(2, 1_700_000_000_000_000_000)
    assert not found.etag.startswith("W/")
    file.write_text("js2")
    changed = resolve_static(public, "/app.js")
    assert changed is not None and changed.etag != found.etag


@pytest.mark.parametrize(
    ("header", "expected"),
    [('"a"', True), ('"b", "a"', True), ('W/"a"', True), ("*", True), ('"b"', False), ("", False)],
)
def test_if_none_match(header: str, expected: bool) -> None:
    assert etag_matches(header, '"a"') is expected


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("a.html", "text/html; charset=utf-8"),
        ("a.JS", "text/javascript; charset=utf-8"),
        ("a.woff2", "font/woff2"),
        ("a.unknown", "application/octet-stream"),
    ],
)
def test_content_types(name: str, ctype: str) -> None:
    assert content_type_for(name) == ctype


def test_static_heads(public: Path) -> None:
    found = resolve_static(public, "/app.js")
    assert found is not None
    ok = static_head(found, not_modified=False, close=False)
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 2\r\n" in ok
    assert f"ETag: {found.etag}".encode() in ok
    nm = static_head(found, not_modified=True, close=True)
    assert nm.startswith(b"HTTP/1.1 304") and b"Content-Length" not in nm
    assert b"Connection: close" in nm


def test_snapshot_round_trips_and_compiles() -> None:
    snapshot = EdgeSnapshot(
        routes=(
            ("a.example.com", "a/prod"),
            ("*.example.com", "b/prod"),
            ("x.example.com", "gone/prod"),
        ),
        apps={
            "a/prod": EdgeApp("a/prod", (Backend(1, "127.0.0.1", 3000),), "/srv/public", False),
            "b/prod": EdgeApp("b/prod", (), None, True),
        },
    )
    pushed = decode(encode(SnapshotPush(snapshot)))
    assert isinstance(pushed, SnapshotPush) and pushed.snapshot == snapshot
    again = pushed.snapshot
    state = EdgeState.compile(again)
    a = state.route("A.example.com:443", "/x")
    b = state.route("z.example.com", "/")
    assert a is not None and a[1].key == "a/prod" and a[1].public_dir == Path("/srv/public")
    assert b is not None and b[1].cold_start
    assert state.route("x.example.com", "/") is None  # route to an unknown app
    assert state.route("example.org", "/") is None
    assert state.addresses() == {("127.0.0.1", 3000)}


def test_a_file_swapped_after_its_check_is_not_served(public: Path, tmp_path: Path) -> None:
    from tako_server.edge.staticsend import static_response

    found = resolve_static(public, "/app.js")
    assert found is not None
    assert static_response(found, b"", close=False, head_only=False) is not None
    (public / "app.js").unlink()  # swapped for a link to a file outside public/
    (public / "app.js").symlink_to(tmp_path / "secret.txt")
    assert static_response(found, b"", close=False, head_only=False) is None


def test_precompressed_siblings(public: Path) -> None:
    from tako_server.edge.compress import BR, GZIP
    from tako_server.edge.static import precompressed

    (public / "app.js.gz").write_bytes(b"gz")
    (public / "app.js.br").symlink_to(public / "app.js")  # a link is never a sibling
    found = resolve_static(public, "/app.js")
    assert found is not None
    gz = precompressed(found, GZIP | BR)
    assert (gz.path.name, gz.encoding, gz.vary, gz.size) == ("app.js.gz", "gzip", True, 2)
    assert gz.etag != found.etag and gz.content_type == found.content_type
    plain = precompressed(found, 0)
    assert (plain.path, plain.encoding, plain.vary) == (found.path, "", True)
    head = static_head(gz, not_modified=False, close=False).decode()
    assert "Content-Encoding: gzip\r\n" in head and "Vary: Accept-Encoding\r\n" in head
    (public / "logo.png").write_bytes(b"png")
    (public / "logo.png.gz").write_bytes(b"gz")
    image = resolve_static(public, "/logo.png")
    assert image is not None and precompressed(image, GZIP) == image  # not compressible
