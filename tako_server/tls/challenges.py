"""HTTP-01 challenge answers: the token -> key-authorization map the edge serves on :80.

Rules:

- :class:`ChallengeStore` is a small dict-like object. The ACME issuer ``put``s a token
  before it asks the CA to validate and ``remove``s it when the order is done.
- Edge workers are other processes, so a store built with ``mirror_dir`` also writes
  each answer to ``{mirror_dir}/{token}`` (0644, atomic) and ``get`` falls back to that
  file; a worker builds ``ChallengeStore(mirror_dir)`` over the same directory and
  sees answers without any message passing.
- Only base64url tokens (``[A-Za-z0-9_-]+``) are accepted, so a token is never a path.
- :func:`challenge_response` is the pure answer for a request path: ``None`` when the
  path is not a challenge, ``(200, key_authorization)`` for a known token, ``(404, ...)``
  otherwise. It must be written to the client directly (the original Tako's bug was
  marking the request handled without writing the answer).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tako_common.errors import ValidationError
from tako_common.hosts import ACME_CHALLENGE_PREFIX, acme_challenge_token

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
NOT_FOUND_BODY = b"challenge token not found\n"


def _check_token(token: str) -> str:
    if not _TOKEN_RE.fullmatch(token):
        raise ValidationError(f"invalid ACME token {token!r}: use base64url [A-Za-z0-9_-]+")
    return token


class ChallengeStore:
    """Key authorizations by token; optionally mirrored to files for other processes."""

    def __init__(self, mirror_dir: Path | None = None) -> None:
        self._answers: dict[str, str] = {}
        self.mirror_dir = Path(mirror_dir) if mirror_dir is not None else None
        if self.mirror_dir is not None:
            self.mirror_dir.mkdir(parents=True, exist_ok=True, mode=0o755)

    def __repr__(self) -> str:
        return f"ChallengeStore(tokens={len(self._answers)}, mirror_dir={self.mirror_dir})"

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.get(token) is not None

    def put(self, token: str, key_authorization: str) -> None:
        """Serve ``key_authorization`` for ``token`` until :meth:`remove`."""
        self._answers[_check_token(token)] = key_authorization
        if self.mirror_dir is not None:
            tmp = self.mirror_dir / f".{token}.tmp"
            tmp.write_text(key_authorization, encoding="ascii")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.mirror_dir / token)

    def remove(self, token: str) -> None:
        """Stop serving ``token`` (no error if it is unknown)."""
        self._answers.pop(token, None)
        if self.mirror_dir is not None and _TOKEN_RE.fullmatch(token):
            (self.mirror_dir / token).unlink(missing_ok=True)

    def get(self, token: str) -> str | None:
        """The key authorization for ``token``, or None."""
        answer = self._answers.get(token)
        if answer is not None or self.mirror_dir is None or not _TOKEN_RE.fullmatch(token):
            return answer
        try:
            return (self.mirror_dir / token).read_text(encoding="ascii")
        except (FileNotFoundError, UnicodeDecodeError):
            return None


def challenge_response(store: ChallengeStore, path: str) -> tuple[int, bytes] | None:
    """The edge's answer for request ``path`` on port 80 (None: not a challenge path)."""
    clean = path.split("?", 1)[0]
    if not clean.startswith(ACME_CHALLENGE_PREFIX):
        return None
    token = acme_challenge_token(clean)
    answer = store.get(token) if token is not None else None
    if answer is None:
        return 404, NOT_FOUND_BODY
    return 200, answer.encode("ascii")
