"""Build a target artifact through a local cache keyed by every build input; prune the cache.

Rules:

- cache key = sha256 of canonical JSON (sorted keys, no spaces) of: schema version,
  source hash, runtime + version, preset name + hash of its files (support files
  included), package manager, resolved commands of every stage, stage excludes,
  include/exclude, assets, pattern root, app subdir, main and target label
  (``linux-{arch}-{libc}``, or ``shared`` for runtimes that do not compile);
- what the build resolves (preset, package manager, main, start, app_root) comes from
  :func:`tako_client.build.resolve.resolve_app`, the same answer ``tako config`` shows;
- cached as ``.tako/artifacts/artifact-{label}-{key16}.tar.zst`` plus ``.json`` metadata
  ``{schema_version, cache_key, sha256, size, version, created}``; a hit is used only when
  the metadata matches and the file's size and sha256 verify, else it is rebuilt;
- pruning (best-effort, after each build) keeps the 30 newest source archives and 90
  newest artifacts by mtime, removes metadata whose artifact is gone and stale temp files;
  entries younger than a grace period are never removed (a concurrent deploy may use them).
  :func:`plan_prune` is pure: entries and ``now`` in, paths to delete out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tako_client.build import stages
from tako_client.build.bundle import SourceBundle, create_source_bundle, write_tar_zst
from tako_client.build.plan import BuildPlan, Target, target_label
from tako_client.build.presets import Preset
from tako_client.build.resolve import ResolvedApp, resolve_app
from tako_client.build.sources import collect_sources

SCHEMA_VERSION = 2
KEEP_SOURCES = 30
KEEP_ARTIFACTS = 90
PRUNE_GRACE_SECONDS = 600.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BuiltArtifact:
    """A verified artifact ready to upload, and the manifest the server needs."""

    path: Path
    sha256: str
    size: int
    version: str
    cache_hit: bool
    manifest: dict[str, Any]


@dataclass(frozen=True)
class CacheEntry:
    """A file in the artifacts directory as seen by :func:`plan_prune`."""

    path: Path
    mtime: float


def cache_key(inputs: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``inputs``."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_inputs(
    plan: BuildPlan,
    preset: Preset,
    bundle: SourceBundle,
    runs: list[stages.StageRun],
    main: str,
    label: str,
    manager: str | None = None,
) -> dict[str, Any]:
    """Every input that can change the artifact's bytes."""
    return {
        "package_manager": manager,
        "schema_version": SCHEMA_VERSION,
        "source_hash": bundle.source_hash,
        "version": bundle.version,  # build commands see it as TAKO_BUILD
        "runtime": plan.runtime,
        "runtime_version": plan.runtime_version,
        "preset": {"name": preset.name, "content_hash": preset.content_hash},
        "stages": [[r.name, r.cwd, r.install, r.run, list(r.exclude)] for r in runs],
        "include": list(plan.include),
        "exclude": list(plan.exclude),
        "pattern_root": plan.pattern_root,
        "assets": list(plan.assets),
        "app_subdir": bundle.tree.app_subdir,
        "main": main,
        "target": label,
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verified_cache_hit(artifact: Path, meta_path: Path, key: str) -> dict[str, Any] | None:
    """The metadata when ``artifact`` is a valid cache entry for ``key``, else None."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            return None
        if meta.get("schema_version") != SCHEMA_VERSION or meta.get("cache_key") != key:
            return None
        if artifact.stat().st_size != meta.get("size"):
            return None
        if file_sha256(artifact) != meta.get("sha256"):
            return None
    except (OSError, ValueError):
        return None
    return meta


def write_metadata(meta_path: Path, meta: dict[str, Any]) -> None:
    tmp = meta_path.with_name(meta_path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, meta_path)


def build_artifact(
    plan: BuildPlan,
    app_dir: Path,
    *,
    target: Target | None = None,
    on_output: stages.OutputCallback | None = None,
    now: float | None = None,
) -> BuiltArtifact:
    """Bundle the source, then reuse or build the artifact for ``target``; prune the cache."""
    emit = on_output or (lambda _line: None)
    app_dir = app_dir.resolve()
    tree = collect_sources(app_dir)
    artifacts_dir = app_dir / ".tako" / "artifacts"
    bundle = create_source_bundle(tree, artifacts_dir)
    resolved = resolve_app(plan, tree.root / tree.app_subdir)
    preset, main, manager = resolved.preset, resolved.main, resolved.package_manager
    label = target_label(preset.target_specific, target)
    runs = stages.plan_stage_runs(plan, preset, tree.root, tree.app_subdir, manager)
    key = cache_key(build_inputs(plan, preset, bundle, runs, main, label, manager))
    artifact = artifacts_dir / f"artifact-{label}-{key[:16]}.tar.zst"
    meta_path = artifact.with_suffix("").with_suffix(".json")
    meta = verified_cache_hit(artifact, meta_path, key)
    hit = meta is not None
    if meta is None:
        _run_build(plan, resolved, bundle, target, artifact, emit)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "cache_key": key,
            "sha256": file_sha256(artifact),
            "size": artifact.stat().st_size,
            "version": bundle.version,
            "created": now if now is not None else time.time(),
        }
        write_metadata(meta_path, meta)
    else:
        os.utime(artifact)  # most recently used = newest for pruning
    prune_artifacts(artifacts_dir, now=now)
    return BuiltArtifact(
        path=artifact,
        sha256=meta["sha256"],
        size=meta["size"],
        version=bundle.version,
        cache_hit=hit,
        manifest=build_manifest(plan, resolved, bundle),
    )


def _run_build(
    plan: BuildPlan,
    resolved: ResolvedApp,
    bundle: SourceBundle,
    target: Target | None,
    artifact: Path,
    emit: stages.OutputCallback,
) -> None:
    preset = resolved.preset
    app_dir = bundle.tree.root / bundle.tree.app_subdir
    workspace = app_dir / ".tako" / "build" / f"work-{bundle.version}"
    subdir = bundle.tree.app_subdir
    built = workspace / subdir
    stages.prepare_workspace(bundle.path, workspace)
    # re-check every cwd in the workspace; commands see the workspace's lockfiles
    runs = stages.plan_stage_runs(plan, preset, workspace, subdir, resolved.package_manager)
    stages.run_stages(runs, workspace, stages.build_env(preset, target, bundle.version), emit)
    stages.check_expected(built, preset)
    stages.add_support_files(built, preset)
    stages.merge_assets(built, preset.assets, owner=f"preset {preset.name!r}")
    stages.merge_assets(built, plan.assets)
    kept = stages.artifact_files(workspace, plan, preset, runs, subdir)
    stages.check_main(workspace, subdir, resolved.main, kept)
    write_tar_zst(artifact, workspace, kept)
    shutil.rmtree(workspace, ignore_errors=True)


def build_manifest(plan: BuildPlan, resolved: ResolvedApp, bundle: SourceBundle) -> dict[str, Any]:
    """The runtime facts the server needs (written into the release's ``app.json``).

    ``package_manager`` is sent for bun and node apps (the server's production install
    uses it); ``app_root`` for JS apps; both are left out when there is none."""
    install = plan.install if plan.install is not None else resolved.preset.install
    manifest: dict[str, Any] = {
        "runtime": plan.runtime,
        "runtime_version": plan.runtime_version,
        "main": resolved.main,
        "start": list(resolved.start) if resolved.start is not None else None,
        "app_subdir": bundle.tree.app_subdir,
        "commit": bundle.git.commit,
        "commit_message": bundle.git.subject,
        "git_dirty": bundle.git.dirty,
        "install": install,
    }
    if resolved.package_manager is not None and plan.runtime in ("bun", "node"):
        manifest["package_manager"] = resolved.package_manager
    if resolved.app_root is not None:
        manifest["app_root"] = resolved.app_root
    return manifest


def plan_prune(
    entries: Iterable[CacheEntry], now: float, *, grace: float = PRUNE_GRACE_SECONDS
) -> list[Path]:
    """Paths to delete: old sources/artifacts beyond the keep counts, orphans, stale temps."""
    entries = list(entries)
    sources = [e for e in entries if e.path.name.endswith("-source.tar.zst")]
    artifacts = [e for e in entries if _is_artifact(e.path.name)]
    doomed = _beyond_keep(sources, KEEP_SOURCES, now, grace) + _beyond_keep(
        artifacts, KEEP_ARTIFACTS, now, grace
    )
    surviving = {e.path.name for e in artifacts if e.path not in set(doomed)}
    for entry in entries:
        name = entry.path.name
        if name.startswith("artifact-") and name.endswith(".json"):
            if name[: -len(".json")] + ".tar.zst" not in surviving:
                doomed.append(entry.path)
        elif ".tmp-" in name and now - entry.mtime > grace:
            doomed.append(entry.path)
    return sorted(set(doomed))


def _is_artifact(name: str) -> bool:
    return name.startswith("artifact-") and name.endswith(".tar.zst")


def _beyond_keep(entries: list[CacheEntry], keep: int, now: float, grace: float) -> list[Path]:
    ordered = sorted(entries, key=lambda e: (e.mtime, e.path.name), reverse=True)
    return [e.path for e in ordered[keep:] if now - e.mtime > grace]


def prune_artifacts(artifacts_dir: Path, *, now: float | None = None) -> list[Path]:
    """Apply :func:`plan_prune` to ``artifacts_dir``; errors are ignored (best-effort)."""
    try:
        entries = [
            CacheEntry(p, p.lstat().st_mtime) for p in artifacts_dir.iterdir() if p.is_file()
        ]
    except OSError:
        return []
    doomed = plan_prune(entries, time.time() if now is None else now)
    for path in doomed:
        try:
            path.unlink()
        except OSError:
            continue
    return doomed
