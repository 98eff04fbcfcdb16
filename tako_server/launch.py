"""One release on disk and how its instances are launched: the one builder of their environment.

Rules:

- :class:`ReleaseRef` names a release that exists on disk (``app``, ``env``, ``version``,
  its directory, its working directory and its typed manifest); it is built by
  :meth:`ReleaseRef.locate`, which refuses an ``app_subdir`` outside the release;
- :func:`instance_environ` is the ONLY place an instance's environment is composed, from
  the release, its ``[vars]``, its secrets, its storage bindings and what the server
  passes on (:attr:`ServerSettings.inherited_env`); precedence, lowest first: ``PATH``
  (release-local bins first) / ``HOME`` / ``LANG`` < runtime defaults (``NODE_ENV``,
  ``PYTHONUNBUFFERED``) < vars < secrets < ``TAKO_DATA_DIR`` / ``TAKO_STORAGE_*`` /
  ``TAKO_STORAGES`` (:mod:`tako_common.storages`) < ``TAKO_ENV`` / ``TAKO_BUILD`` /
  ``TAKO_APP_NAME``. Release prep runs with the same environment; the supervisor only
  adds ``HOST``, ``PORT`` and ``TAKO_INSTANCE``;
- a located release knows its app's data directories (``data_root``: ``TAKO_DATA_DIR`` =
  ``data/app``, local storages in ``data/storages/{binding}``); they live beside the
  releases, so releases, rollbacks and server upgrades keep them, and
  :func:`ensure_data_dirs` makes them (0700, the server's user, which runs the app) before
  anything of the release runs;
- nothing here reads ``os.environ`` (``settings.py`` is the only reader).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tako_common.errors import TakoError
from tako_common.layout import ServerLayout
from tako_common.protocol import ReleaseManifest, StorageBinding
from tako_common.storages import DATA_DIR_VAR, binding_environ
from tako_server import pinned, releases, runtimes
from tako_server.supervisor.spec import ContainerRun, LaunchSpec


@dataclass(frozen=True)
class ReleaseRef:
    """A release of ``{app}/{env}`` at ``version``, present on disk."""

    app: str
    env: str
    version: str
    release_dir: Path
    workdir: Path
    manifest: ReleaseManifest
    #: ``apps/{app}/{env}/data`` (set by :meth:`locate`; None for a bare release)
    data_root: Path | None = None
    #: the bin directory of a pinned runtime (``runtime = "bun@1.2.3"``), first on PATH
    runtime_bin: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.app}/{self.env}"

    @classmethod
    def locate(
        cls, layout: ServerLayout, app: str, env: str, version: str, manifest: ReleaseManifest
    ) -> ReleaseRef:
        release_dir = layout.release_dir(app, env, version)
        workdir = releases.workdir_of(release_dir, manifest.app_subdir)
        data_root = layout.data_root(app, env)
        runtime_bin = None
        tool, pin = manifest.runtime, manifest.runtime_version
        if pin and tool in pinned.PINNABLE:  # go/binary: the pin is the local build's
            runtime_bin = pinned.bin_dir(layout.data_dir, tool, pin)
        return cls(app, env, version, release_dir, workdir, manifest, data_root, runtime_bin)

    @property
    def data_dir(self) -> Path | None:
        """``TAKO_DATA_DIR``: the app's persistent data directory."""
        return self.data_root / "app" if self.data_root is not None else None

    def storage_dir(self, binding: str) -> Path | None:
        """The directory of the ``local`` storage binding ``binding``."""
        return self.data_root / "storages" / binding if self.data_root is not None else None

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


def storage_environ(release: ReleaseRef, storages: Sequence[StorageBinding]) -> dict[str, str]:
    """``TAKO_DATA_DIR`` and every binding's ``TAKO_STORAGE_*`` variables."""
    environ: dict[str, str] = {}
    if release.data_dir is not None:
        environ[DATA_DIR_VAR] = str(release.data_dir)
    local = {b.name: str(release.storage_dir(b.name)) for b in storages if b.provider == "local"}
    if release.data_root is None and local:
        raise TakoError(f"{release!r} has no data directory for its local storages")
    environ.update(binding_environ(storages, local))
    return environ


