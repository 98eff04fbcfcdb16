"""The image optimizer (``/_tako/image``): the I/O shell around :mod:`.imagereq`,
:mod:`.imagework` and :mod:`.imagecache`.

Rules:

- :func:`serve_image` is called by the exchange for a :data:`~.decide.IMAGE` decision;
  it checks the request at once (400/403/405, :mod:`.imagereq`) and does the rest in a
  task of the runtime: nothing here blocks the event loop. File reads and the cache go
  through a thread; decoding and encoding run in one small thread pool per process
  (:data:`POOL_THREADS`), at most :data:`MAX_PENDING` jobs waiting or running: more
  answer 503 with ``Retry-After``. Identical requests in flight share one job.
- Sources: a local path is the app's own ``public/`` file when there is one, else a
  ``GET`` of that path from one of the app's instances (counted in flight like a
  proxied request; a scaled-to-zero app is cold-started). A remote URL is fetched only
  when ``remote_patterns`` allow it, never from a non-public address (checked on every
  address the name resolves to, :func:`only_public`), without redirects, within
  :data:`FETCH_TIMEOUT` and :data:`~.imagework.MAX_SOURCE_BYTES`.
- Answers: ``200`` with ``Content-Type``, ``ETag``, ``Cache-Control`` and
  ``Vary: Accept``; ``304`` when ``If-None-Match`` matches; errors are plain text with
  ``Cache-Control: no-store`` (a source 404 is 404; a source that failed 502; too large
  413; not an image 422), their details go to the app's log.
- Pillow and aiohttp are imported on first use, so an edge worker that never serves an
  image does not load them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tako_common.images import is_public_ip, parse_ip

from .hooks import ColdStartError, ColdStartKind
from .imagecache import CachedImage, ImageCache, etag_of, ttl_of
from .imagereq import ImageRequest, negotiate, parse_image_query
from .imagereq import cache_key as make_key
from .links import ClientLink
from .policy import Rejected, RequestHead, simple_response
from .snapshot import ImageRules, RoutedApp
from .static import StaticFile, etag_matches, resolve_static

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver, ResolveResult

    from tako_common.routes import RouteMatch

    from .imagework import Rendered
    from .runtime import EdgeRuntime

log = logging.getLogger(__name__)

IMAGE_DEADLINE = 60.0
FETCH_TIMEOUT = 15.0
POOL_THREADS = 2
MAX_PENDING = 16
FILE_CACHE_CONTROL = "public, no-cache"
NO_STORE = (("Cache-Control", "no-store"),)
_GET_HEAD = (b"GET", b"HEAD")

__all__ = ["ImageExchange", "NonPublicAddress", "only_public", "serve_image"]


class ImageExchange(Protocol):
    """What the image endpoint uses of an exchange."""

    rt: EdgeRuntime
    client: ClientLink
    head: RequestHead | None
    method: bytes
    query: bytes
    keep_alive: bool
    is_head: bool
    client_ip: bytes
    proto: bytes

    def respond(self, data: bytes) -> None: ...


class _Failed(Exception):
    """A step failed with an HTTP status (the shell's own failures)."""

    def __init__(self, status: int, reason: str, *, retry_after: bool = False) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


def serve_image(ex: ImageExchange, detail: tuple[RouteMatch[str], RoutedApp]) -> None:
    """Answer ``/_tako/image`` for the app in ``detail`` (see the module rules)."""
    match, app = detail
    rules = app.images
    assert rules is not None and ex.head is not None
    if ex.method not in _GET_HEAD:
        ex.respond(_error(ex, 405, "use GET or HEAD", extra=(("Allow", "GET, HEAD"),)))
        return
    try:
        request = parse_image_query(ex.query, rules)
    except Rejected as exc:
        ex.respond(_error(ex, exc.status, exc.reason))
        return
    fmt = negotiate(_header(ex.head, b"accept"), rules.formats, request.format)
    ex.client.set_deadline(ex.rt.now + IMAGE_DEADLINE)
    job = _answer(ex, app, match.prefix, request, fmt)
    ex.rt.spawn(job, name=f"edge-image-{app.key}")


async def _answer(
    ex: ImageExchange, app: RoutedApp, prefix: str, request: ImageRequest, fmt: str
) -> None:
    try:
        image = await _produce(ex, app, prefix, request, fmt)
    except (_Failed, Rejected) as exc:
        retry = getattr(exc, "retry_after", False)
        ex.rt.app_log(app.key, f"edge: {exc.status} for image {request.source[:200]}: {exc}")
        extra = (("Retry-After", "1"),) if retry else ()
        ex.respond(_error(ex, exc.status, exc.reason, extra=extra))
        return
    except Exception as exc:  # a bug here must not leave the client waiting
        log.exception("edge: image %s of %s failed", request.source[:200], app.key)
        ex.rt.app_log(app.key, f"edge: 500 for image {request.source[:200]}: {exc!r}")
        ex.respond(_error(ex, 500, "the image could not be produced"))
        return
    ex.rt.touch(app.key)
    ex.respond(_image_response(ex, image))


# --- producing --------------------------------------------------------------------------
async def _produce(
    ex: ImageExchange, app: RoutedApp, prefix: str, request: ImageRequest, fmt: str
) -> CachedImage:
    rules = app.images
    assert rules is not None
    found: StaticFile | None = None
    if request.remote:
        identity = f"url:{request.source}"
    else:
        if app.public_dir is not None:
            path = request.local_path
            found = await asyncio.to_thread(resolve_static, app.public_dir, path, prefix)
        identity = f"file:{found.path}:{found.etag}" if found else f"app:{request.source}"
    key = make_key(app.key, identity, request.width, request.quality, fmt)
    cache = _cache(rules)
    hit = await asyncio.to_thread(cache.get, key, time.time())
    if hit is not None:
        return hit

    async def make() -> CachedImage:
        data, ttl = await _fetch(ex, app, request, found)
        rendered = await _render(data, request.width, request.quality, fmt)
        entry = _entry(rendered, ttl, found is not None)
        if found is not None or ttl is not None:
            await asyncio.to_thread(cache.put, key, entry)
        return entry

    return await _single(key, make)


def _entry(rendered: Rendered, ttl: int | None, is_file: bool) -> CachedImage:
    if is_file:
        return CachedImage(
            rendered.data, rendered.content_type, etag_of(rendered.data), FILE_CACHE_CONTROL
        )
    control = f"public, max-age={ttl}" if ttl else "no-store"
    expires = time.time() + ttl if ttl else None
    return CachedImage(
        rendered.data, rendered.content_type, etag_of(rendered.data), control, expires
    )


_INFLIGHT: dict[str, asyncio.Future[CachedImage]] = {}


async def _single(key: str, make: Callable[[], Awaitable[CachedImage]]) -> CachedImage:
    """Run ``make`` once for concurrent requests of the same result."""
    waiting = _INFLIGHT.get(key)
    if waiting is not None and waiting.get_loop() is asyncio.get_running_loop():
        return await asyncio.shield(waiting)
    future: asyncio.Future[CachedImage] = asyncio.get_running_loop().create_future()
    _INFLIGHT[key] = future
    try:
        result = await make()
    except Exception as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: waiters (if any) get it, nobody else must
        raise
    except BaseException:  # cancelled (the server stops): so are the waiters
        future.cancel()
        raise
    else:
        future.set_result(result)
        return result
    finally:
        if _INFLIGHT.get(key) is future:
            del _INFLIGHT[key]


_CACHES: dict[str, ImageCache] = {}


def _cache(rules: ImageRules) -> ImageCache:
    cache = _CACHES.get(rules.cache_dir)
    if cache is None:
        if len(_CACHES) >= 256:
            _CACHES.clear()
        cache = _CACHES[rules.cache_dir] = ImageCache(Path(rules.cache_dir))
    return cache


# --- the pool ---------------------------------------------------------------------------
class _Pool:
    """The process's image threads and how many jobs wait for them."""

    executor: ThreadPoolExecutor | None = None
    pending = 0


async def _render(data: bytes, width: int, quality: int, fmt: str) -> Rendered:
    if _Pool.pending >= MAX_PENDING:
        raise _Failed(503, "the image optimizer is busy", retry_after=True)
    from . import imagework  # Pillow: only in processes that serve images

    if _Pool.executor is None:
        _Pool.executor = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="tako-image")
    _Pool.pending += 1
    try:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            _Pool.executor, imagework.render, data, width, quality, fmt
        )
    except imagework.ImageFailure as exc:
        raise _Failed(exc.status, exc.reason) from None
    finally:
        _Pool.pending -= 1


