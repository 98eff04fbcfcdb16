"""Provider credentials of each app (``tako credentials``), sealed at rest like its secrets.

Rules:

- one record per ``{app}/{env}``: the name -> value map the last successful deploy sent
  (``ssl.cloudflare``, ``postgres_url``); stored as one AES-256-GCM blob under the
  server's secrets key whose associated data is ``"{app}/{env}#credentials"``, so it can
  be neither read without the key nor moved to another app;
- a deploy without credentials removes the record (the client dropped them); ``delete``
  removes it with the app;
- values are for tako-server itself (certificates, the workflow queue): they never reach
  an app's environment, ``app.json``, a log line or an answer.
"""

from __future__ import annotations

import json

from tako_server.secrets_store import SecretBox
from tako_server.state import StateStore


class CredentialStore:
    """Per-app/env sealed provider credentials in the state database."""

    def __init__(self, box: SecretBox, state: StateStore) -> None:
        self._box = box
        self._state = state

    def __repr__(self) -> str:
        return f"CredentialStore({self._state!r})"

    @staticmethod
    def _label(app: str, env: str) -> str:
        return f"{app}/{env}#credentials"

    def put(self, app: str, env: str, values: dict[str, str]) -> None:
        """Replace the app's credentials (an empty map removes them)."""
        if not values:
            self._state.put_credentials_blob(app, env, None)
            return
        plain = json.dumps(values, sort_keys=True).encode("utf-8")
        blob = self._box.seal_bytes(self._label(app, env), plain)
        self._state.put_credentials_blob(app, env, blob)

    def get(self, app: str, env: str) -> dict[str, str]:
        """The stored credentials; empty when the app has none."""
        blob = self._state.get_credentials_blob(app, env)
        if blob is None:
            return {}
        value = json.loads(self._box.open_bytes(self._label(app, env), blob))
        return {str(k): str(v) for k, v in value.items()}
