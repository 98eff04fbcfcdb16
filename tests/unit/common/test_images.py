"""``[images]`` patterns (tako_common.images): the syntax rules and the matching, as tables."""

from __future__ import annotations

import ipaddress

import pytest

from tako_common.images import (
    check_local_pattern,
    is_public_ip,
    parse_remote_pattern,
    path_matches,
)

PATHS: list[tuple[str, str, bool]] = [
    ("/**", "/a.png", True),
    ("/**", "/deep/er/a.png", True),
    ("/images/**", "/images/a.png", True),
    ("/images/**", "/images/x/y/a.png", True),
    ("/images/**", "/images", True),  # ** also matches no segment
    ("/images/**", "/imagesx/a.png", False),
    ("/images/**", "/other/a.png", False),
    ("/images/*", "/images/a.png", True),
    ("/images/*", "/images/x/a.png", False),  # * is exactly one segment
    ("/images/*", "/images", False),
    ("/*/thumb.png", "/u1/thumb.png", True),
    ("/*/thumb.png", "/u1/u2/thumb.png", False),
    ("/**/thumb.png", "/u1/u2/thumb.png", True),
    ("/a.png", "/a.png", True),
    ("/a.png", "/A.png", False),  # case-sensitive
]


@pytest.mark.parametrize(("pattern", "path", "expected"), PATHS)
def test_path_patterns_match_by_segments(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("images/**", "must start with '/'"),
        ("//cdn/**", "must start with '/'"),
        ("/images/../secret/**", "plain path pattern"),
        ("/images/**?v=1", "plain path pattern"),
        ("/a\\b", "plain path pattern"),
    ],
)
def test_bad_local_patterns_name_the_rule(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("?", r"\?")):
        check_local_pattern(text)


# (pattern, url parts (scheme, host, port, path), matches)
UPLOADS = "https://cdn.example.com/uploads/**"
REMOTE: list[tuple[str, tuple[str, str, int | None, str], bool]] = [
    (UPLOADS, ("https", "cdn.example.com", None, "/uploads/a.png"), True),
    (UPLOADS, ("http", "cdn.example.com", None, "/uploads/a.png"), False),
    ("cdn.example.com/uploads/**", ("http", "cdn.example.com", None, "/uploads/a.png"), True),
    ("cdn.example.com/uploads/**", ("https", "CDN.example.com.", None, "/uploads/a.png"), True),
    ("cdn.example.com/uploads/**", ("https", "cdn.example.com", None, "/other/a.png"), False),
    ("cdn.example.com", ("https", "cdn.example.com", None, "/any/thing.png"), True),
    ("*.example.com/**", ("https", "img.example.com", None, "/a.png"), True),
    ("*.example.com/**", ("https", "a.b.example.com", None, "/a.png"), True),
    ("*.example.com/**", ("https", "example.com", None, "/a.png"), False),
    ("*.example.com/**", ("https", "badexample.com", None, "/a.png"), False),
    ("https://cdn.example.com:8443/**", ("https", "cdn.example.com", 8443, "/a.png"), True),
    ("https://cdn.example.com:8443/**", ("https", "cdn.example.com", None, "/a.png"), False),
    ("https://cdn.example.com/**", ("https", "cdn.example.com", 443, "/a.png"), True),
    ("http://127.0.0.1:9000/**", ("http", "127.0.0.1", 9000, "/a.png"), True),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "url", "expected"), REMOTE)
def test_remote_patterns_match_scheme_host_port_and_path(
    pattern: str, url: tuple[str, str, int | None, str], expected: bool
) -> None:
    assert parse_remote_pattern(pattern).matches(*url) is expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ftp://cdn.example.com/**", "scheme must be http or https"),
        ("https://user@cdn.example.com/**", "user, query or fragment"),
        ("https://cdn.example.com/a?x=1", "user, query or fragment"),
        ("https://cdn.example.com/a#frag", "user, query or fragment"),
        ("https://cdn.*.com/**", "invalid remote image pattern"),
        ("https://*/**", "invalid remote image pattern"),
        ("https://cdn.example.com:99999/**", "invalid remote image pattern"),
        ("https:///**", "invalid remote image pattern"),
        (" cdn.example.com", "invalid remote image pattern"),
        ("cdn.example.com/a/../b", "'..' segments"),
    ],
)
def test_bad_remote_patterns_name_the_rule(text: str, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_remote_pattern(text)
    assert words in str(caught.value)


def test_a_pattern_that_names_an_ip_literal_says_so() -> None:
    assert parse_remote_pattern("http://10.0.0.5/**").names_ip
    assert parse_remote_pattern("http://[::1]:8080/**").names_ip
    assert not parse_remote_pattern("cdn.example.com/**").names_ip


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT / overlay networks
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fd00::1", False),
        ("fe80::1", False),
        ("::ffff:10.0.0.1", False),  # IPv4-mapped private
        ("::ffff:93.184.216.34", True),
    ],
)
def test_only_public_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert is_public_ip(ipaddress.ip_address(address)) is public
