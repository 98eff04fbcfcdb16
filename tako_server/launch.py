"""One release on disk and how its instances are launched: the one builder of their environment.

Rules:

- :class:`ReleaseRef` names a release that exists on disk (``app``, ``env``, ``version``,
  its directory, its working directory and its typed manifest); it is built by
  :meth:`ReleaseRef.locate`, which refuses an ``app_subdir`` outside the release;
- :func:`instance_environ` is the ONLY place an instance's environment is composed, from
  the release, its ``[vars]``, its secrets and what the server passes on
  (:attr:`ServerSettings.inherited_env`); precedence, lowest first: ``PATH`` (release-local
  bins first) / ``HOME`` / ``LANG`` < runtime defaults (``NODE_ENV``,
  ``PYTHONUNBUFFERED``) < vars < secrets < ``TAKO_ENV`` / ``TAKO_BUILD`` /
  ``TAKO_APP_NAME``. Release prep runs with the same environment; the supervisor only
  adds ``HOST``, ``PORT`` and ``TAKO_INSTANCE``;
- nothing here reads ``os.environ`` (``settings.py`` is the only reader).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tako_common.layout import ServerLayout
from tako_common.protocol import ReleaseManifest
from tako_server import releases, runtimes
from tako_server.supervisor.spec import LaunchSpec


@dataclass(frozen=True)
class ReleaseRef:
    """A release of ``{app}/{env}`` at ``version``, present on disk."""

    app: str
    env: str
    version: str
    release_dir: Path
    workdir: Path
    manifest: ReleaseManifest

    @property
    def key(self) -> str:
        return f"{self.app}/{self.env}"

    @classmethod
    def locate(
        cls, layout: ServerLayout, app: str, env: str, version: str, manifest: ReleaseManifest
    ) -> ReleaseRef:
        release_dir = layout.release_dir(app, env, version)
        workdir = releases.workdir_of(release_dir, manifest.app_subdir)
        return cls(app, env, version, release_dir, workdir, manifest)

    @property
    def public_dir(self) -> Path | None:
        """The release's ``public/`` directory (served by the edge), if it has one."""
        public = self.workdir / "public"
        return public if public.is_dir() else None

    def __repr__(self) -> str:
        return f"ReleaseRef({self.key}@{self.version}, runtime={self.manifest.runtime})"


def manifest_from(data: Mapping[str, Any]) -> ReleaseManifest:
    """The manifest stored in the state database or an ``app.json`` (other keys ignored)."""
    fields = {k: v for k, v in data.items() if k in ReleaseManifest.model_fields}
    return ReleaseManifest.model_validate(fields)


def instance_environ(
    release: ReleaseRef,
    variables: Mapping[str, str],
    secrets: Mapping[str, str],
    server_env: Mapping[str, str],
) -> dict[str, str]:
    """The full environment of an instance of ``release`` (minus HOST, PORT, TAKO_INSTANCE)."""
    environ = runtimes.base_environ(release.workdir, dict(server_env))
    if "LANG" in server_env:
        environ["LANG"] = server_env["LANG"]
    runtime = release.manifest.runtime
    if runtime in runtimes.JS_RUNTIMES:
        environ["NODE_ENV"] = "production"
    if runtime == "python":
        environ["PYTHONUNBUFFERED"] = "1"
    environ.update(variables)
    environ.update(secrets)
    environ.update(
        {"TAKO_ENV": release.env, "TAKO_BUILD": release.version, "TAKO_APP_NAME": release.app}
    )
    return environ


def launch_spec(
    release: ReleaseRef,
    variables: Mapping[str, str],
    secrets: Mapping[str, str],
    *,
    server_env: Mapping[str, str],
    log_dir: Path,
) -> LaunchSpec:
    """How the supervisor runs ``release`` (creates ``log_dir`` if needed)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    return LaunchSpec(
        app=release.app,
        env=release.env,
        version=release.version,
        workdir=release.workdir,
        command=runtimes.start_command(release.manifest.model_dump(), release.workdir),
        environ=instance_environ(release, variables, secrets, server_env),
        log_dir=log_dir,
    )