def ensure_data_dirs(release: ReleaseRef, storages: Sequence[StorageBinding]) -> None:
    """Make the app's data directory and its local storage directories (mode 0700)."""
    dirs = [release.data_dir] + [
        release.storage_dir(b.name) for b in storages if b.provider == "local"
    ]
    for path in dirs:
        if path is not None:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)


def instance_environ(
    release: ReleaseRef,
    variables: Mapping[str, str],
    secrets: Mapping[str, str],
    server_env: Mapping[str, str],
    *,
    storages: Sequence[StorageBinding] = (),
) -> dict[str, str]:
    """The full environment of an instance of ``release`` (minus HOST, PORT, TAKO_INSTANCE).

    A container release gets no ``PATH``/``HOME``/``LANG`` of the host (its image has its own)."""
    runtime = release.manifest.runtime
    environ: dict[str, str] = {}
    if runtime != "container":
        environ = runtimes.base_environ(release.workdir, dict(server_env))
        if "LANG" in server_env:
            environ["LANG"] = server_env["LANG"]
        if release.runtime_bin is not None:  # the pinned runtime before the host's
            environ["PATH"] = f"{release.runtime_bin}{os.pathsep}{environ['PATH']}"
    if runtime in runtimes.JS_RUNTIMES:
        environ["NODE_ENV"] = "production"
    if runtime == "python":
        environ["PYTHONUNBUFFERED"] = "1"
    environ.update(variables)
    environ.update(secrets)
    environ.update(storage_environ(release, storages))
    environ.update(
        {"TAKO_ENV": release.env, "TAKO_BUILD": release.version, "TAKO_APP_NAME": release.app}
    )
    return environ


@dataclass(frozen=True)
class ContainerHost:
    """What this host gives container releases: the engine's socket and the limits."""

    socket: Path
    memory_mb: int = 512
    pids_limit: int = 512


def container_run(release: ReleaseRef, host: ContainerHost) -> ContainerRun | None:
    """How the supervisor runs a container release's image (None for a native release)."""
    settings = release.manifest.container
    if settings is None:
        return None
    mounts = (release.data_root,) if release.data_root is not None else ()
    return ContainerRun(
        image=podman_ref(release.app, release.env, release.version),
        socket=host.socket,
        memory_mb=host.memory_mb,
        pids_limit=host.pids_limit,
        read_only=settings.read_only,
        mounts=mounts,
    )


def podman_ref(app: str, env: str, version: str) -> str:
    """The tag of a release's image on this host (see :mod:`tako_server.podman`)."""
    return f"localhost/tako/{app}-{env}:{version.lower()}"


def launch_spec(
    release: ReleaseRef,
    variables: Mapping[str, str],
    secrets: Mapping[str, str],
    *,
    server_env: Mapping[str, str],
    log_dir: Path,
    storages: Sequence[StorageBinding] = (),
    containers: ContainerHost | None = None,
) -> LaunchSpec:
    """How the supervisor runs ``release`` (creates ``log_dir`` and the data dirs)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    ensure_data_dirs(release, storages)
    run = None
    if release.manifest.container is not None:
        if containers is None:
            raise TakoError(f"{release!r} is a container release; no container engine is set")
        run = container_run(release, containers)
        command: list[str] = []  # the image's own CMD / ENTRYPOINT
    else:
        command = runtimes.start_command(release.manifest.model_dump(), release.workdir)
    return LaunchSpec(
        app=release.app,
        env=release.env,
        version=release.version,
        workdir=release.workdir,
        command=command,
        environ=instance_environ(release, variables, secrets, server_env, storages=storages),
        log_dir=log_dir,
        container=run,
    )
