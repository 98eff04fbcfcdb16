"""Messages between the edge's main process and its workers: one dataclass per ``op``.

Rules:

- Every message on the channel (:mod:`.channel`) is one of the dataclasses below, sent
  as one JSON object per line with its ``op``; :func:`encode` and :func:`decode` are the
  only code that turns messages into bytes and back.
- main -> worker: ``snapshot`` (:class:`SnapshotPush`), ``certs`` (:class:`CertsChanged`),
  ``stop`` (:class:`StopWorker`), ``cold_start_reply``, ``challenge_reply``.
  worker -> main: ``started``, ``ready``, ``activity`` (:class:`ActivityReport`),
  ``cold_start`` (:class:`ColdStartRequest`), ``challenge``, ``app_log``, ``meter``
  (:class:`MeterReport`, at most once a second).
- A request that needs an answer carries an ``id``; its reply carries the same ``id``.
- :func:`decode` refuses an unknown ``op`` or a malformed field with a
  :class:`MessageError` that names the op and the field; the channel logs it and reads
  on. Nothing is coerced: an ``id`` must be a JSON integer, a ``key`` a string.
- Encoding is hand-written (plain dicts and lists for :mod:`json`): these messages are
  not per request (a snapshot per change, an activity report per ~250 ms at most), but a
  snapshot push to many workers is encoded once (:func:`encode`, then the same bytes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tako_common.errors import TakoError

from .clientaddr import MODES
from .hooks import ColdStartKind
from .meter import check_snapshot
from .snapshot import Backend, EdgeApp, EdgeSnapshot, ImageRules

__all__ = [
    "ActivityReport",
    "AppLogLine",
    "CertsChanged",
    "ChallengeReply",
    "ChallengeRequest",
    "ColdStartReply",
    "ColdStartRequest",
    "Message",
    "MessageError",
    "MeterReport",
    "Ready",
    "SnapshotPush",
    "Started",
    "StopWorker",
    "decode",
    "encode",
]

Wire = dict[str, Any]


class MessageError(TakoError):
    """A channel line that is not a valid message; ``op`` is ``?`` when it has none."""

    code = "edge_message"

    def __init__(self, op: str, problem: str) -> None:
        super().__init__(f"edge channel message {op!r} refused: {problem}")
        self.op = op


# --- field readers (raise ValueError/KeyError; decode() adds the op) ---------------------
def _int(data: Mapping[str, Any], name: str) -> int:
    value = data[name]
    if type(value) is not int:
        raise ValueError(f"field {name!r} must be an integer, not {value!r:.40}")
    return value


def _str(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, not {value!r:.40}")
    return value


def _seconds(data: Mapping[str, Any], name: str) -> float:
    value = data[name]
    if type(value) not in (int, float) or value < 0:
        raise ValueError(f"field {name!r} must be a number of seconds, not {value!r:.40}")
    return float(value)


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, not {value!r:.40}")
    return value


def _backend(item: Any) -> Backend:
    if not (isinstance(item, list) and len(item) == 3):
        raise ValueError(f"a backend must be [instance_id, host, port], not {item!r:.60}")
    ident, host, port = item
    if type(ident) is not int or not isinstance(host, str) or type(port) is not int:
        raise ValueError(f"a backend must be [int, str, int], not {item!r:.60}")
    return Backend(ident, host, port)


def _backends(value: Any) -> tuple[Backend, ...]:
    if not isinstance(value, list):
        raise ValueError(f"backends must be a list, not {value!r:.40}")
    return tuple(_backend(item) for item in value)


# --- main -> worker -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SnapshotPush:
    """The routes and apps to serve with from now on."""

    op: ClassVar[str] = "snapshot"
    snapshot: EdgeSnapshot

    def to_wire(self) -> Wire:
        apps = {key: _app_wire(app) for key, app in self.snapshot.apps.items()}
        return {"routes": [[text, key] for text, key in self.snapshot.routes], "apps": apps}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SnapshotPush:
        routes = []
        for pair in data["routes"]:
            if not (
                isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
            ):
                raise ValueError(f"a route must be [text, app key], not {pair!r:.60}")
            routes.append((pair[0], pair[1]))
        apps = {}
        for key, raw in _object(data["apps"], "apps").items():
            raw = _object(raw, f"app {key!r}")
            public = raw["public_dir"]
            if public is not None and not isinstance(public, str):
                raise ValueError(f"public_dir of {key!r} must be a string or null")
            if not isinstance(raw["cold_start"], bool):
                raise ValueError(f"cold_start of {key!r} must be true or false")
            maintenance = raw.get("maintenance")
            if maintenance is not None and not isinstance(maintenance, str):
                raise ValueError(f"maintenance of {key!r} must be a string or null")
            apps[key] = EdgeApp(
                key,
                _backends(raw["backends"]),
                public,
                raw["cold_start"],
                maintenance=maintenance,
                images=_image_rules(raw.get("images"), key),
                source_ip=_source_ip(raw.get("source_ip", "auto"), key),
            )
        return cls(EdgeSnapshot(routes=tuple(routes), apps=apps))


def _app_wire(app: EdgeApp) -> Wire:
    wire: Wire = {
        "backends": [[b.instance_id, b.host, b.port] for b in app.backends],
        "public_dir": app.public_dir,
        "cold_start": app.cold_start,
    }
    if app.maintenance is not None:
        wire["maintenance"] = app.maintenance
    if app.images is not None:
        wire["images"] = {name: getattr(app.images, name) for name in ImageRules.__slots__}
    if app.source_ip != "auto":
        wire["source_ip"] = app.source_ip
    return wire


def _source_ip(raw: Any, key: str) -> str:
    if raw not in MODES:
        raise ValueError(f"source_ip of {key!r} must be one of {', '.join(MODES)}")
    return str(raw)


def _image_rules(raw: Any, key: str) -> ImageRules | None:
    """The ``images`` of an app on the wire (lists of strings/integers and a cache dir)."""
    if raw is None:
        return None
    raw = _object(raw, f"images of {key!r}")
    texts = {n: raw[n] for n in ("local_patterns", "remote_patterns", "formats")}
    numbers = {n: raw[n] for n in ("sizes", "qualities")}
    for name, items in texts.items():
        if not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
            raise ValueError(f"images.{name} of {key!r} must be a list of strings")
    for name, items in numbers.items():
        if not (isinstance(items, list) and all(type(i) is int for i in items)):
            raise ValueError(f"images.{name} of {key!r} must be a list of integers")
    cache_dir = _str(raw, "cache_dir")
    return ImageRules(
        **{name: tuple(items) for name, items in {**texts, **numbers}.items()},
        cache_dir=cache_dir,
    )


@dataclass(frozen=True, slots=True)
class CertsChanged:
    """Certificates on disk changed: re-read them."""

    op: ClassVar[str] = "certs"

    def to_wire(self) -> Wire:
        return {}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> CertsChanged:
        return cls()


@dataclass(frozen=True, slots=True)
class StopWorker:
    """Stop accepting, drain for up to ``drain`` seconds, exit."""

    op: ClassVar[str] = "stop"
    drain: float

    def to_wire(self) -> Wire:
        return {"drain": self.drain}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> StopWorker:
        return cls(_seconds(data, "drain"))


@dataclass(frozen=True, slots=True)
class ColdStartReply:
    """Answer to :class:`ColdStartRequest`: ``backends``, or an ``error`` kind + message."""

    op: ClassVar[str] = "cold_start_reply"
    id: int
    backends: tuple[Backend, ...] = ()
    error: ColdStartKind | None = None
    message: str = ""

    def to_wire(self) -> Wire:
        if self.error is not None:
            return {"id": self.id, "error": self.error.value, "message": self.message}
        return {"id": self.id, "backends": [[b.instance_id, b.host, b.port] for b in self.backends]}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ColdStartReply:
        if "error" in data:
            kind = ColdStartKind(_str(data, "error"))  # ValueError names the bad kind
            return cls(_int(data, "id"), error=kind, message=_str(data, "message"))
        return cls(_int(data, "id"), backends=_backends(data["backends"]))


@dataclass(frozen=True, slots=True)
class ChallengeReply:
    """Answer to :class:`ChallengeRequest` (``answer`` None: unknown token)."""

    op: ClassVar[str] = "challenge_reply"
    id: int
    answer: str | None

    def to_wire(self) -> Wire:
        return {"id": self.id, "answer": self.answer}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ChallengeReply:
        answer = data["answer"]
        if answer is not None and not isinstance(answer, str):
            raise ValueError(f"field 'answer' must be a string or null, not {answer!r:.40}")
        return cls(_int(data, "id"), answer)


# --- worker -> main -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Started:
    """The worker listens to the channel; it serves once it has a snapshot."""

    op: ClassVar[str] = "started"
    pid: int

    def to_wire(self) -> Wire:
        return {"pid": self.pid}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Started:
        return cls(_int(data, "pid"))


@dataclass(frozen=True, slots=True)
class Ready:
    """First snapshot applied, certificates read: the worker accepts now."""

    op: ClassVar[str] = "ready"
    pid: int

    def to_wire(self) -> Wire:
        return {"pid": self.pid}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Ready:
        return cls(_int(data, "pid"))


@dataclass(frozen=True, slots=True)
class ActivityReport:
    """Requests in flight per app key and instance id (a key at zero is reported once)."""

    op: ClassVar[str] = "activity"
    in_flight: Mapping[str, Mapping[int, int]] = field(default_factory=dict)

    def to_wire(self) -> Wire:
        apps = {
            key: {str(i): n for i, n in counts.items()} for key, counts in self.in_flight.items()
        }
        return {"apps": apps}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ActivityReport:
        in_flight: dict[str, dict[int, int]] = {}
        for key, counts in _object(data["apps"], "apps").items():
            parsed = in_flight[key] = {}
            for ident, count in _object(counts, f"counts of {key!r}").items():
                if type(count) is not int:
                    raise ValueError(f"in-flight count of {key!r} must be an integer")
                parsed[int(ident)] = count  # ValueError for a key that is not a number
        return cls(in_flight)


@dataclass(frozen=True, slots=True)
class ColdStartRequest:
    """Start ``key`` for a waiting request; answered by :class:`ColdStartReply`."""

    op: ClassVar[str] = "cold_start"
    id: int
    key: str

    def to_wire(self) -> Wire:
        return {"id": self.id, "key": self.key}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ColdStartRequest:
        return cls(_int(data, "id"), _str(data, "key"))


@dataclass(frozen=True, slots=True)
class ChallengeRequest:
    """The answer to an ACME HTTP-01 ``token``; answered by :class:`ChallengeReply`."""

    op: ClassVar[str] = "challenge"
    id: int
    token: str

    def to_wire(self) -> Wire:
        return {"id": self.id, "token": self.token}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ChallengeRequest:
        return cls(_int(data, "id"), _str(data, "token"))


@dataclass(frozen=True, slots=True)
class AppLogLine:
    """A line for the app's log (the edge's 502/503/504 explanations)."""

    op: ClassVar[str] = "app_log"
    key: str
    line: str

    def to_wire(self) -> Wire:
        return {"key": self.key, "line": self.line}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> AppLogLine:
        return cls(_str(data, "key"), _str(data, "line"))


@dataclass(frozen=True, slots=True)
class MeterReport:
    """A worker's cumulative request counters (:meth:`~.meter.Meter.snapshot`)."""

    op: ClassVar[str] = "meter"
    snapshot: Mapping[str, Any]

    def to_wire(self) -> Wire:
        return {"snapshot": self.snapshot}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> MeterReport:
        return cls(check_snapshot(_object(data["snapshot"], "snapshot")))


