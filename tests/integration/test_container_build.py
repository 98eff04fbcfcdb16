"""``tako deploy``'s container build with the real Podman: cache hit, a failing build.

The base is the busybox image imported locally (no registry).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import zstandard

from tako_client.build.container import build_container_artifact
from tako_client.build.plan import BuildError
from tests.helpers import podman as pm

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(pm.skip_reason() is not None, reason=str(pm.skip_reason())),
]


def app_dir(tmp_path: Path, run: str) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "Containerfile").write_text(f'FROM {pm.BASE_IMAGE}\nRUN {run}\nCMD ["true"]\n')
    return app


def test_image_archive_is_cached_by_its_inputs(tmp_path: Path) -> None:
    pm.ensure_base_image(tmp_path)
    app = app_dir(tmp_path, "ls /")
    first = build_container_artifact(app, "Containerfile", app="shop", builder="podman")
    assert not first.cache_hit and first.manifest["runtime"] == "container"
    assert first.manifest["container"] == {
        "built_tag": f"tako-build/shop:{first.version}",
        "read_only": True,
    }
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(first.path.read_bytes())).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getnames() == ["image.tar"]
    again = build_container_artifact(app, "Containerfile", app="shop", builder="podman")
    assert again.cache_hit and again.sha256 == first.sha256
    (app / "extra.txt").write_text("changes the source hash")
    changed = build_container_artifact(app, "Containerfile", app="shop", builder="podman")
    assert not changed.cache_hit and changed.path != first.path
    pm.podman("rmi", f"tako-build/shop:{first.version}", f"tako-build/shop:{changed.version}")


def test_a_failing_build_names_the_step_and_shows_the_build_log_tail(tmp_path: Path) -> None:
    pm.ensure_base_image(tmp_path)
    app = app_dir(tmp_path, "echo boom-in-build && false")
    with pytest.raises(BuildError) as info:
        build_container_artifact(app, "Containerfile", app="shop", builder="podman")
    assert "container build failed" in str(info.value)
    assert info.value.hint is not None and "boom-in-build" in info.value.hint
    assert not list((app / ".tako" / "artifacts").glob("artifact-container-*"))
