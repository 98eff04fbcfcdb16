"""Certificate directory names, domain validation and HTTP-01 challenge answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_common.errors import ValidationError
from tako_server.tls import (
    ChallengeStore,
    challenge_response,
    dir_name_for,
    domain_for_dir,
    validate_domain,
)


@pytest.mark.parametrize(
    ("domain", "directory"),
    [
        ("app.example.com", "app.example.com"),
        ("*.example.com", "_wildcard.example.com"),
        ("App.Example.COM.", "app.example.com"),
        ("default", "default"),
    ],
)
def test_domain_maps_to_directory_and_back(domain: str, directory: str) -> None:
    assert dir_name_for(domain) == directory
    assert domain_for_dir(directory) == validate_domain(domain)


@pytest.mark.parametrize(
    "bad", ["../etc", "a/b", "*", "*.*.example.com", "a..b", "-a.com", "a_b.com", "", "x" * 64]
)
def test_domain_that_is_not_dns_labels_is_rejected_before_touching_disk(bad: str) -> None:
    with pytest.raises(ValidationError, match="invalid certificate domain"):
        dir_name_for(bad)


@pytest.mark.parametrize("entry", [".privkey.pem.tmp", "Upper.com", "lost+found", "a b"])
def test_non_certificate_directories_are_ignored(entry: str) -> None:
    assert domain_for_dir(entry) is None


@pytest.fixture
def store() -> ChallengeStore:
    challenges = ChallengeStore()
    challenges.put("tok_en-1", "tok_en-1.thumbprint")
    return challenges


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("/.well-known/acme-challenge/tok_en-1", (200, b"tok_en-1.thumbprint")),
        ("/.well-known/acme-challenge/tok_en-1?x=1", (200, b"tok_en-1.thumbprint")),
        ("/.well-known/acme-challenge/unknown", (404, b"challenge token not found\n")),
        ("/.well-known/acme-challenge/../secret", (404, b"challenge token not found\n")),
        ("/.well-known/acme-challenge/", (404, b"challenge token not found\n")),
        ("/", None),
        ("/.well-known/other", None),
    ],
)
def test_challenge_response_answers_known_tokens_and_404s_the_rest(
    store: ChallengeStore, path: str, answer: tuple[int, bytes] | None
) -> None:
    assert challenge_response(store, path) == answer


def test_removed_token_is_no_longer_answered(store: ChallengeStore) -> None:
    store.remove("tok_en-1")
    assert challenge_response(store, "/.well-known/acme-challenge/tok_en-1") == (
        404,
        b"challenge token not found\n",
    )
    assert len(store) == 0


@pytest.mark.parametrize("token", ["a/b", "../x", "a.b", ""])
def test_token_that_is_not_base64url_is_rejected(store: ChallengeStore, token: str) -> None:
    with pytest.raises(ValidationError, match="invalid ACME token"):
        store.put(token, "x")


def test_mirrored_store_shares_answers_with_another_process_view(tmp_path: Path) -> None:
    writer = ChallengeStore(tmp_path / "challenges")
    reader = ChallengeStore(tmp_path / "challenges")  # what an edge worker builds
    writer.put("abc", "abc.key")
    assert reader.get("abc") == "abc.key"
    assert "abc" in reader
    assert challenge_response(reader, "/.well-known/acme-challenge/abc") == (200, b"abc.key")
    writer.remove("abc")
    assert reader.get("abc") is None
