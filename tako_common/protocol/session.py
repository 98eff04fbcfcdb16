"""Sessions: the two-way frames of ``exec`` and ``run_release`` after their first answer.

A session starts like any command: one request line, one ``ok`` line whose ``data`` is
:class:`SessionStarted` (or one ``error`` line, and nothing runs). From then on the
connection carries JSON lines both ways until the command ends:

- server to client, ``ok`` envelopes whose ``data`` is a :data:`SessionEvent`:
  :class:`SessionOutput` (a chunk of stdout or stderr, base64) any number of times, then
  exactly one :class:`SessionExit`, after which the server closes the connection;
- client to server, bare :data:`SessionInput` objects: :class:`StdinInput` (base64 bytes
  for the process's stdin or terminal), :class:`EofInput` (close its stdin),
  :class:`ResizeInput` (the terminal's new size). A bad input line is answered with an
  ``error`` envelope and the session goes on; a client that closes the connection ends
  the session: the server kills the process group.

Bytes travel base64-encoded, so output that is not UTF-8 (a binary, a terminal's escape
sequences cut mid-character) arrives intact. Pure: models and codecs, no I/O.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from tako_common.errors import ProtocolError
from tako_common.protocol.fields import Count
from tako_common.protocol.framing import describe, loads_strict
from tako_common.protocol.responses import Data

#: Largest chunk of bytes one frame carries (base64 keeps it far below the frame cap).
MAX_CHUNK = 64 * 1024
#: Largest terminal dimension accepted (columns or rows).
MAX_TERMINAL_SIZE = 10_000


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    """Strict base64 (no stray characters); :class:`ProtocolError` when it is not."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ProtocolError("session data is not valid base64", code="bad_request") from exc


# --------------------------------------------------------------------------- server -> client


class SessionStarted(Data):
    """The first answer: the process runs (its pid), in ``workdir`` of release ``version``."""

    kind: Literal["started"] = "started"
    app: str
    env: str
    version: str
    workdir: str
    pid: int
    tty: bool = False
    #: seconds after which the server kills the command (``run_release``), else ``None``
    timeout: int | None = None


class SessionOutput(Data):
    kind: Literal["output"] = "output"
    stream: Literal["stdout", "stderr"]
    #: base64 of the bytes (a terminal session has only ``stdout``)
    data: str

    @property
    def raw(self) -> bytes:
        return decode_bytes(self.data)


class SessionExit(Data):
    """The last event. ``exit_code`` follows the shell: 128 + N when signal N ended it."""

    kind: Literal["exit"] = "exit"
    exit_code: int
    signal: str | None = None
    timed_out: bool = False
    duration: float = 0.0


SessionEvent = Annotated[SessionOutput | SessionExit, Field(discriminator="kind")]
_EVENTS: TypeAdapter[SessionOutput | SessionExit] = TypeAdapter(SessionEvent)


def output_event(stream: Literal["stdout", "stderr"], data: bytes) -> SessionOutput:
    return SessionOutput(stream=stream, data=encode_bytes(data))


def parse_event(data: object) -> SessionOutput | SessionExit:
    """The ``data`` of a session's ``ok`` line as its event model (client side)."""
    try:
        return _EVENTS.validate_python(data)
    except PydanticValidationError as exc:
        raise ProtocolError(
            f"tako-server sent an unexpected session event: {describe(exc)}",
            hint="the CLI and tako-server versions may differ; upgrade the older one",
        ) from exc


# --------------------------------------------------------------------------- client -> server


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StdinInput(_Input):
    kind: Literal["stdin"] = "stdin"
    data: str = Field(max_length=4 * MAX_CHUNK)

    @classmethod
    def of(cls, data: bytes) -> StdinInput:
        return cls(data=encode_bytes(data))


class EofInput(_Input):
    kind: Literal["eof"] = "eof"


class ResizeInput(_Input):
    kind: Literal["resize"] = "resize"
    cols: Count = Field(ge=1, le=MAX_TERMINAL_SIZE)
    rows: Count = Field(ge=1, le=MAX_TERMINAL_SIZE)


SessionInput = Annotated[StdinInput | EofInput | ResizeInput, Field(discriminator="kind")]
_INPUTS: TypeAdapter[StdinInput | EofInput | ResizeInput] = TypeAdapter(SessionInput)


def parse_input(line: bytes | str) -> StdinInput | EofInput | ResizeInput:
    """One client line of a session, strictly parsed; :class:`ProtocolError` names the rule.

    A ``stdin`` frame's data is checked to be base64 here, so the caller may decode it.
    """
    raw = loads_strict(line)
    if not isinstance(raw, dict):
        raise ProtocolError("a session input must be a JSON object", code="bad_request")
    try:
        frame = _INPUTS.validate_python(raw)
    except PydanticValidationError as exc:
        raise ProtocolError(
            f"invalid session input: {describe(exc)} (kinds: stdin, eof, resize)",
            code="invalid_request",
        ) from exc
    if isinstance(frame, StdinInput):
        decode_bytes(frame.data)
    return frame
