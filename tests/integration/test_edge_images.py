"""The image optimizer and maintenance mode through a real edge (in-process and with two
real worker processes), real TLS clients and a real app process serving images.

The app process (``IMAGE_APP``) serves a PNG at ``/dyn/photo.png`` (as the app's own
route: a local source that is not a ``public/`` file), counts the requests it gets, and
doubles as a "remote" image server on 127.0.0.1 (allowed by a pattern naming that
address). Results are decoded with Pillow to check what was made.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from tako_server.edge import Backend, EdgeApp
from tako_server.edge.snapshot import ImageRules
from tests.integration.test_edge_harness import (
    EdgeEnv,
    RawResponse,
    edge_env,
    free_port,
    raw_request,
    wait_for_port,
)

__all__ = ["edge_env"]

HOST = "pics.example.com"
KEY = "pics/prod"
WEBP_AVIF = "image/avif,image/webp,image/apng,*/*;q=0.8"

IMAGE_APP = r"""
import io, sys
from aiohttp import web
from PIL import Image

COUNT = {"n": 0}

def png(size, color):
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()

PHOTO = png((1000, 500), (20, 160, 60))

async def photo(request):
    COUNT["n"] += 1
    return web.Response(body=PHOTO, content_type="image/png",
                        headers={"Cache-Control": "public, max-age=600"})

async def nostore(request):
    COUNT["n"] += 1
    return web.Response(body=PHOTO, content_type="image/png",
                        headers={"Cache-Control": "no-store"})

async def count(request):
    return web.json_response(COUNT)

async def moved(request):
    raise web.HTTPFound("/dyn/photo.png")

async def gone(request):
    raise web.HTTPNotFound()

async def other(request):
    return web.Response(text="the app: " + request.path)

app = web.Application()
app.router.add_get("/dyn/photo.png", photo)
app.router.add_get("/dyn/nostore.png", nostore)
app.router.add_get("/dyn/moved.png", moved)
app.router.add_get("/dyn/gone.png", gone)
app.router.add_get("/count", count)
app.router.add_route("*", "/{tail:.*}", other)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


