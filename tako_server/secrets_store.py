"""App secrets at rest: AES-256-GCM under a per-server key, never stored in plaintext.

Rules:

- The key is 32 random bytes in ``{data_dir}/secrets.key`` (mode 0600), created once on
  first start with ``O_EXCL`` (two starters cannot create two keys); a key file of the
  wrong size or with group/other permissions is refused.
- Each app/env's secrets are one blob: ``b"TKS1" + nonce(12) + ciphertext``; the
  associated data is ``"{app}/{env}"`` so a blob cannot be replayed onto another app.
- Blobs live in the state database (:class:`~tako_server.state.StateStore`); the values
  only exist decrypted in memory, on their way into an instance's environment.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tako_common.errors import TakoError
from tako_server.state import StateStore

MAGIC = b"TKS1"
KEY_BYTES = 32
NONCE_BYTES = 12


class SecretsError(TakoError):
    code = "secrets"


def load_or_create_key(path: Path) -> bytes:
    """Read the server key, creating it (0600) when it does not exist yet."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    try:
        os.write(fd, os.urandom(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretsError(
            f"secrets key {path} is readable by other users (mode {mode:o}); it must be 0600",
            hint=f"chmod 600 {path}",
        )
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise SecretsError(
            f"secrets key {path} has {len(key)} bytes; an AES-256 key has {KEY_BYTES}",
            hint="restore the original key file; secrets sealed with it are unreadable otherwise",
        )
    return key


class SecretBox:
    """Encrypts and decrypts one app's secrets mapping (pure, given the key)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretsError(f"an AES-256 key has {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, key: str, secrets: dict[str, str]) -> bytes:
        return self.seal_bytes(key, json.dumps(secrets, sort_keys=True).encode("utf-8"))

    def open(self, key: str, blob: bytes) -> dict[str, str]:
        value = json.loads(self.open_bytes(key, blob))
        return {str(k): str(v) for k, v in value.items()}

    def seal_bytes(self, key: str, plaintext: bytes) -> bytes:
        """Encrypt any bytes bound to ``key`` (the associated data)."""
        nonce = os.urandom(NONCE_BYTES)
        return MAGIC + nonce + self._aead.encrypt(nonce, plaintext, key.encode("utf-8"))

    def open_bytes(self, key: str, blob: bytes) -> bytes:
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_BYTES:
            raise SecretsError(f"secrets of {key} are not a Tako secrets blob")
        nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], key.encode())
        except InvalidTag as exc:
            raise SecretsError(
                f"secrets of {key} cannot be decrypted with this server's key",
                hint="the secrets.key file changed; send the secrets again (tako secrets sync)",
            ) from exc


class SecretsStore:
    """Per-app/env encrypted secrets in the state database."""

    def __init__(self, box: SecretBox, state: StateStore) -> None:
        self._box = box
        self._state = state

    @classmethod
    def open(cls, key_path: Path, state: StateStore) -> SecretsStore:
        return cls(SecretBox(load_or_create_key(key_path)), state)

    def __repr__(self) -> str:
        return f"SecretsStore({self._state!r})"

    def put(self, app: str, env: str, secrets: dict[str, str]) -> None:
        self._state.put_secrets_blob(app, env, self._box.seal(f"{app}/{env}", secrets))

    def get(self, app: str, env: str) -> dict[str, str]:
        blob = self._state.get_secrets_blob(app, env)
        return self._box.open(f"{app}/{env}", blob) if blob is not None else {}

    @property
    def box(self) -> SecretBox:
        """The server key's box (other sealed records, e.g. storage credentials, use it)."""
        return self._box
