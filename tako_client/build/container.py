"""Container releases: build the image locally, save it as an archive, cache it like a
native artifact. No registry anywhere.

Rules:

- the builder is Podman or Docker, whichever is installed (Podman first); ``--builder``
  chooses one; with neither installed the error names both (:func:`pick_builder`);
- the build context is the app directory taken from the source bundle (``.gitignore``
  and the forced excludes apply, as for native builds), so only committed-or-present
  source files reach the image; the container file must be inside it;
- the image is tagged ``tako-build/{app}:{version}`` (the release version); the artifact
  is a ``.tar.zst`` holding ``image.tar`` (what ``save`` wrote), cached in
  ``.tako/artifacts/`` under a key of every input (source hash, container file, builder,
  app, version); the server loads it (see ``tako_server.podman``);
- a failed build is a :class:`BuildError` with the build log's last lines as hint.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tako_client.build import stages
from tako_client.build.artifacts import (
    BuiltArtifact,
    cache_key,
    file_sha256,
    prune_artifacts,
    verified_cache_hit,
    write_metadata,
)
from tako_client.build.bundle import SourceBundle, create_source_bundle, write_tar_zst
from tako_client.build.plan import BuildError, escapes
from tako_client.build.sources import collect_sources
from tako_common.errors import TakoError

BUILDERS = ("podman", "docker")
IMAGE_ARCHIVE = "image.tar"
SCHEMA = "container-1"
TAIL_LINES = 20


class NoBuilderError(TakoError):
    code = "no_builder"


def pick_builder(choice: str | None, which: Callable[[str], str | None] = shutil.which) -> str:
    """The container builder to use: ``choice`` when given (it must be installed), else
    the first of Podman, Docker that is on PATH."""
    if choice is not None and choice not in BUILDERS:
        raise NoBuilderError(f"unknown builder {choice!r}: use podman or docker")
    candidates = [choice] if choice is not None else list(BUILDERS)
    for name in candidates:
        if which(name) is not None:
            return name
    if choice is not None:
        raise NoBuilderError(
            f"--builder {choice}: {choice} is not installed",
            hint="install it, or leave out --builder to use whichever of podman/docker is",
        )
    raise NoBuilderError(
        "a container release needs Podman (podman) or Docker (docker); neither is installed",
        hint="install Podman (apt-get install podman) or Docker, then deploy again",
    )


def container_inputs(
    bundle: SourceBundle, containerfile: str, builder: str, app: str
) -> dict[str, Any]:
    """Every input of a container artifact (the source hash covers the container file)."""
    return {
        "schema": SCHEMA,
        "source_hash": bundle.source_hash,
        "version": bundle.version,
        "app_subdir": bundle.tree.app_subdir,
        "containerfile": containerfile,
        "builder": builder,
        "app": app,
    }


def build_container_artifact(
    app_dir: Path,
    containerfile: str,
    *,
    app: str,
    builder: str,
    read_only: bool = True,
    on_output: stages.OutputCallback | None = None,
) -> BuiltArtifact:
    """Build (or reuse from the cache) the image archive artifact of a container release."""
    emit = on_output or (lambda _line: None)
    app_dir = app_dir.resolve()
    if escapes(containerfile) or not (app_dir / containerfile).is_file():
        raise BuildError(
            f"container file {containerfile!r} does not exist in {app_dir}",
            hint="set `container` in tako.toml to a Containerfile/Dockerfile inside the app",
        )
    tree = collect_sources(app_dir)
    artifacts_dir = app_dir / ".tako" / "artifacts"
    bundle = create_source_bundle(tree, artifacts_dir)
    key = cache_key(container_inputs(bundle, containerfile, builder, app))
    artifact = artifacts_dir / f"artifact-container-{key[:16]}.tar.zst"
    meta_path = artifact.with_suffix("").with_suffix(".json")
    tag = f"tako-build/{app}:{bundle.version.lower()}"
    meta = verified_cache_hit(artifact, meta_path, key)
    hit = meta is not None
    if meta is None:
        _build_and_save(bundle, containerfile, builder, tag, artifact, emit)
        meta = {
            "schema_version": 2,
            "cache_key": key,
            "sha256": file_sha256(artifact),
            "size": artifact.stat().st_size,
            "version": bundle.version,
            "created": time.time(),
        }
        write_metadata(meta_path, meta)
    prune_artifacts(artifacts_dir)
    return BuiltArtifact(
        path=artifact,
        sha256=meta["sha256"],
        size=meta["size"],
        version=bundle.version,
        cache_hit=hit,
        manifest=container_manifest(bundle, containerfile, tag, read_only),
    )


def container_manifest(
    bundle: SourceBundle, containerfile: str, tag: str, read_only: bool
) -> dict[str, Any]:
    return {
        "runtime": "container",
        "main": containerfile,
        "app_subdir": bundle.tree.app_subdir,
        "commit": bundle.git.commit,
        "commit_message": bundle.git.subject,
        "git_dirty": bundle.git.dirty,
        "container": {"built_tag": tag, "read_only": read_only},
    }


def _build_and_save(
    bundle: SourceBundle,
    containerfile: str,
    builder: str,
    tag: str,
    artifact: Path,
    emit: stages.OutputCallback,
) -> None:
    workspace = bundle.path.parent.parent / "build" / f"container-{bundle.version}"
    stages.prepare_workspace(bundle.path, workspace)
    context = workspace / bundle.tree.app_subdir
    try:
        if not (context / containerfile).is_file():
            raise BuildError(
                f"container file {containerfile!r} is not in the deployed sources",
                hint="is it ignored by .gitignore? the build sees only bundled files",
            )
        _run(
            [builder, "build", "-f", str(context / containerfile), "-t", tag, str(context)],
            "build",
            emit,
        )
        _run([builder, "save", "-o", str(workspace / IMAGE_ARCHIVE), tag], "save", emit)
        write_tar_zst(artifact, workspace, [IMAGE_ARCHIVE])
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _run(argv: list[str], step: str, emit: stages.OutputCallback) -> None:
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        text = line.rstrip("\n")
        tail.append(text)
        emit(text)
    code = proc.wait()
    if code != 0:
        raise BuildError(
            f"container {step} failed: `{' '.join(argv[:2])} ...` exited with {code}",
            hint="last lines of the build log:\n" + "\n".join(tail),
        )
