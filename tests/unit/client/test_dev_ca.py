"""The local CA of `tako dev`: made once (key 0600, directory 0700), reused, never
replaced behind the developer's back; its leaves verify for their host and nothing else."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tako_client.dev.ca import CA_CERT, CA_KEY, CaError, LocalCA

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def verify(ca: LocalCA, chain_pem: bytes, host: str) -> None:
    leaf, *rest = x509.load_pem_x509_certificates(chain_pem)
    policy = PolicyBuilder().store(Store([ca.cert])).time(NOW)
    policy.build_server_verifier(x509.DNSName(host)).verify(leaf, rest)


def test_the_ca_is_made_once_with_private_modes(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    ca, made = LocalCA.ensure(home, NOW)
    assert made
    assert stat.S_IMODE((home / CA_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    again, made_again = LocalCA.ensure(home, NOW)
    assert not made_again and again.fingerprint == ca.fingerprint
    assert ca.name.startswith("Tako dev CA (")
    basic = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca and basic.path_length == 0


def test_a_leaf_verifies_for_its_host_only(tmp_path: Path) -> None:
    ca, _ = LocalCA.ensure(tmp_path / "ca", NOW)
    chain, key = ca.issue("web.localhost", NOW)
    assert b"PRIVATE KEY" in key
    verify(ca, chain, "web.localhost")
    with pytest.raises(VerificationError):
        verify(ca, chain, "other.localhost")


def test_a_leaf_from_another_ca_does_not_verify(tmp_path: Path) -> None:
    ca, _ = LocalCA.ensure(tmp_path / "one", NOW)
    other, _ = LocalCA.ensure(tmp_path / "two", NOW)
    chain, _ = other.issue("web.localhost", NOW)
    with pytest.raises(VerificationError):
        verify(ca, chain, "web.localhost")


def test_the_default_leaf_names_the_loopback_names(tmp_path: Path) -> None:
    ca, _ = LocalCA.ensure(tmp_path / "ca", NOW)
    chain, _ = ca.issue("default", NOW)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]


def test_a_key_that_does_not_match_is_an_error_not_a_new_ca(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    LocalCA.ensure(home, NOW)
    LocalCA.ensure(tmp_path / "other", NOW)
    (home / CA_KEY).write_bytes((tmp_path / "other" / CA_KEY).read_bytes())
    with pytest.raises(CaError, match="does not match"):
        LocalCA.ensure(home, NOW)
    (home / CA_CERT).write_text("garbage")
    with pytest.raises(CaError, match="cannot be read"):
        LocalCA.load(home)
