"""Provider credential names and values: the same rules on the client and in a deploy request."""

from __future__ import annotations

import pytest
from pydantic import ValidationError as PydanticError

from tako_common.credentials import (
    CREDENTIAL_NAMES,
    validate_credential_name,
    validate_credential_value,
)
from tako_common.errors import ValidationError
from tako_common.protocol import DeployRequest


def test_known_names_pass_and_others_are_refused_with_the_list() -> None:
    for name in CREDENTIAL_NAMES:
        assert validate_credential_name(name) == name
    with pytest.raises(ValidationError) as info:
        validate_credential_name("ssl.cloudfare")
    assert "ssl.cloudflare, postgres_url" in info.value.message


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("ssl.cloudflare", "", "empty"),
        ("ssl.cloudflare", "   ", "empty"),
        ("ssl.cloudflare", "tok\nen", "one line"),
        ("ssl.cloudflare", "tok\x00en", "one line"),
        ("ssl.cloudflare", "x" * 4097, "at most 4096"),
        ("postgres_url", "mysql://u:p@db/x", "postgresql://"),
        ("postgres_url", "postgresql:///nohost", "postgresql://"),
        ("postgres_url", "not a url", "postgresql://"),
        ("postgres_url", "postgresql://u:p@[::1/x", "not a valid URL"),
    ],
)
def test_bad_values_name_the_rule(name: str, value: str, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_credential_value(name, value)
    assert rule in info.value.message + (info.value.hint or "")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ssl.cloudflare", "Y3g0X2Rldl90b2tlbl8xMjM0NTY3ODkw"),
        ("postgres_url", "postgresql://tako:pw@10.0.0.5:5432/queue"),
        ("postgres_url", "postgres://db.internal/queue?sslmode=require"),
    ],
)
def test_good_values_pass(name: str, value: str) -> None:
    assert validate_credential_value(name, value) == value


def _deploy(credentials: dict[str, str]) -> DeployRequest:
    return DeployRequest.model_validate(
        {
            "app": "web",
            "env": "production",
            "version": "v1",
            "artifact": "a.tar.zst",
            "sha256": "0" * 64,
            "routes": ["web.example.com"],
            "manifest": {"runtime": "python", "main": "app.py"},
            "credentials": credentials,
        }
    )


def test_a_deploy_request_carries_valid_credentials_only() -> None:
    assert _deploy({"postgres_url": "postgresql://h/db"}).credentials == {
        "postgres_url": "postgresql://h/db"
    }
    assert _deploy({}).credentials == {}
    with pytest.raises(PydanticError, match="unknown credential 'API_KEY'"):
        _deploy({"API_KEY": "x"})
    with pytest.raises(PydanticError, match="postgres_url must look like"):
        _deploy({"postgres_url": "redis://h"})