# --- fetching ---------------------------------------------------------------------------
async def _fetch(
    ex: ImageExchange, app: RoutedApp, request: ImageRequest, found: StaticFile | None
) -> tuple[bytes, int | None]:
    """The source's bytes and how long a result may be kept (None: not at all)."""
    from .imagework import MAX_SOURCE_BYTES

    if found is not None:
        if found.size > MAX_SOURCE_BYTES:
            raise _Failed(413, f"the source image is larger than {MAX_SOURCE_BYTES} bytes")
        return await asyncio.to_thread(_read_file, found.path, MAX_SOURCE_BYTES), None
    if request.remote:
        return await _download(request.source, {"Accept": "image/*"}, public_only=True)
    return await _from_app(ex, app, request)


def _read_file(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise _Failed(413, f"the source image is larger than {limit} bytes")
    return data


async def _from_app(
    ex: ImageExchange, app: RoutedApp, request: ImageRequest
) -> tuple[bytes, int | None]:
    rt, head = ex.rt, ex.head
    assert head is not None
    backends = app.backends
    if not backends and app.cold_start:
        try:
            backends = tuple(await rt.hooks.cold_start(app.key))
        except ColdStartError as exc:
            status = {ColdStartKind.REJECTED: 503, ColdStartKind.TIMEOUT: 504}.get(exc.kind, 502)
            raise _Failed(status, f"cold start: {exc.message}") from None
    if not backends:
        raise _Failed(503, "no healthy instance to read the image from", retry_after=True)
    backend = rt.begin_request(app.key, backends)
    try:
        host = f"[{backend.host}]" if ":" in backend.host else backend.host
        headers = {
            "Host": head.host,
            "Accept": "image/*",
            "X-Forwarded-For": ex.client_ip.decode("latin-1"),
            "X-Forwarded-Proto": ex.proto.decode("latin-1"),
            "X-Forwarded-Host": head.host,
        }
        url = f"http://{host}:{backend.port}{request.source}"
        return await _download(url, headers, public_only=False)
    finally:
        rt.end_request(app.key, backend.instance_id)


async def _download(
    url: str, headers: dict[str, str], *, public_only: bool
) -> tuple[bytes, int | None]:
    import aiohttp

    from .imagework import MAX_SOURCE_BYTES

    connector = aiohttp.TCPConnector(resolver=_public_resolver() if public_only else None)
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(url, headers=headers, allow_redirects=False) as response,
        ):
            if response.status != 200:
                status = 404 if response.status in (404, 410) else 502
                raise _Failed(status, f"the source answered {response.status}")
            if (response.content_length or 0) > MAX_SOURCE_BYTES:
                raise _Failed(413, f"the source image is larger than {MAX_SOURCE_BYTES} bytes")
            data = await _read_capped(response.content, MAX_SOURCE_BYTES)
            return data, ttl_of(response.headers.get("Cache-Control"))
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, NonPublicAddress):
            raise _Failed(403, "remote images may not come from a private address") from None
        raise _Failed(502, f"cannot reach the source: {exc}") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise _Failed(502, f"cannot fetch the source: {exc!r}") from None


