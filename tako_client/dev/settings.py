"""Where ``tako dev`` keeps its files, and the environment variables it reads.

Rules:

- per developer, under ``$TAKO_HOME`` (:func:`tako_client.global_config.tako_home`):
  ``ca/`` holds the local certificate authority (directory 0700, key 0600), ``dev/`` the
  dev edge's socket, lock, pid, log and certificates (0700);
- per app, under ``{app_dir}/.tako/dev/``: ``data/`` (``TAKO_DATA_DIR``) and
  ``storages/{binding}/`` (local storages);
- ``TAKO_DEV_HTTPS_PORT`` / ``TAKO_DEV_HTTP_PORT`` pin the dev edge's ports (else 443/80
  when it may bind them, else 47831/47830); a value that is not a port 1-65535 is refused
  with the rule; ``TAKO_DEV_TRUST_ROOT`` puts the system trust store under another root
  (packaging and tests);
- this module is the only one of :mod:`tako_client.dev` that reads ``os.environ``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tako_client.global_config import tako_home
from tako_common.errors import ValidationError

HTTPS_PORT_VAR = "TAKO_DEV_HTTPS_PORT"
HTTP_PORT_VAR = "TAKO_DEV_HTTP_PORT"
TRUST_ROOT_VAR = "TAKO_DEV_TRUST_ROOT"
#: A Unix socket path longer than this does not fit ``sockaddr_un`` on every platform.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class DevSettings:
    """The developer-wide side of ``tako dev``."""

    home: Path
    https_port: int | None = None
    http_port: int | None = None
    trust_root: Path = Path("/")

    @classmethod
    def from_environ(cls) -> DevSettings:
        return cls(
            home=tako_home(),
            https_port=_port(HTTPS_PORT_VAR),
            http_port=_port(HTTP_PORT_VAR),
            trust_root=Path(os.environ.get(TRUST_ROOT_VAR) or "/"),
        )

    @property
    def ca_dir(self) -> Path:
        return self.home / "ca"

    @property
    def state_dir(self) -> Path:
        return self.home / "dev"

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "edge.sock"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "edge.lock"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "edge.log"

    def check_socket_path(self) -> None:
        if len(str(self.socket_path)) > MAX_SOCKET_PATH:
            raise ValidationError(
                f"the dev edge socket path {self.socket_path} is longer than "
                f"{MAX_SOCKET_PATH} characters (a Unix socket limit)",
                hint="use a shorter TAKO_HOME",
            )


def _port(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ValidationError(f"invalid {name}={raw!r}: use a port number 1-65535")
    return int(raw)


def app_dev_dir(app_dir: Path) -> Path:
    """``{app_dir}/.tako/dev``: the app's local data and storages under tako dev."""
    return app_dir / ".tako" / "dev"
