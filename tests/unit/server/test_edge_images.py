"""The image optimizer's pure parts and its file-level pieces, without sockets:

- :mod:`tako_server.edge.imagereq`: query -> checked request (400/403 naming the rule),
  content negotiation, cache keys (tables);
- :mod:`tako_server.edge.imagework`: real Pillow on real images made here (resize, no
  upscaling, EXIF orientation, transparency, bomb limits, non-images);
- :mod:`tako_server.edge.imagecache`: real files in a temp dir (hit, expiry, validator,
  corruption, the size cap);
- the remote-address guard and the maintenance page.
"""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest
from PIL import Image

from tako_server.edge.imagecache import CachedImage, ImageCache, etag_of, ttl_of
from tako_server.edge.imagereq import accepted_types, cache_key, negotiate, parse_image_query
from tako_server.edge.images import NonPublicAddress, only_public
from tako_server.edge.imagework import MAX_PIXELS, ImageFailure, render
from tako_server.edge.maintenance import (
    DEFAULT_MESSAGE,
    maintenance_page,
    maintenance_response,
    read_page,
)
from tako_server.edge.policy import Rejected
from tako_server.edge.snapshot import ImageRules

RULES = ImageRules(
    local_patterns=("/images/**", "/avatars/*"),
    remote_patterns=("https://cdn.example.com/uploads/**", "http://127.0.0.1:9000/**"),
    sizes=(320, 640),
    qualities=(60, 75),
    formats=("webp", "avif"),
    cache_dir="/unused",
)

# --- imagereq ---------------------------------------------------------------------------

GOOD: list[tuple[bytes, tuple[str, bool, int, int, str | None]]] = [
    (b"?url=/images/a.png&w=320", ("/images/a.png", False, 320, 75, None)),
    (b"?url=%2Fimages%2Fa.png&w=640&q=60", ("/images/a.png", False, 640, 60, None)),
    (b"?src=/images/x/y.jpg&w=320&f=avif", ("/images/x/y.jpg", False, 320, 75, "avif")),
    (b"?url=/images/a.png%3Fv%3D2&w=320", ("/images/a.png?v=2", False, 320, 75, None)),
    (b"?url=/avatars/u1.png&w=320", ("/avatars/u1.png", False, 320, 75, None)),
    (b"?w=320&url=https://cdn.example.com/uploads/a.png",
     ("https://cdn.example.com/uploads/a.png", True, 320, 75, None)),
    (b"?url=http://127.0.0.1:9000/a.png&w=320",
     ("http://127.0.0.1:9000/a.png", True, 320, 75, None)),
]  # fmt: skip


@pytest.mark.parametrize(("query", "expected"), GOOD)
def test_allowed_requests_parse(query: bytes, expected: tuple[str, bool, int, int, str]) -> None:
    req = parse_image_query(query, RULES)
    assert (req.source, req.remote, req.width, req.quality, req.format) == expected


