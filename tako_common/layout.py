"""The remote path layout of a host: the one place that knows where things live.

``ServerLayout(data_dir)`` gives every path under the data dir (default ``/opt/tako``)::

    server-config.toml  runtime-state.sqlite3  secrets.key
    acme/  certs/{domain}/{fullchain.pem,privkey.pem}  incoming/{sha256}.tar.zst
    apps/{name}/{env}/current -> releases/{version}
    apps/{name}/{env}/.deploy_lock/
    apps/{name}/{env}/releases/{version}/{app_subdir}/app.json
    apps/{name}/{env}/shared/logs/
    apps/{name}/{env}/shared/image-cache/   results of the image optimizer (size-capped)
    apps/{name}/{env}/data/app/                 TAKO_DATA_DIR (kept across releases)
    apps/{name}/{env}/data/storages/{binding}/  a ``local`` storage binding
    apps/{name}/{env}/.backups/                 backup and restore scratch space
    downloads/                                  fetched backups for ``tako backups download``

Names and versions are validated before they become path components, and
:meth:`ServerLayout.contains` checks that a resolved path stays inside the data dir.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tako_common.errors import ValidationError
from tako_common.names import validate_app_name, validate_env_name, validate_version

DEFAULT_DATA_DIR = PurePosixPath("/opt/tako")
DEFAULT_SOCKET = PurePosixPath("/var/run/tako/tako.sock")
STATE_DB = "runtime-state.sqlite3"
SERVER_CONFIG = "server-config.toml"
INCOMING = "incoming"
_BINDING_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


@dataclass(frozen=True)
class ServerLayout:
    data_dir: Path

    @property
    def state_db(self) -> Path:
        return self.data_dir / STATE_DB

    @property
    def server_config(self) -> Path:
        return self.data_dir / SERVER_CONFIG

    @property
    def secrets_key(self) -> Path:
        return self.data_dir / "secrets.key"

    @property
    def acme_dir(self) -> Path:
        return self.data_dir / "acme"

    @property
    def certs_dir(self) -> Path:
        return self.data_dir / "certs"

    @property
    def incoming_dir(self) -> Path:
        return self.data_dir / INCOMING

    @property
    def apps_dir(self) -> Path:
        return self.data_dir / "apps"

    def artifact(self, sha256: str) -> Path:
        return self.incoming_dir / f"{sha256}.tar.zst"

    def app_dir(self, app: str, env: str) -> Path:
        return self.apps_dir / validate_app_name(app) / validate_env_name(env)

    def releases_dir(self, app: str, env: str) -> Path:
        return self.app_dir(app, env) / "releases"

    def release_dir(self, app: str, env: str, version: str) -> Path:
        return self.releases_dir(app, env) / validate_version(version)

    def current_link(self, app: str, env: str) -> Path:
        return self.app_dir(app, env) / "current"

    def deploy_lock(self, app: str, env: str) -> Path:
        return self.app_dir(app, env) / ".deploy_lock"

    def shared_dir(self, app: str, env: str) -> Path:
        return self.app_dir(app, env) / "shared"

    def logs_dir(self, app: str, env: str) -> Path:
        return self.shared_dir(app, env) / "logs"

    def image_cache_dir(self, app: str, env: str) -> Path:
        return self.shared_dir(app, env) / "image-cache"

    def data_root(self, app: str, env: str) -> Path:
        """The app's persistent data (kept across releases; what backups hold)."""
        return self.app_dir(app, env) / "data"

    def app_data_dir(self, app: str, env: str) -> Path:
        """``TAKO_DATA_DIR`` of the app's processes."""
        return self.data_root(app, env) / "app"

    def storages_dir(self, app: str, env: str) -> Path:
        return self.data_root(app, env) / "storages"

    def storage_dir(self, app: str, env: str, binding: str) -> Path:
        """The directory of a ``local`` storage binding."""
        if not _BINDING_RE.fullmatch(binding):
            raise ValidationError(f"invalid storage binding name {binding!r}")
        return self.storages_dir(app, env) / binding

    def backup_work_dir(self, app: str, env: str) -> Path:
        """Scratch space of backups and restores (archives before upload, staged data)."""
        return self.app_dir(app, env) / ".backups"

    @property
    def downloads_dir(self) -> Path:
        """Fetched backups waiting for the client to copy them (``tako backups download``)."""
        return self.data_dir / "downloads"

    def contains(self, path: Path) -> bool:
        """True when ``path`` (resolved, following links) is inside the data dir."""
        root = self.data_dir.resolve()
        target = path.resolve()
        return target == root or root in target.parents