async def _read_capped(stream: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _Failed(413, f"the source image is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class NonPublicAddress(OSError):
    """A remote image host resolved to no public address."""


def only_public(found: list[ResolveResult], host: str) -> list[ResolveResult]:
    """The public addresses among resolver results; :class:`NonPublicAddress` if none."""
    public = []
    for info in found:
        ip = parse_ip(info["host"])
        if ip is not None and is_public_ip(ip):
            public.append(info)
    if not public:
        raise NonPublicAddress(f"{host} resolves to no public address")
    return public


@cache
def _resolver_class() -> type[AbstractResolver]:
    from aiohttp.resolver import ThreadedResolver

    class PublicResolver(ThreadedResolver):
        """aiohttp's resolver, keeping only public addresses (:func:`only_public`)."""

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            return only_public(await super().resolve(host, port, family), host)

    return PublicResolver


def _public_resolver() -> AbstractResolver:
    return _resolver_class()()


# --- answers ----------------------------------------------------------------------------
def _header(head: RequestHead, name: bytes) -> str:
    """The first value of header ``name`` (lowercase) among the forwarded lines."""
    prefix = name + b":"
    for line in head.forward:
        if line[: len(prefix)].lower() == prefix:
            return line[len(prefix) :].strip().decode("latin-1")
    return ""


def _error(
    ex: ImageExchange, status: int, reason: str, *, extra: tuple[tuple[str, str], ...] = ()
) -> bytes:
    return simple_response(
        status,
        reason.encode("utf-8", "replace") + b"\n",
        close=not ex.keep_alive,
        extra=NO_STORE + extra,
        head_only=ex.is_head,
    )


def _image_response(ex: ImageExchange, image: CachedImage) -> bytes:
    head = ex.head
    inm = head.if_none_match if head is not None else b""
    fresh = bool(inm) and etag_matches(inm.decode("latin-1"), image.etag)
    lines = [
        "HTTP/1.1 304 Not Modified" if fresh else "HTTP/1.1 200 OK",
        f"ETag: {image.etag}",
        f"Cache-Control: {image.cache_control}",
        "Vary: Accept",
    ]
    if not fresh:
        lines += [
            f"Content-Type: {image.content_type}",
            f"Content-Length: {len(image.data)}",
            "X-Content-Type-Options: nosniff",
        ]
    if not ex.keep_alive:
        lines.append("Connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if fresh or ex.is_head:
        return head_bytes
    return head_bytes + image.data