Message = (
    SnapshotPush
    | CertsChanged
    | StopWorker
    | ColdStartReply
    | ChallengeReply
    | Started
    | Ready
    | ActivityReport
    | ColdStartRequest
    | ChallengeRequest
    | AppLogLine
    | MeterReport
)
Reply = ColdStartReply | ChallengeReply

_DECODERS: dict[str, Callable[[Mapping[str, Any]], Message]] = {
    SnapshotPush.op: SnapshotPush.from_wire,
    CertsChanged.op: CertsChanged.from_wire,
    StopWorker.op: StopWorker.from_wire,
    ColdStartReply.op: ColdStartReply.from_wire,
    ChallengeReply.op: ChallengeReply.from_wire,
    Started.op: Started.from_wire,
    Ready.op: Ready.from_wire,
    ActivityReport.op: ActivityReport.from_wire,
    ColdStartRequest.op: ColdStartRequest.from_wire,
    ChallengeRequest.op: ChallengeRequest.from_wire,
    AppLogLine.op: AppLogLine.from_wire,
    MeterReport.op: MeterReport.from_wire,
}
OPS = tuple(_DECODERS)


def encode(message: Message) -> bytes:
    """One line of JSON (with its newline) for ``message``."""
    wire = {"op": message.op, **message.to_wire()}
    return json.dumps(wire, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    """The message in one channel line; raises :class:`MessageError` naming the op."""
    try:
        data = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise MessageError("?", f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MessageError("?", f"not a JSON object: {line[:60]!r}")
    op = data.get("op")
    if not isinstance(op, str):
        raise MessageError("?", f"no op (known: {', '.join(OPS)})")
    decoder = _DECODERS.get(op)
    if decoder is None:
        raise MessageError(op, f"unknown op (known: {', '.join(OPS)})")
    try:
        return decoder(data)
    except KeyError as exc:
        raise MessageError(op, f"missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise MessageError(op, str(exc)) from None
