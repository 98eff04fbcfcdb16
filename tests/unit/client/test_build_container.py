"""Container builds, the pure parts: which builder, which cache inputs, which manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_client.build.container import (
    NoBuilderError,
    build_container_artifact,
    pick_builder,
)
from tako_client.build.plan import BuildError


def which_of(*installed: str):  # type: ignore[no-untyped-def]
    return lambda name: f"/usr/bin/{name}" if name in installed else None


@pytest.mark.parametrize(
    ("choice", "installed", "expected"),
    [
        (None, ("podman", "docker"), "podman"),
        (None, ("docker",), "docker"),
        (None, ("podman",), "podman"),
        ("docker", ("podman", "docker"), "docker"),
        ("podman", ("podman",), "podman"),
    ],
)
def test_the_builder_is_the_chosen_one_or_the_first_installed(
    choice: str | None, installed: tuple[str, ...], expected: str
) -> None:
    assert pick_builder(choice, which_of(*installed)) == expected


@pytest.mark.parametrize(
    ("choice", "installed", "words"),
    [
        (None, (), ("podman", "docker", "neither")),
        ("docker", ("podman",), ("--builder docker", "not installed")),
        ("buildah", ("podman",), ("unknown builder 'buildah'", "podman or docker")),
    ],
)
def test_no_usable_builder_is_a_clear_error(
    choice: str | None, installed: tuple[str, ...], words: tuple[str, ...]
) -> None:
    with pytest.raises(NoBuilderError) as info:
        pick_builder(choice, which_of(*installed))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("path", ["Missing.containerfile", "../Containerfile", "/etc/passwd"])
def test_a_container_file_that_is_not_in_the_app_is_refused_before_building(
    tmp_path: Path, path: str
) -> None:
    with pytest.raises(BuildError) as info:
        build_container_artifact(tmp_path, path, app="shop", builder="podman")
    assert "does not exist" in str(info.value) and repr(path) in str(info.value)
