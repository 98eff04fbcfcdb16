"""The error tree shared by both programs.

Every error Tako raises on purpose is a :class:`TakoError`: a stable ``code``, a one-line
message that names the rule that was broken, and an optional ``hint`` saying what to do.
Library errors are translated at the boundary with ``raise TakoError(...) from exc``.
"""

from __future__ import annotations


class TakoError(Exception):
    """Root of Tako's own errors; ``str(err)`` is the one-line message."""

    code: str = "error"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ValidationError(TakoError):
    """Input (a name, a version, a request field) broke a stated rule."""

    code = "invalid"


class ConfigError(TakoError):
    """tako.toml or another config file is invalid; ``issues`` holds every problem found."""

    code = "config"

    def __init__(self, issues: list[str], *, hint: str | None = None) -> None:
        self.issues = list(issues)
        super().__init__(
            "\n".join(self.issues) if self.issues else "invalid configuration", hint=hint
        )


class ProtocolError(TakoError):
    """A management message could not be framed, parsed or validated."""

    code = "protocol"


class RemoteError(TakoError):
    """tako-server answered a request with an error."""

    code = "remote"