BAD: list[tuple[bytes, int, str]] = [
    (b"?w=320", 400, "exactly one of url= or src="),
    (b"?url=/images/a.png&src=/images/a.png&w=320", 400, "exactly one of url= or src="),
    (b"?url=/images/a.png", 400, "w= (the width) is required"),
    (b"?url=/images/a.png&w=500", 400, "w=500 is not one of the sizes 320, 640"),
    (b"?url=/images/a.png&w=-320", 400, "w= must be a whole number"),
    (b"?url=/images/a.png&w=3e2", 400, "w= must be a whole number"),
    (b"?url=/images/a.png&w=320&q=90", 400, "q=90 is not one of the qualities 60, 75"),
    (b"?url=/images/a.png&w=320&f=png", 400, "is not one of the formats webp, avif"),
    (b"?url=/images/a.png&w=320&w=640", 400, "parameter 'w' is given twice"),
    (b"?url=/images/a.png&w=320&width=1", 400, "unknown parameter 'width'"),
    (b"?url=%ff&w=320", 400, "not valid (UTF-8"),
    (b"?url=images/a.png&w=320", 400, "must be a path on the app"),
    (b"?url=//evil.com/a.png&w=320", 400, "must be a path on the app"),
    (b"?url=ftp://cdn.example.com/uploads/a.png&w=320", 400, "must be a path on the app"),
    (b"?url=/images/../secret.png&w=320", 400, "'.' or '..' segments"),
    (b"?url=/images/%252e%252e/secret.png&w=320", 400, "'.' or '..' segments"),
    (b"?url=/images/a.png%23x&w=320", 400, "'\\\\' or '#'"),
    (b"?url=/images/a%0a.png&w=320", 400, "control characters"),
    (b"?url=/_tako/image&w=320", 400, "may not come from /_tako/"),
    (b"?url=/secret/a.png&w=320", 403, "local_patterns"),
    (b"?url=/avatars/x/u1.png&w=320", 403, "local_patterns"),
    (b"?url=https://evil.example.com/a.png&w=320", 403, "remote_patterns"),
    (b"?url=http://cdn.example.com/uploads/a.png&w=320", 403, "remote_patterns"),
    (b"?url=https://cdn.example.com/private/a.png&w=320", 403, "remote_patterns"),
    (b"?url=https://user@cdn.example.com/uploads/a.png&w=320", 400, "no user"),
    (b"?url=https://cdn.example.com:99999/uploads/a.png&w=320", 400, "not a valid URL"),
    (b"?" + b"&".join(b"a%d=1" % i for i in range(9)), 400, "at most 8 parameters"),
]  # fmt: skip


@pytest.mark.parametrize(("query", "status", "words"), BAD)
def test_refused_requests_name_the_rule(query: bytes, status: int, words: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_image_query(query, RULES)
    assert caught.value.status == status
    assert words.replace("\\\\", "\\") in caught.value.reason


def test_a_private_address_needs_a_pattern_that_names_it() -> None:
    rules = ImageRules(("/**",), ("*.example.com/**", "10.0.0.5/**"), (320,), (75,), ("webp",), "")
    assert parse_image_query(b"?url=https://10.0.0.5/a.png&w=320", rules).remote
    rules = ImageRules(("/**",), ("https://10.0.0.6/**",), (320,), (75,), ("webp",), "")
    with pytest.raises(Rejected, match="remote_patterns"):
        parse_image_query(b"?url=https://10.0.0.5/a.png&w=320", rules)


def test_default_quality_is_75_when_allowed_else_the_first() -> None:
    rules = ImageRules(("/**",), (), (320,), (50, 90), ("webp",), "")
    assert parse_image_query(b"?url=/a.png&w=320", rules).quality == 50


@pytest.mark.parametrize(
    ("accept", "formats", "explicit", "expected"),
    [
        ("image/avif,image/webp,*/*", ("webp", "avif"), None, "avif"),  # best, not first
        ("image/avif,image/webp,*/*", ("webp",), None, "webp"),
        ("image/webp,*/*;q=0.8", ("webp", "avif"), None, "webp"),
        ("image/avif;q=0,image/webp", ("webp", "avif"), None, "webp"),
        ("*/*", ("webp", "avif"), None, "auto"),  # only explicit types count
        ("image/*", ("webp",), None, "auto"),
        ("", ("webp", "jpeg"), None, "jpeg"),
        ("", ("png", "jpeg"), None, "png"),
        ("IMAGE/WEBP", ("webp",), None, "webp"),
        ("image/webp", ("webp", "avif"), "avif", "avif"),  # f= wins
    ],
)
def test_format_negotiation(
    accept: str, formats: tuple[str, ...], explicit: str | None, expected: str
) -> None:
    assert negotiate(accept, formats, explicit) == expected


def test_accepted_types_ignore_zero_quality_and_bad_weights() -> None:
    assert accepted_types("image/avif;q=0, image/webp;q=0.5, text/html;q=x") == {"image/webp"}


def test_cache_keys_differ_by_every_part() -> None:
    base = ("a/prod", "file:/p/a.png:1", 320, 75, "webp")
    keys = {
        cache_key(*base),
        cache_key("b/prod", *base[1:]),  # type: ignore[arg-type]
        cache_key(base[0], "file:/p/a.png:2", 320, 75, "webp"),
        cache_key(base[0], base[1], 640, 75, "webp"),
        cache_key(base[0], base[1], 320, 60, "webp"),
        cache_key(base[0], base[1], 320, 75, "avif"),
    }
    assert len(keys) == 6 and all(len(k) == 64 for k in keys)


# --- imagework --------------------------------------------------------------------------


def image_bytes(
    size: tuple[int, int], fmt: str = "PNG", mode: str = "RGB", exif_orientation: int = 0
) -> bytes:
    colors: dict[str, int | tuple[int, ...]] = {"RGBA": (200, 30, 30, 128), "L": 200}
    color = colors.get(mode, (200, 30, 30))
    image = Image.new(mode, size, color)
    out = io.BytesIO()
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(out, fmt, exif=exif.tobytes())
    else:
        image.save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["webp", "avif", "jpeg", "png"])
