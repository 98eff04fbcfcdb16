"""Name and version rules: app/env names, versions, sanitising, deploy version naming."""

import pytest

from tako_common.errors import ValidationError
from tako_common.names import (
    parse_release_version,
    release_version,
    sanitize_app_name,
    validate_app_name,
    validate_env_var_name,
    validate_version,
)


@pytest.mark.parametrize("name", ["a", "my-app", "app1", "a" * 63, "x-1-y"])
def test_valid_app_names_are_accepted(name: str) -> None:
    assert validate_app_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "My_App", "1app", "-app", "app-", "a" * 64, "app.x", "../x", "a/b", "ÄPP", "app_1"]
)
def test_invalid_app_names_name_the_rule(name: str) -> None:
    with pytest.raises(ValidationError, match=r"\[a-z\]\[a-z0-9-\]\{0,62\}"):
        validate_app_name(name)


@pytest.mark.parametrize(
    "version", ["abc1234", "abc1234_deadbeef", "nogit_deadbeef", "v1.2.3", "a" * 128]
)
def test_valid_versions(version: str) -> None:
    assert validate_version(version) == version


@pytest.mark.parametrize(
    "version", ["", ".", "..", "../x", "a/b", "a\\b", "a" * 129, "x y", "a\x00"]
)
def test_versions_never_contain_path_separators_or_dots_only(version: str) -> None:
    with pytest.raises(ValidationError, match="invalid release version"):
        validate_version(version)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("My App", "my-app"),
        ("my_app.v2", "my-app-v2"),
        ("123-web", "web"),
        ("--x--", "x"),
        ("Shop__Front", "shop-front"),
        ("a" * 80, "a" * 63),
    ],
)
def test_sanitize_app_name_derives_a_valid_name(raw: str, expected: str) -> None:
    assert sanitize_app_name(raw) == expected


@pytest.mark.parametrize("raw", ["123", "---", "", "__"])
def test_sanitize_app_name_refuses_when_nothing_is_left(raw: str) -> None:
    with pytest.raises(ValidationError, match="set `name`|cannot derive"):
        sanitize_app_name(raw)


@pytest.mark.parametrize(
    ("commit", "dirty", "expected"),
    [
        ("abc1234", False, "abc1234"),
        ("abc1234", True, "abc1234_deadbeef"),
        (None, False, "nogit_deadbeef"),
        (None, True, "nogit_deadbeef"),
    ],
)
def test_release_version_naming(commit: str | None, dirty: bool, expected: str) -> None:
    version = release_version(commit, dirty, "deadbeefcafe0123")
    assert version == expected
    validate_version(version)


@pytest.mark.parametrize("version", ["abc1234", "abc1234_deadbeef", "nogit_deadbeef"])
def test_parse_release_version_inverts_naming(version: str) -> None:
    commit, dirty, hash8 = parse_release_version(version)
    assert release_version(commit, dirty, (hash8 or "0" * 8) + "00") == version


@pytest.mark.parametrize("bad", ["ZZZ", "abc/def"])
def test_release_version_rejects_bad_commit(bad: str) -> None:
    with pytest.raises(ValidationError):
        release_version(bad, False, "deadbeef")


@pytest.mark.parametrize("name", ["PATH", "_x", "API_URL2"])
def test_env_var_names(name: str) -> None:
    assert validate_env_var_name(name) == name


@pytest.mark.parametrize("name", ["1X", "A-B", "", "A B", "A=B"])
def test_bad_env_var_names(name: str) -> None:
    with pytest.raises(ValidationError):
        validate_env_var_name(name)
