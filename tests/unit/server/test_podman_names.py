"""Image names of container releases and the answers of Podman's image load (pure)."""

from __future__ import annotations

import pytest

from tako_server.podman import ContainerEngineError, _loaded_name, image_ref, image_repo


def test_each_release_has_its_own_tag_in_the_app_repository() -> None:
    assert image_repo("shop", "production") == "localhost/tako/shop-production"
    assert image_ref("shop", "staging", "Abc123_deadbeef") == (
        "localhost/tako/shop-staging:abc123_deadbeef"
    )


@pytest.mark.parametrize(
    ("answer", "name"),
    [
        (
            [{"stream": "Loaded image: localhost/tako-build/shop:v1\n"}],
            "localhost/tako-build/shop:v1",
        ),
        ({"stream": "Loaded image(s): localhost/a:1,localhost/b:1\n"}, "localhost/a:1"),
        ([{"status": "Loaded image ID: sha256:abc\n"}], "sha256:abc"),
        ([{"stream": "Getting image source signatures"}], None),
    ],
)
def test_the_loaded_image_is_read_from_the_load_answer(answer: object, name: str | None) -> None:
    assert _loaded_name(answer) == name


def test_a_load_error_is_reported() -> None:
    with pytest.raises(ContainerEngineError) as info:
        _loaded_name([{"error": "invalid tar header"}])
    assert "invalid tar header" in str(info.value)
