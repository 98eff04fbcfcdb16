"""Settings precedence: defaults < server-config.toml < TAKO_* environment < CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_common.errors import ConfigError
from tako_server.settings import LETS_ENCRYPT_STAGING, load_settings

ENV_NAMES = [
    "TAKO_DATA_DIR",
    "TAKO_SOCKET",
    "TAKO_HTTP_PORT",
    "TAKO_HTTPS_PORT",
    "TAKO_WORKERS",
    "TAKO_ACME_EMAIL",
    "TAKO_ACME_STAGING",
    "TAKO_ACME_DIRECTORY_URL",
    "TAKO_ACME_CA_BUNDLE",
    "TAKO_ACME_ENABLED",
    "TAKO_LOG_LEVEL",
    "TAKO_CLOUDFLARE_API_URL",
    "TAKO_CLOUDFLARE_DNS_PROPAGATION",
    "TAKO_SOURCE_IP_TRUSTED_PROXIES",
    "TAKO_SOURCE_IP_PROXY_PROTOCOL",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def _write_config(data_dir: Path, text: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "server-config.toml").write_text(text)


def test_defaults_without_file_env_or_flags(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert (s.http_port, s.https_port, str(s.socket)) == (80, 443, "/var/run/tako/tako.sock")
    assert s.acme_enabled is True and s.acme_email is None


def test_default_data_dir_is_opt_tako() -> None:
    assert str(load_settings().data_dir) == "/opt/tako"


def test_config_file_sections_map_to_settings(tmp_path: Path) -> None:
    _write_config(
        tmp_path,
        '[server]\nhttp_port = 8080\nworkers = 3\n'
        '[acme]\nemail = "ops@example.com"\nstaging = true\n',
    )
    s = load_settings(data_dir=tmp_path)
    assert (s.http_port, s.workers, s.acme_email) == (8080, 3, "ops@example.com")
    assert s.directory_url == LETS_ENCRYPT_STAGING


@pytest.mark.parametrize(
    ("file_port", "env_port", "flag_port", "expected"),
    [
        (8080, None, None, 8080),
        (8080, "9090", None, 9090),
        (8080, "9090", 7070, 7070),
        (None, "9090", None, 9090),
    ],
)
def test_precedence_file_then_env_then_flag(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    file_port: int | None,
    env_port: str | None,
    flag_port: int | None,
    expected: int,
) -> None:
    if file_port is not None:
        _write_config(tmp_path, f"[server]\nhttp_port = {file_port}\n")
    if env_port is not None:
        monkeypatch.setenv("TAKO_HTTP_PORT", env_port)
    assert load_settings(data_dir=tmp_path, http_port=flag_port).http_port == expected


def test_data_dir_from_environment_chooses_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_config(tmp_path, "[server]\nhttps_port = 8443\n")
    monkeypatch.setenv("TAKO_DATA_DIR", str(tmp_path))
    assert load_settings().https_port == 8443


@pytest.mark.parametrize(
    ("name", "value", "attr", "expected"),
    [
        (
            "TAKO_ACME_DIRECTORY_URL",
            "https://127.0.0.1:14000/dir",
            "directory_url",
            "https://127.0.0.1:14000/dir",
        ),
        ("TAKO_ACME_CA_BUNDLE", "/tmp/pebble.pem", "acme_ca_bundle", Path("/tmp/pebble.pem")),
        ("TAKO_ACME_EMAIL", "a@b.example", "acme_email", "a@b.example"),
        ("TAKO_ACME_ENABLED", "false", "acme_enabled", False),
        ("TAKO_SOCKET", "/tmp/x/tako.sock", "socket", Path("/tmp/x/tako.sock")),
    ],
)
def test_environment_names(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    attr: str,
    expected: object,
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(load_settings(data_dir=tmp_path), attr) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[server]\nhttp_port = 80\nbogus = 1\n",
            r"server-config.toml:3: server.bogus: Extra inputs",
        ),
        (
            '[server]\n\nhttps_port = "many"\n',
            r"server-config.toml:3: server.https_port: Input should be a valid integer",
        ),
        ("[acme\n", r"invalid TOML: .*line 1"),
        ("[tls]\nx = 1\n", r"server-config.toml:1: tls: Extra inputs"),
    ],
)
def test_invalid_config_file_names_file_line_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    _write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_settings(data_dir=tmp_path)


def test_invalid_environment_value_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAKO_HTTP_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="http_port"):
        load_settings(data_dir=tmp_path)


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    with pytest.raises(Exception, match="frozen"):
        s.http_port = 1  # type: ignore[misc]


def test_cloudflare_and_source_ip_sections(tmp_path: Path) -> None:
    _write_config(
        tmp_path,
        '[cloudflare]\napi_url = "http://127.0.0.1:9/client/v4"\ndns_propagation = 0\n'
        '[source_ip]\ntrusted_proxies = ["10.0.0.0/8", "192.0.2.7"]\nproxy_protocol = true\n',
    )
    s = load_settings(data_dir=tmp_path)
    assert s.cloudflare_api_url == "http://127.0.0.1:9/client/v4"
    assert s.cloudflare_dns_propagation == 0
    assert s.source_ip_trusted_proxies == ["10.0.0.0/8", "192.0.2.7"]
    assert s.source_ip_proxy_protocol is True
    default = load_settings(data_dir=tmp_path / "none")
    assert default.cloudflare_api_url == "https://api.cloudflare.com/client/v4"
    assert default.source_ip_trusted_proxies == [] and default.source_ip_proxy_protocol is False


def test_a_bad_trusted_proxy_range_is_refused_naming_it(tmp_path: Path) -> None:
    _write_config(tmp_path, '[source_ip]\ntrusted_proxies = ["10.0.0.0/33"]\n')
    with pytest.raises(ConfigError, match="'10.0.0.0/33' is not an IP address or CIDR range"):
        load_settings(data_dir=tmp_path)