def test_render_resizes_keeping_the_aspect_ratio(fmt: str) -> None:
    result = render(image_bytes((1600, 1200)), 640, 75, fmt)
    assert (result.width, result.height) == (640, 480)
    decoded = Image.open(io.BytesIO(result.data))
    assert decoded.size == (640, 480)
    assert decoded.format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}[fmt]
    assert result.content_type == f"image/{fmt}"


def test_render_never_upscales() -> None:
    result = render(image_bytes((300, 200), "JPEG"), 640, 75, "webp")
    assert (result.width, result.height) == (300, 200)


def test_render_applies_the_exif_orientation() -> None:
    result = render(image_bytes((1200, 600), "JPEG", exif_orientation=6), 320, 75, "png")
    assert Image.open(io.BytesIO(result.data)).size == (320, 640)  # turned upright


def test_auto_keeps_transparency_as_png_and_jpeg_flattens_it() -> None:
    transparent = image_bytes((800, 600), "PNG", "RGBA")
    assert render(transparent, 320, 75, "auto").content_type == "image/png"
    assert Image.open(io.BytesIO(render(transparent, 320, 75, "webp").data)).mode == "RGBA"
    flat = Image.open(io.BytesIO(render(transparent, 320, 75, "jpeg").data))
    assert flat.mode == "RGB"
    assert render(image_bytes((800, 600), "JPEG"), 320, 75, "auto").content_type == "image/jpeg"


def test_quality_changes_the_result() -> None:
    noisy = Image.effect_noise((640, 480), 80).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "PNG")
    low, high = render(out.getvalue(), 640, 20, "webp"), render(out.getvalue(), 640, 95, "webp")
    assert len(low.data) < len(high.data)


def test_an_image_announcing_too_many_pixels_is_refused_before_decoding() -> None:
    side = int(MAX_PIXELS**0.5) + 10
    bomb = image_bytes((side, side), "PNG", "L")  # compresses to almost nothing
    assert len(bomb) < 1024 * 1024
    with pytest.raises(ImageFailure) as caught:
        render(bomb, 320, 75, "webp")
    assert caught.value.status == 413 and "pixels" in caught.value.reason


@pytest.mark.parametrize(
    "data",
    [
        b"not an image at all",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # never handed to Ghostscript
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        image_bytes((64, 64), "BMP"),  # a real image, but not a source format
        image_bytes((640, 480), "PNG")[:200],  # truncated
    ],
    ids=["text", "eps", "svg", "bmp", "truncated"],
)
def test_what_is_not_a_supported_image_is_422(data: bytes) -> None:
    with pytest.raises(ImageFailure) as caught:
        render(data, 320, 75, "webp")
    assert caught.value.status == 422


# --- imagecache -------------------------------------------------------------------------


def entry(data: bytes, expires: float | None = None) -> CachedImage:
    return CachedImage(data, "image/webp", etag_of(data), "public, no-cache", expires)


