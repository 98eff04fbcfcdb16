"""Local build pipeline: source bundle, version, build stages, artifact cache, presets.

Entry point for deploy: :func:`build_artifact` (``BuildPlan`` + app dir + target ->
``BuiltArtifact`` with the manifest the server needs); :func:`resolve_app` is what a plan
resolves to (preset, package manager, main, start), shared with ``tako config``. Nothing
here talks to a server.
"""

from tako_client.build.artifacts import BuiltArtifact, build_artifact, plan_prune, prune_artifacts
from tako_client.build.bundle import (
    GitInfo,
    SourceBundle,
    create_source_bundle,
    git_info,
    source_hash,
)
from tako_client.build.plan import BuildError, BuildPlan, Stage, Target, target_label
from tako_client.build.presets import BUILTIN_PRESETS, Preset, load_preset, split_runtime
from tako_client.build.resolve import ResolvedApp, resolve_app
from tako_client.build.sources import SourceTree, collect_sources, resolve_source_root

__all__ = [
    "BUILTIN_PRESETS",
    "BuildError",
    "BuildPlan",
    "BuiltArtifact",
    "GitInfo",
    "Preset",
    "ResolvedApp",
    "SourceBundle",
    "SourceTree",
    "Stage",
    "Target",
    "build_artifact",
    "collect_sources",
    "create_source_bundle",
    "git_info",
    "load_preset",
    "plan_prune",
    "prune_artifacts",
    "resolve_app",
    "resolve_source_root",
    "source_hash",
    "split_runtime",
    "target_label",
]
