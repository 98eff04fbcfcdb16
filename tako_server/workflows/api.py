"""The job queue's HTTP API on 127.0.0.1 (``workflows_port``): any language can be a worker.

Rules (the contract is docs/workflows.md, "The API"):

- every request carries ``Authorization: Bearer $TAKO_API_TOKEN``; the token names one
  app/env, and only that app/env's runs are seen or changed (another app's run id is a
  404, exactly like a missing one); no or an unknown token is 401;
- bodies are JSON objects; a body over the cap is 413, malformed JSON or a wrong field
  400, an unknown group 404, a run the worker no longer holds 409 — each with
  ``{"error": {"code", "message"}}`` and nothing changed;
- ``POST /v1/claim`` long-polls up to ``wait`` seconds (at most :data:`MAX_WAIT`); 204
  when nothing came;
- the listener binds loopback only: the API is reachable only from the host's processes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tako_common.errors import TakoError
from tako_server.workflows.policy import MAX_PAYLOAD_BYTES
from tako_server.workflows.service import (
    AppWorkflows,
    NoWorkflows,
    PayloadTooLarge,
    UnknownGroup,
    WorkflowService,
)

MAX_WAIT = 30.0
#: the body cap: the payload cap plus room for the other fields
MAX_BODY = MAX_PAYLOAD_BYTES + 8 * 1024
DEFAULT_WORKER = "api"
log = logging.getLogger(__name__)

Handler = Callable[[web.Request, AppWorkflows, dict[str, Any]], Awaitable[web.Response]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is default:
        return value
    if isinstance(value, bool) and kind is not bool:
        raise ApiError(400, "invalid", f"field {name!r} has the wrong type")
    if not isinstance(value, kind):
        raise ApiError(400, "invalid", f"field {name!r} has the wrong type")
    return value


def _run_id(request: web.Request) -> int:
    text = request.match_info["run_id"]
    if not text.isdigit() or len(text) > 18:
        raise ApiError(404, "not_found", f"no run {text!r}")
    return int(text)


def _worker(body: dict[str, Any]) -> str:
    worker = _field(body, "worker", str, DEFAULT_WORKER)
    if not 1 <= len(worker) <= 256:
        raise ApiError(400, "invalid", "field 'worker' is 1-256 characters")
    return str(worker)


class QueueApi:
    """The aiohttp application and its loopback listener."""

    def __init__(self, service: WorkflowService, port: int) -> None:
        self.service = service
        self.port = port
        self.runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"QueueApi(127.0.0.1:{self.port}, running={self.runner is not None})"

    def app(self) -> web.Application:
        application = web.Application(client_max_size=MAX_BODY)
        routes = [
            ("POST", "/v1/runs", self.enqueue),
            ("POST", "/v1/claim", self.claim),
            ("GET", "/v1/runs/{run_id}", self.get),
            ("POST", "/v1/runs/{run_id}/heartbeat", self.heartbeat),
            ("POST", "/v1/runs/{run_id}/complete", self.complete),
            ("POST", "/v1/runs/{run_id}/fail", self.fail),
        ]
        for method, path, handler in routes:
            application.router.add_route(method, path, self._wrap(handler))
        return application

    async def start(self) -> None:
        self.runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_port=True)
        await site.start()
        log.info("workflows API on http://127.0.0.1:%d", self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def _wrap(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                entry = self._authorize(request)
                body = await self._body(request)
                return await handler(request, entry, body)
            except ApiError as exc:
                return error_response(exc.status, exc.code, exc.message)
            except PayloadTooLarge as exc:
                return error_response(413, exc.code, exc.message)
            except (UnknownGroup, NoWorkflows) as exc:
                return error_response(404, exc.code, exc.message)
            except TakoError as exc:
                return error_response(400, exc.code, exc.message)
            except Exception:  # noqa: BLE001 - the store failed (e.g. PostgreSQL is down)
                log.exception("workflows API: %s %s failed", request.method, request.path)
                return error_response(503, "queue_unavailable", "the queue is unavailable")

        return handle

    def _authorize(self, request: web.Request) -> AppWorkflows:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "send Authorization: Bearer $TAKO_API_TOKEN")
        entry = self.service.app_of_token(token.strip())
        if entry is None:
            raise ApiError(401, "unauthorized", "unknown token (use this app's TAKO_API_TOKEN)")
        return entry

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.method == "GET":
            return {}
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise ApiError(413, "payload_too_large", f"body over {MAX_BODY} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise ApiError(413, "payload_too_large", f"body over {MAX_BODY} bytes") from exc
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "the body must be a JSON object")
        return body

    async def enqueue(
        self, request: web.Request, entry: AppWorkflows, body: dict[str, Any]
    ) -> web.Response:
        group = _field(body, "group", str, None)
        if group is None:
            raise ApiError(400, "invalid", "field 'group' is required")
        delay = float(_field(body, "delay", (int, float), 0))
        if not 0 <= delay <= 365 * 24 * 3600:
            raise ApiError(400, "invalid", "field 'delay' is 0 to 31536000 seconds")
        key = _field(body, "key", str, None)
        if key is not None and not 1 <= len(key) <= 256:
            raise ApiError(400, "invalid", "field 'key' is 1-256 characters")
        run, created = await self.service.enqueue(
            entry, group, body.get("payload"), delay=delay, key=key
        )
        return web.json_response(
            {"run": run.to_json(), "created": created}, status=201 if created else 200
        )

    async def claim(
        self, request: web.Request, entry: AppWorkflows, body: dict[str, Any]
    ) -> web.Response:
        group = _field(body, "group", str, None)
        if group is None:
            raise ApiError(400, "invalid", "field 'group' is required")
        wait = float(_field(body, "wait", (int, float), 0))
        if not 0 <= wait <= MAX_WAIT:
            raise ApiError(400, "invalid", f"field 'wait' is 0 to {MAX_WAIT:g} seconds")
        run = await self.service.claim(entry, group, _worker(body), wait)
        if run is None:
            return web.Response(status=204)
        return web.json_response({"run": run.to_json()})

    async def get(
        self, request: web.Request, entry: AppWorkflows, body: dict[str, Any]
    ) -> web.Response:
        run = await entry.store.get(entry.app, entry.env, _run_id(request))
        if run is None:
            raise ApiError(404, "not_found", f"no run {_run_id(request)}")
        return web.json_response({"run": run.to_json()})

    async def heartbeat(
        self, request: web.Request, entry: AppWorkflows, body: dict[str, Any]
    ) -> web.Response:
        run_id = _run_id(request)
        if not await self.service.heartbeat(entry, run_id, _worker(body)):
            raise ApiError(409, "not_held", f"run {run_id} is not running under this worker")
        return web.json_response({"ok": True})

    async def complete(
        self, request: web.Request, entry: AppWorkflows, body: dict[str, Any]
    ) -> web.Response:
        run_id = _run_id(request)
        if not await self.service.complete(entry, run_id, _worker(body), body.get("result")):
            raise ApiError(409, "not_held", f"run {run_id} is not running under this worker")
        return web.json_response({"ok": True})

    async def fail(
        self, request: web.Request, entry: AppWorkflows, body: dict[str, Any]
    ) -> web.Response:
        run_id = _run_id(request)
        error = _field(body, "error", str, "failed")
        retry = _field(body, "retry", bool, True)
        run = await self.service.fail(entry, run_id, _worker(body), error, retry)
        if run is None:
            raise ApiError(409, "not_held", f"run {run_id} is not running under this worker")
        return web.json_response({"run": run.to_json()})
