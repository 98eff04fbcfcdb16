"""Images of container releases on this host's Podman, through its Docker-compatible API.

Rules:

- every call goes through ``aiodocker`` to :attr:`ServerSettings.container_socket`; a
  failure becomes :class:`ContainerEngineError` naming the socket and what failed;
- a release's image is tagged :func:`image_ref` (``localhost/tako/{app}-{env}:{version}``),
  so rollback finds it and ``delete`` / pruning remove exactly the app's images; the
  release directory keeps ``app.json`` (the image archive is deleted once loaded);
- :func:`engine_status` never raises: ``tako servers status`` shows why a host cannot
  run containers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiodocker

from tako_common.errors import TakoError
from tako_server.launch import podman_ref
from tako_server.supervisor import container

#: the image archive inside a container release's artifact
IMAGE_ARCHIVE = "image.tar"
_CHUNK = 1024 * 1024


class ContainerEngineError(TakoError):
    code = "container_engine"


def image_repo(app: str, env: str) -> str:
    return f"localhost/tako/{app}-{env}"


def image_ref(app: str, env: str, version: str) -> str:
    """The tag of a release's image (versions may hold ``_``; tags allow it)."""
    return podman_ref(app, env, version)


@asynccontextmanager
async def engine(socket: Path) -> AsyncIterator[aiodocker.Docker]:
    """An API connection to the Podman service on ``socket`` for the block."""
    if not socket.exists():
        raise ContainerEngineError(
            f"no container engine socket at {socket}",
            hint="install-server.sh sets up Podman's API socket (docs/containers.md)",
        )
    docker = aiodocker.Docker(url=f"unix://{socket}")
    try:
        yield docker
    except aiodocker.DockerError as exc:
        raise ContainerEngineError(f"container engine at {socket}: {exc.message}") from exc
    finally:
        await docker.close()


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


async def load_image(socket: Path, archive: Path, ref: str) -> str:
    """Load the image archive into Podman and tag it ``ref``; returns the image id."""
    if not archive.is_file():
        raise ContainerEngineError(f"the release has no image archive {archive.name}")
    async with engine(socket) as docker:
        result = await docker.images.import_image(_chunks(archive))
        loaded = _loaded_name(result)
        if loaded is None:
            raise ContainerEngineError(f"loading {archive.name} reported no image: {result!r}")
        repo, _, tag = ref.rpartition(":")
        await docker.images.tag(loaded, repo, tag=tag)
        info = await docker.images.inspect(ref)
        if not loaded.startswith("sha256:") and _normal(loaded) != ref:
            await docker.images.delete(loaded, noprune=True)  # the builder's tag: untag only
        return str(info["Id"])


def _loaded_name(result: Any) -> str | None:
    """The image named by a ``/images/load`` answer (a list of progress objects)."""
    items = result if isinstance(result, list) else [result]
    for item in items:
        if not isinstance(item, dict):
            continue
        text = str(item.get("stream") or item.get("status") or "")
        for marker in ("Loaded image:", "Loaded image ID:", "Loaded image(s):"):
            if marker in text:
                return text.split(marker, 1)[1].strip().split(",")[0].strip()
        if item.get("error"):
            raise ContainerEngineError(f"loading the image failed: {item['error']}")
    return None


def _normal(name: str) -> str:
    return name if "/" in name.split(":")[0] else f"localhost/{name}"


async def image_exists(socket: Path, ref: str) -> bool:
    async with engine(socket) as docker:
        try:
            await docker.images.inspect(ref)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return False
            raise
        return True


async def remove_images(socket: Path, refs: Iterable[str]) -> list[str]:
    """Remove these image tags (missing ones are skipped); returns the ones removed."""
    removed = []
    async with engine(socket) as docker:
        for ref in refs:
            try:
                await docker.images.delete(ref, force=True)
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise
                continue
            removed.append(ref)
    return removed


async def app_images(socket: Path, app: str, env: str) -> list[str]:
    """Every tag of the app's image repository."""
    repo = image_repo(app, env)
    async with engine(socket) as docker:
        images = await docker.images.list(filters=json.dumps({"reference": [repo]}))
    tags = [tag for image in images for tag in (image.get("RepoTags") or [])]
    return sorted(tag for tag in tags if tag.startswith(repo + ":"))


async def remove_app_containers(socket: Path, key: str, log_dir: Path) -> int:
    """Force-remove every container labelled with the app and their log cursors under
    ``log_dir`` (``tako delete``)."""
    return await container.remove_app_containers(socket, key, log_dir)


async def engine_status(socket: Path) -> str:
    """``podman 4.3.1`` when the engine answers, else why not (one line)."""
    try:
        async with engine(socket) as docker:
            version = await docker.version()
    except (TakoError, OSError, aiodocker.DockerError) as exc:
        return f"unavailable: {exc}"
    name = (
        "podman"
        if any("Podman" in str(c.get("Name")) for c in version.get("Components", []))
        else "docker"
    )
    return f"{name} {version.get('Version', '?')}"
