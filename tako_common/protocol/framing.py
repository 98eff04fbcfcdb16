"""Framing of the management protocol: JSON lines in, validated requests out (sans-I/O).

Rules:

- a frame (one line) is at most :data:`MAX_FRAME_BYTES` (1 MiB) including the newline;
  :class:`FrameDecoder` reports a longer line once and resynchronises on the next newline;
- a request line is strict JSON: one object, no duplicate keys (at any depth; the error
  names the key), no ``NaN``/``Infinity``, at most :data:`MAX_DEPTH` levels of nesting;
  an empty (or blank) line is an error too, never silently skipped;
- every refusal is a :class:`ProtocolError` with a stable ``code`` (``bad_json``,
  ``bad_request``, ``unknown_command``, ``invalid_request``, ``frame_too_large``) and a
  message naming the rule; the connection stays usable;
- envelopes: ``{"status":"ok","data":{...}}`` or
  ``{"status":"error","code":...,"message":...,"hint":...}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from tako_common.errors import ProtocolError, TakoError
from tako_common.protocol.requests import COMMANDS, Request
from tako_common.protocol.responses import Data

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 1024 * 1024
#: Deepest nesting a request may have (the request object itself is level 1).
MAX_DEPTH = 32

_REQUEST_ADAPTER: TypeAdapter[Request] = TypeAdapter(Request)


def _model_text(message: BaseModel) -> str:
    """A request leaves out every field at its default (the server fills it in the same), so
    a server that predates an optional field still accepts requests that do not use it;
    ``command``, the discriminator, is always sent."""
    command = getattr(message, "command", None)
    if not isinstance(command, str):
        return message.model_dump_json(exclude_none=False)
    data = message.model_dump(mode="json", exclude_defaults=True)
    data["command"] = command
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def encode_frame(message: BaseModel | dict[str, Any]) -> bytes:
    """Serialise one message as a JSON line; refuse frames over the cap."""
    if isinstance(message, BaseModel):
        text = _model_text(message)
    else:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    data = text.encode("utf-8") + b"\n"
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(
            f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
            code="frame_too_large",
        )
    return data


class FrameDecoder:
    """Splits a byte stream into JSON-line frames (sans-I/O).

    ``feed(data)`` yields each complete line (without the newline, possibly empty) or,
    for a line over the cap, a :class:`ProtocolError`; after an oversized line the decoder
    discards bytes up to the next newline and carries on, so the connection stays usable.
    """

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> Iterator[bytes | ProtocolError]:
        self._buf += data
        while True:
            idx = self._buf.find(b"\n")
            if idx < 0:
                if len(self._buf) >= self._max:
                    if not self._discarding:
                        yield _too_large(self._max)
                    self._discarding = True
                    self._buf.clear()
                return
            line = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            if self._discarding:
                self._discarding = False
                continue
            if len(line) + 1 > self._max:
                yield _too_large(self._max)
                continue
            yield line

    @property
    def pending(self) -> int:
        return len(self._buf)

    def __repr__(self) -> str:
        return f"FrameDecoder(pending={len(self._buf)}, discarding={self._discarding})"


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError(f"frame exceeds the {limit}-byte limit", code="frame_too_large")


# --------------------------------------------------------------------------- strict JSON


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ProtocolError(
                f"duplicate key {key!r} in request: every key may appear once",
                code="bad_request",
            )
        obj[key] = value
    return obj


def _no_constant(name: str) -> NoReturn:
    raise ProtocolError(f"invalid JSON: {name} is not a JSON number", code="bad_json")


def _too_deep() -> ProtocolError:
    return ProtocolError(f"request nesting is deeper than {MAX_DEPTH} levels", code="bad_request")


def _check_depth(value: Any) -> None:
    """Refuse a value nested deeper than :data:`MAX_DEPTH` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise _too_deep()
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def loads_strict(line: bytes | str) -> Any:
    """Parse one line as strict JSON (see the module rules); :class:`ProtocolError` if not."""
    if not line.strip():
        raise ProtocolError(
            "empty line: a request must be a JSON object on one line", code="bad_request"
        )
    try:
        value = json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError as exc:
        raise _too_deep() from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"invalid JSON: {exc}", code="bad_json") from exc
    _check_depth(value)
    return value


def parse_request(line: bytes | str) -> Request:
    """Parse and validate one request line; :class:`ProtocolError` names what is wrong."""
    raw = loads_strict(line)
    if not isinstance(raw, dict):
        raise ProtocolError("a request must be a JSON object", code="bad_request")
    command = raw.get("command")
    if command not in COMMANDS:
        raise ProtocolError(
            f"unknown command {command!r}; known: {', '.join(COMMANDS)}", code="unknown_command"
        )
    try:
        return _REQUEST_ADAPTER.validate_python(raw)
    except PydanticValidationError as exc:
        raise ProtocolError(
            f"invalid {command} request: {describe(exc)}", code="invalid_request"
        ) from exc


def describe(exc: PydanticValidationError) -> str:
    """One line naming every invalid field of a validation error."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"][1:] if p != err["loc"][0]) or ".".join(
            str(p) for p in err["loc"]
        )
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


# --------------------------------------------------------------------------- envelopes


def ok(data: Data) -> dict[str, Any]:
    """An ``ok`` response envelope around a typed payload."""
    return {"status": "ok", "data": data.model_dump(mode="json")}


def error(message: str, *, code: str = "error", hint: str | None = None) -> dict[str, Any]:
    """An ``error`` response envelope."""
    return {"status": "error", "code": code, "message": message, "hint": hint}


def error_from(exc: TakoError) -> dict[str, Any]:
    return error(exc.message, code=exc.code, hint=exc.hint)


class Response(Data):
    status: Literal["ok", "error"]
    data: Any = None
    code: str | None = None
    message: str | None = None
    hint: str | None = None


def parse_response(line: bytes | str) -> Response:
    """Parse one response line (client side)."""
    try:
        return Response.model_validate_json(line)
    except PydanticValidationError as exc:
        raise ProtocolError(f"invalid response from tako-server: {describe(exc)}") from exc


def check_hello(client_version: int, server_version: int) -> None:
    """Refuse to talk across protocol versions; the message says which side to upgrade."""
    if client_version != server_version:
        newer = "tako-server" if server_version < client_version else "the tako CLI"
        raise ProtocolError(
            f"protocol version mismatch: client={client_version} server={server_version}",
            code="version_mismatch",
            hint=f"upgrade {newer} so both speak the same protocol",
        )