@pytest.fixture(scope="module")
def image_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The app process serving images; yields its port."""
    script = tmp_path_factory.mktemp("image-app") / "app.py"
    script.write_text(IMAGE_APP)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port)])
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def png_bytes(size: tuple[int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30, 90) if mode == "RGBA" else (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def make_public(root: Path) -> Path:
    public = root / "public"
    (public / "images").mkdir(parents=True)
    (public / "images" / "hero.png").write_bytes(png_bytes((1600, 1200)))
    (public / "images" / "logo.png").write_bytes(png_bytes((800, 400), "RGBA"))
    (public / "secret").mkdir()
    (public / "secret" / "a.png").write_bytes(png_bytes((100, 100)))
    bomb = io.BytesIO()
    Image.new("L", (6000, 6000), 0).save(bomb, "PNG")  # 36 MP in a few KB
    (public / "images" / "bomb.png").write_bytes(bomb.getvalue())
    return public


async def setup(env: EdgeEnv, tmp_path: Path, app_port: int, **changes: object) -> EdgeApp:
    rules = ImageRules(
        local_patterns=("/images/**", "/dyn/*"),
        remote_patterns=(f"http://127.0.0.1:{app_port}/dyn/**", f"http://localhost:{app_port}/**"),
        sizes=(320, 640),
        qualities=(50, 75),
        formats=("webp", "avif"),
        cache_dir=str(tmp_path / "image-cache"),
    )
    app = EdgeApp(
        KEY,
        (Backend(1, "127.0.0.1", app_port),),
        str(make_public(tmp_path) if not (tmp_path / "public").exists() else tmp_path / "public"),
        False,
        images=rules,
    )
    app = replace(app, **changes)  # type: ignore[arg-type]
    env.hooks.routes = [(HOST, KEY)]
    env.hooks.apps = {KEY: app}
    env.push()
    await asyncio.sleep(0.3 if env.workers else 0)
    return app


async def get(
    env: EdgeEnv, target: str, accept: str = WEBP_AVIF, method: str = "GET", **headers: str
) -> RawResponse:
    extra = {"Accept": accept, **headers}
    return await raw_request(env.https, HOST, target, tls=True, method=method, headers=extra)


def decoded(response: RawResponse) -> Image.Image:
    assert response.status == 200, response.raw[:300]
    return Image.open(io.BytesIO(response.body))


async def wait_applied(env: EdgeEnv) -> None:
    """Every worker routes with the pushed snapshot (a few connections in a row)."""
    deadline = asyncio.get_running_loop().time() + 10
    hits = 0
    while hits < 8:
        assert asyncio.get_running_loop().time() < deadline, "edge did not apply the snapshot"
        hits = hits + 1 if (await get(env, "/images/hero.png")).status == 200 else 0


async def test_sizes_and_sources_outside_the_rules_are_refused(
    edge_env: EdgeEnv, tmp_path: Path, image_app: int
) -> None:
    await setup(edge_env, tmp_path, image_app)
    await wait_applied(edge_env)
    cases = [
        ("/_tako/image?url=/images/hero.png&w=500", 400, b"w=500 is not one of the sizes"),
        ("/_tako/image?url=/images/hero.png&w=320&q=90", 400, b"q=90"),
        ("/_tako/image?url=/images/hero.png", 400, b"w= (the width) is required"),
        ("/_tako/image?url=/images/hero.png&w=320&zoom=2", 400, b"unknown parameter"),
        ("/_tako/image?url=/images/../secret/a.png&w=320", 400, b"'..'"),
        ("/_tako/image?url=/secret/a.png&w=320", 403, b"local_patterns"),
        ("/_tako/image?url=https://evil.example.net/a.png&w=320", 403, b"remote_patterns"),
    ]
    for target, status, words in cases:
        response = await get(edge_env, target)
        assert response.status == status, (target, response.raw[:200])
        assert words in response.body, (target, response.body)
        assert response.headers["cache-control"] == "no-store"
    post = await get(edge_env, "/_tako/image?url=/images/hero.png&w=320", method="POST")
    assert post.status == 405


async def test_a_public_image_is_resized_to_webp_or_avif_cached_and_revalidated(
    edge_env: EdgeEnv, tmp_path: Path, image_app: int
) -> None:
    await setup(edge_env, tmp_path, image_app)
    await wait_applied(edge_env)
    target = "/_tako/image?url=/images/hero.png&w=640"
    avif = await get(edge_env, target)
    assert decoded(avif).format == "AVIF" and decoded(avif).size == (640, 480)
    assert avif.headers["content-type"] == "image/avif"
    assert avif.headers["vary"] == "Accept"
    webp = await get(edge_env, target, accept="image/webp,*/*")
    assert decoded(webp).format == "WEBP" and decoded(webp).size == (640, 480)
    cached = sorted((tmp_path / "image-cache").glob("*.img"))
    assert len(cached) == 2  # one result per format
    again = await get(edge_env, target, accept="image/webp,*/*")
    assert again.headers["etag"] == webp.headers["etag"] and again.body == webp.body
    validator = {"If-None-Match": webp.headers["etag"]}
    fresh = await get(edge_env, target, accept="image/webp,*/*", **validator)
    assert fresh.status == 304 and fresh.body == b""
    head = await get(edge_env, target, method="HEAD", accept="image/webp")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == len(webp.body)
    explicit = await get(edge_env, target + "&f=webp&q=50", accept="image/avif")
    assert decoded(explicit).format == "WEBP"
    assert sorted((tmp_path / "image-cache").glob("*.img")) != cached


async def test_clients_without_webp_get_jpeg_or_png_and_no_upscaling(
    edge_env: EdgeEnv, tmp_path: Path, image_app: int
) -> None:
    await setup(edge_env, tmp_path, image_app)
    await wait_applied(edge_env)
    photo = await get(edge_env, "/_tako/image?url=/images/hero.png&w=320", accept="*/*")
    assert decoded(photo).format == "JPEG" and decoded(photo).size == (320, 240)
    logo = await get(edge_env, "/_tako/image?url=/images/logo.png&w=640", accept="*/*")
    assert decoded(logo).format == "PNG" and decoded(logo).mode == "RGBA"  # transparency kept
    assert decoded(logo).size == (640, 320)


async def test_an_image_from_the_app_itself_is_fetched_once_then_served_from_the_cache(
    edge_env: EdgeEnv, tmp_path: Path, image_app: int
) -> None:
    await setup(edge_env, tmp_path, image_app)
    await wait_applied(edge_env)

    async def app_count() -> int:
        response = await raw_request(image_app, "x", "/count")
        return int(json.loads(response.body)["n"])

    before = await app_count()
    first = await get(edge_env, "/_tako/image?url=/dyn/photo.png&w=320")
    assert decoded(first).size == (320, 160)
    assert first.headers["cache-control"] == "public, max-age=600"
    second = await get(edge_env, "/_tako/image?url=/dyn/photo.png&w=320")
    assert second.body == first.body
    assert await app_count() == before + 1  # the second came from the cache
    await get(edge_env, "/_tako/image?url=/dyn/nostore.png&w=320")
    await get(edge_env, "/_tako/image?url=/dyn/nostore.png&w=320")
    assert await app_count() == before + 3  # no-store: never kept
    gone = await get(edge_env, "/_tako/image?url=/dyn/gone.png&w=320")
    assert gone.status == 404
    text = await get(edge_env, "/_tako/image?url=/dyn/page.png&w=320")  # 200, but text
    assert text.status == 422 and b"not an image" in text.body
    deadline = asyncio.get_running_loop().time() + 5
    while not any(k == KEY and "422 for image /dyn/page.png" in line
                  for k, line in edge_env.hooks.logs):  # fmt: skip
        assert asyncio.get_running_loop().time() < deadline, edge_env.hooks.logs
        await asyncio.sleep(0.05)


async def test_remote_images_only_from_allowed_public_or_named_addresses(
    edge_env: EdgeEnv, tmp_path: Path, image_app: int
) -> None:
    await setup(edge_env, tmp_path, image_app)
    await wait_applied(edge_env)
    allowed = f"http://127.0.0.1:{image_app}/dyn/photo.png"
    response = await get(edge_env, f"/_tako/image?url={allowed}&w=320")
    assert decoded(response).size == (320, 160)
    # "localhost" is allowed by a pattern, but the name resolves to a loopback address
    by_name = f"http://localhost:{image_app}/dyn/photo.png"
    refused = await get(edge_env, f"/_tako/image?url={by_name}&w=320")
    assert refused.status == 403 and b"private address" in refused.body
    redirect = f"http://127.0.0.1:{image_app}/dyn/moved.png"
    assert (await get(edge_env, f"/_tako/image?url={redirect}&w=320")).status == 502


async def test_a_decompression_bomb_is_refused_and_the_edge_keeps_serving(
    edge_env: EdgeEnv, tmp_path: Path, image_app: int
) -> None:
    await setup(edge_env, tmp_path, image_app)
    await wait_applied(edge_env)
    bomb = await get(edge_env, "/_tako/image?url=/images/bomb.png&w=320")
    assert bomb.status == 413 and b"pixels" in bomb.body
    assert (await get(edge_env, "/_tako/image?url=/images/hero.png&w=320")).status == 200


async def test_maintenance_answers_503_with_a_page_and_lifts(
    edge_env: EdgeEnv, tmp_path: Path, image_app: int
) -> None:
    await setup(edge_env, tmp_path, image_app)
    await wait_applied(edge_env)
    await setup(edge_env, tmp_path, image_app, maintenance="Back at <b>5</b>")
    deadline = asyncio.get_running_loop().time() + 10
    while (await get(edge_env, "/anything")).status != 503:
        assert asyncio.get_running_loop().time() < deadline, "maintenance never applied"
    for target in ("/anything", "/images/hero.png", "/_tako/image?url=/images/hero.png&w=320"):
        down = await get(edge_env, target)
        assert down.status == 503, target
        assert down.headers["retry-after"] == "60"
        assert down.headers["content-type"] == "text/html; charset=utf-8"
        assert b"Back at &lt;b&gt;5&lt;/b&gt;" in down.body
    (tmp_path / "public" / "503.html").write_text("<h1>our own page</h1>")
    public = tmp_path / "public2"
    (tmp_path / "public").rename(public)  # a new release: its own page is read
    await setup(edge_env, tmp_path, image_app, maintenance="", public_dir=str(public))
    while b"our own page" not in (await get(edge_env, "/x")).body:
        assert asyncio.get_running_loop().time() < deadline, "the custom page never showed"
    await setup(edge_env, tmp_path, image_app, maintenance=None, public_dir=str(public))
    while (await get(edge_env, "/anything")).status == 503:
        assert asyncio.get_running_loop().time() < deadline, "maintenance never lifted"
    assert (await get(edge_env, "/anything")).body == b"the app: /anything"


async def test_the_edge_keeps_answering_while_images_are_made(
    edge_env: EdgeEnv, tmp_path: Path, image_app: int
) -> None:
    """Decoding and encoding run in the pool: other requests are answered meanwhile."""
    await setup(edge_env, tmp_path, image_app)
    await wait_applied(edge_env)
    big = Image.linear_gradient("L").resize((5000, 4000)).convert("RGB")
    big.save(tmp_path / "public" / "images" / "big.png")  # 20 MP: about a second per result
    jobs = [
        asyncio.ensure_future(get(edge_env, f"/_tako/image?url=/images/big.png&w={w}&q={q}"))
        for w, q in ((320, 50), (640, 75), (320, 75), (640, 50))
    ]
    answered_meanwhile = 0
    while not all(job.done() for job in jobs):
        status = await raw_request(edge_env.https, "tako.internal", "/status", tls=True)
        assert status.status == 200
        answered_meanwhile += not all(job.done() for job in jobs)
    assert [decoded(await job).width for job in jobs] == [320, 640, 320, 640]
    assert answered_meanwhile >= 8, answered_meanwhile  # a blocked loop: about one per image
