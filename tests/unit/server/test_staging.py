"""What a deploy prepared and has not rolled out: one entry per app/env, owned by the
connection that staged it, removable only when the deploy created it."""

from __future__ import annotations

from pathlib import Path

from tako_common.layout import ServerLayout
from tako_common.protocol import DeployRequest, ReleaseManifest
from tako_server.launch import ReleaseRef
from tako_server.staging import StagedRelease, StagedReleases

MANIFEST = ReleaseManifest(runtime="python", main="app.py")


def staged(
    version: str, connection: int = 1, *, app: str = "web", created: bool = True
) -> StagedRelease:
    release_dir = ServerLayout(Path("/data")).release_dir(app, "production", version)
    release = ReleaseRef(app, "production", version, release_dir, release_dir, MANIFEST)
    request = DeployRequest(
        app=app,
        env="production",
        version=version,
        artifact=f"{'ab' * 32}.tar.zst",
        sha256="ab" * 32,
        routes=[f"{app}.localhost"],
        manifest=MANIFEST,
        secrets={"API_KEY": "sekret"},
    )
    return StagedRelease(release, request, created, connection)


def test_a_staged_release_is_found_by_app_and_version_only() -> None:
    registry = StagedReleases()
    entry = staged("v2")
    assert registry.put(entry) is None
    assert registry.get("web/production", "v2") is entry
    assert registry.get("web/production", "v1") is None
    assert registry.get("api/production", "v2") is None


def test_deploy_takes_the_entry_once() -> None:
    registry = StagedReleases()
    registry.put(staged("v2"))
    assert registry.pop("web/production", "v1") is None
    assert registry.pop("web/production", "v2") is not None
    assert registry.pop("web/production", "v2") is None


def test_a_new_prepare_replaces_the_entry_and_returns_another_version() -> None:
    registry = StagedReleases()
    registry.put(staged("v2"))
    assert registry.put(staged("v2", connection=2)) is None  # the same release again
    replaced = registry.put(staged("v3"))
    assert replaced is not None and replaced.version == "v2"
    assert registry.get("web/production", "v3") is not None


def test_a_closed_connection_takes_only_its_own_entries() -> None:
    registry = StagedReleases()
    registry.put(staged("v2", connection=1))
    registry.put(staged("v7", connection=2, app="api"))
    taken = registry.take_connection(1)
    assert [(s.key, s.version) for s in taken] == [("web/production", "v2")]
    assert registry.take_connection(1) == []
    assert registry.get("api/production", "v7") is not None
    registry.forget("api/production")
    assert registry.take_connection(2) == []


def test_secrets_never_show_in_reprs() -> None:
    registry = StagedReleases()
    registry.put(staged("v2"))
    assert "sekret" not in repr(registry) and "sekret" not in repr(staged("v2"))
    assert repr(registry) == "StagedReleases(['web/production@v2'])"