def test_cache_round_trip_and_expiry(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    assert cache.get("k" * 64, 1000.0) is None
    assert cache.put("k" * 64, entry(b"abc", expires=2000.0))
    assert cache.get("k" * 64, 1000.0) == entry(b"abc", expires=2000.0)
    assert cache.get("k" * 64, 2000.0) is None  # expired
    cache.put("f" * 64, entry(b"file result"))  # a file source never expires
    assert cache.get("f" * 64, 10.0**12) is not None
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_a_changed_or_broken_entry_is_a_miss_and_removed(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    cache.put("a" * 64, entry(b"original"))
    path = tmp_path / ("a" * 64 + ".img")
    path.write_bytes(path.read_bytes()[:-3])  # truncated body: the ETag no longer matches
    assert cache.get("a" * 64, 0.0) is None and not path.exists()
    path.write_bytes(b"{not json\nbody")
    assert cache.get("a" * 64, 0.0) is None and not path.exists()


def test_the_size_cap_removes_the_least_recently_used(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path, cap=10_000)
    for i in range(4):
        cache.put(f"{i:064d}", entry(bytes([i]) * 2000))
        past = 1_000_000 + i
        os.utime(tmp_path / f"{i:064d}.img", (past, past))
    assert cache.get(f"{0:064d}", 0.0) is not None  # used now: the newest of the four
    cache.put(f"{4:064d}", entry(b"x" * 3000))  # past the cap
    left = {int(p.name.removesuffix(".img")) for p in tmp_path.glob("*.img")}
    assert cache.usage() <= 8_000
    assert left == {0, 3, 4}  # 1 and 2 were the least recently used


def test_a_result_above_the_entry_limit_is_not_kept(tmp_path: Path) -> None:
    from tako_server.edge.imagecache import MAX_ENTRY

    assert not ImageCache(tmp_path).put("b" * 64, entry(b"x" * (MAX_ENTRY + 1)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        (None, 3600),
        ("public, max-age=86400", 86400),
        ("max-age=5", 60),
        ("max-age=99999999", 7 * 24 * 3600),
        ("s-maxage=600", 600),
        ("no-store", None),
        ("private, max-age=600", None),
        ("no-cache", None),
    ],
)
def test_how_long_a_fetched_result_is_kept(header: str | None, ttl: int | None) -> None:
    assert ttl_of(header) == ttl


# --- the remote-address guard -----------------------------------------------------------


def resolved(*addresses: str) -> list[dict[str, object]]:
    return [
        {"hostname": "h", "host": a, "port": 443, "family": socket.AF_INET, "proto": 0,
         "flags": 0}
        for a in addresses
    ]  # fmt: skip


def test_only_public_addresses_are_connected_to() -> None:
    found = resolved("10.0.0.1", "93.184.216.34", "127.0.0.1")
    assert [i["host"] for i in only_public(found, "h")] == ["93.184.216.34"]  # type: ignore[arg-type]
    with pytest.raises(NonPublicAddress, match="no public address"):
        only_public(resolved("127.0.0.1", "169.254.169.254"), "h")  # type: ignore[arg-type]


# --- maintenance page -------------------------------------------------------------------


def test_the_maintenance_page_escapes_the_message() -> None:
    page = maintenance_page("<script>alert(1)</script> & back at 5").decode()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; back at 5" in page
    assert DEFAULT_MESSAGE in maintenance_page("  ").decode()


def test_the_maintenance_answer_is_a_503_with_retry_after() -> None:
    raw = maintenance_response(b"<p>x</p>", close=False, head_only=False)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 60" in head and b"\r\nCache-Control: no-store" in head
    assert b"Content-Type: text/html; charset=utf-8" in head and body == b"<p>x</p>"
    assert maintenance_response(b"<p>x</p>", close=True, head_only=True).endswith(
        b"Connection: close\r\n\r\n"
    )


def test_a_custom_503_page_is_read_only_from_inside_the_public_dir(tmp_path: Path) -> None:
    public = tmp_path / "public"
    public.mkdir()
    assert read_page(public) is None
    (public / "503.html").write_text("<h1>custom</h1>")
    assert read_page(public) == b"<h1>custom</h1>"
    (tmp_path / "secret.txt").write_text("secret")
    (public / "503.html").unlink()
    (public / "503.html").symlink_to(tmp_path / "secret.txt")
    assert read_page(public) is None
