"""Global server inventory ($TAKO_HOME/config.toml): load, validate, edit, save."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_client.global_config import HEADER, GlobalConfig, ServerEntry, tako_home
from tako_common.errors import ConfigError, TakoError, ValidationError


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text)
    return path


def test_tako_home_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAKO_HOME", str(tmp_path / "h"))
    assert tako_home() == tmp_path / "h"
    monkeypatch.delenv("TAKO_HOME")
    assert tako_home() == Path.home() / ".tako"


def test_missing_file_is_created_with_a_comment_header(tmp_path: Path) -> None:
    config = GlobalConfig.load(tmp_path / "home")
    assert config.servers == []
    assert (tmp_path / "home" / "config.toml").read_text() == HEADER


def test_servers_parse_with_defaults_and_normalised_arch(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        '[[servers]]\nname = "la"\nhost = "10.0.0.1"\n\n'
        '[[servers]]\nname = "nyc"\nhost = "nyc.example.com"\nport = 2222\n'
        'description = "east"\narch = "amd64"\nlibc = "glibc"\n',
    )
    config = GlobalConfig.load(tmp_path)
    assert config.servers == [
        ServerEntry("la", "10.0.0.1"),
        ServerEntry("nyc", "nyc.example.com", 2222, "east", "x86_64", "glibc"),
    ]
    assert config.get("nyc").target_label == "linux-x86_64-glibc"  # type: ignore[union-attr]
    assert config.get("la").target_label is None  # type: ignore[union-attr]
    assert config.get("missing") is None


def test_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[[servers]]\nname = "la"\nhost = \n')
    with pytest.raises(ConfigError) as info:
        GlobalConfig.load(tmp_path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[servers]]\nname = "Bad_Name"\nhost = "h"\n', "invalid server name 'Bad_Name'"),
        ('[[servers]]\nname = "a"\n', "name and host are required"),
        ('[[servers]]\nname = "a"\nhost = "h"\nport = 0\n', "invalid port 0"),
        ('[[servers]]\nname = "a"\nhost = "h"\narch = "x86_64"\n', "arch and libc both or neither"),
        ('[[servers]]\nname = "a"\nhost = "h"\narch = "mips"\nlibc = "musl"\n', "arch 'mips'"),
        ('[[servers]]\nname = "a"\nhost = "h"\nflavour = 1\n', "unknown key(s) flavour"),
        (
            '[[servers]]\nname = "a"\nhost = "h"\n[[servers]]\nname = "a"\nhost = "i"\n',
            "server name 'a' appears twice",
        ),
        (
            '[[servers]]\nname = "a"\nhost = "h"\n[[servers]]\nname = "b"\nhost = "h"\n',
            "host h:22 appears twice",
        ),
        ('servers = "nope"\n', "array of tables"),
    ],
)
def test_invalid_entries_are_rejected_naming_the_entry_and_rule(
    tmp_path: Path, text: str, message: str
) -> None:
    write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        GlobalConfig.load(tmp_path)
    assert message in str(info.value)


def test_add_is_idempotent_and_refreshes_target_metadata(tmp_path: Path) -> None:
    config = GlobalConfig.load(tmp_path)
    assert config.add(ServerEntry("la", "10.0.0.1")) == "added"
    assert config.add(ServerEntry("la", "10.0.0.1")) == "unchanged"
    assert config.add(ServerEntry("la", "10.0.0.1", arch="aarch64", libc="musl")) == "updated"
    config.save()
    reloaded = GlobalConfig.load(tmp_path)
    assert reloaded.servers == [ServerEntry("la", "10.0.0.1", arch="aarch64", libc="musl")]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (ServerEntry("la", "10.0.0.2"), "server 'la' already exists with host 10.0.0.1:22"),
        (ServerEntry("other", "10.0.0.1"), "10.0.0.1:22 is already server 'la'"),
    ],
)
def test_add_rejects_conflicting_names_or_hosts(
    tmp_path: Path, entry: ServerEntry, message: str
) -> None:
    config = GlobalConfig.load(tmp_path)
    config.add(ServerEntry("la", "10.0.0.1"))
    with pytest.raises(ValidationError, match=message):
        config.add(entry)


def test_same_host_on_another_port_is_a_different_server(tmp_path: Path) -> None:
    config = GlobalConfig.load(tmp_path)
    config.add(ServerEntry("a", "h"))
    assert config.add(ServerEntry("b", "h", port=2222)) == "added"


def test_save_keeps_comments_and_other_keys_and_remove_works(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        '# my servers\nupgrade_channel = "stable"\n\n'
        '[[servers]]\n# the LA box\nname = "la"\nhost = "10.0.0.1"\n',
    )
    config = GlobalConfig.load(tmp_path)
    config.add(ServerEntry("nyc", "10.0.0.2", description="east"))
    config.save()
    text = (tmp_path / "config.toml").read_text()
    assert (
        "# my servers" in text and "# the LA box" in text and 'upgrade_channel = "stable"' in text
    )
    assert [s.name for s in GlobalConfig.load(tmp_path).servers] == ["la", "nyc"]
    config.remove("la")
    config.save()
    text = (tmp_path / "config.toml").read_text()
    assert "# my servers" in text and "10.0.0.1" not in text
    assert GlobalConfig.load(tmp_path).servers == [
        ServerEntry("nyc", "10.0.0.2", description="east")
    ]
    config.remove("nyc")
    config.save()
    assert GlobalConfig.load(tmp_path).servers == []


def test_remove_unknown_server_is_an_error_with_a_hint(tmp_path: Path) -> None:
    config = GlobalConfig.load(tmp_path)
    with pytest.raises(TakoError, match="server 'ghost' is not in") as info:
        config.remove("ghost")
    assert "tako servers add" in (info.value.hint or "")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    config = GlobalConfig.load(tmp_path)
    config.add(ServerEntry("la", "10.0.0.1"))
    config.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
