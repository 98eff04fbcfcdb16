"""The release manifest of container releases and runtime pins (strict, both sides)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tako_common.protocol import ReleaseManifest

CONTAINER = {"built_tag": "tako-build/shop:v1", "read_only": True}


@pytest.mark.parametrize(
    "fields",
    [
        {"runtime": "container", "main": "Containerfile", "container": CONTAINER},
        {"runtime": "bun", "main": "index.ts", "runtime_version": "1.1.38"},
        {"runtime": "python", "main": "app.py", "runtime_version": "3.12"},
    ],
)
def test_valid_manifests(fields: dict[str, Any]) -> None:
    ReleaseManifest.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"runtime": "container", "main": "Containerfile"}, "go together"),
        ({"runtime": "bun", "main": "x.ts", "container": CONTAINER}, "go together"),
        ({"runtime": "bun", "main": "x.ts", "runtime_version": "../../etc"}, "pattern"),
        ({"runtime": "bun", "main": "x.ts", "runtime_version": "1.2/3"}, "pattern"),
        (
            {"runtime": "container", "main": "C", "container": {"built_tag": "a b"}},
            "pattern",
        ),
    ],
)
def test_invalid_manifests_are_refused(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        ReleaseManifest.model_validate(fields)
    assert words in str(info.value)
