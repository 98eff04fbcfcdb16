"""The protocol's image settings and maintenance request: defaults, and refusals that
name the rule (the server checks them again; it never trusts the client)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tako_common.errors import ProtocolError
from tako_common.protocol import (
    ImageSettings,
    MaintenanceRequest,
    ReleaseManifest,
    parse_request,
)


def test_image_settings_fill_the_documented_defaults() -> None:
    settings = ImageSettings()
    assert settings.local_patterns == ["/**"]
    assert settings.remote_patterns == []
    assert settings.sizes == [320, 640, 960, 1200, 1920]
    assert settings.qualities == [75]
    assert settings.formats == ["webp"]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"sizes": []}, "at least 1"),
        ({"sizes": [0]}, "greater than or equal to 1"),
        ({"sizes": [16385]}, "less than or equal to 16384"),
        ({"sizes": ["320"]}, "valid integer"),
        ({"sizes": [320, 320]}, "320 is listed twice"),
        ({"qualities": [101]}, "less than or equal to 100"),
        ({"formats": ["gif"]}, "'webp', 'avif', 'jpeg' or 'png'"),
        ({"formats": []}, "at least 1"),
        ({"local_patterns": ["images/**"]}, "must start with '/'"),
        ({"remote_patterns": ["ftp://x.example.com/**"]}, "scheme must be http or https"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_image_settings_are_refused_naming_the_rule(
    fields: dict[str, object], words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        ImageSettings.model_validate(fields)
    assert words in str(caught.value)


def test_the_release_manifest_carries_images_and_older_ones_have_none() -> None:
    manifest = ReleaseManifest.model_validate(
        {"runtime": "python", "main": "app.py", "images": {"sizes": [640]}}
    )
    assert manifest.images is not None and manifest.images.sizes == [640]
    dumped = manifest.model_dump(mode="json")
    assert ReleaseManifest.model_validate(dumped) == manifest
    assert ReleaseManifest(runtime="python", main="app.py").images is None


def line(**fields: object) -> str:
    return json.dumps({"command": "maintenance", "app": "web", "env": "production", **fields})


def test_a_maintenance_request_parses() -> None:
    request = parse_request(line(enabled=True, message="Back at 5 <b>pm</b>\nThanks"))
    assert isinstance(request, MaintenanceRequest)
    assert (request.enabled, request.key) == (True, "web/production")
    assert parse_request(line(enabled=False)).message == ""  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"enabled": 1}, "valid boolean"),
        ({}, "enabled"),
        ({"enabled": True, "message": "x" * 1001}, "longer than 1000 characters"),
        ({"enabled": True, "message": "a\x1bb"}, "control characters"),
        ({"enabled": True, "ttl": 5}, "ttl"),
    ],
)
def test_bad_maintenance_requests_are_refused(fields: dict[str, object], words: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(line(**fields))
    assert words in str(caught.value)
