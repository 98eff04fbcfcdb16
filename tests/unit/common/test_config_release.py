"""``release`` in tako.toml: a command line per environment ("" clears it); a command the
server could not run is refused at load, naming the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_common.config import load_config_text, release_command
from tako_common.errors import ConfigError

PROD = '[envs.production]\nroute = "app.example.com"\n'


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, Path("/app/tako.toml"))
    return info.value.issues


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'release = "  "\n' + PROD,
            'tako.toml:1 release: is blank: write the command, or "" to clear it',
        ),
        (
            PROD + 'release = "\\n"\n',
            'tako.toml:3 envs.production.release: is blank: write the command, or "" to clear it',
        ),
        ('release = "migrate\\u0000"\n' + PROD, "tako.toml:1 release: must not contain NUL bytes"),
        (
            f'release = "{"x" * 8193}"\n' + PROD,
            "tako.toml:1 release: is longer than 8192 characters: put the steps in a script",
        ),
    ],
)
def test_a_release_command_that_cannot_run_is_refused(text: str, expected: str) -> None:
    assert expected in issues_of(text)


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ('release = "bin/migrate"\n' + PROD, "bin/migrate"),
        ('release = "bin/migrate"\n' + PROD + 'release = ""\n', None),
        (PROD + 'release = "seed && migrate"\n', "seed && migrate"),
        (PROD, None),
        (f'release = "{"x" * 8192}"\n' + PROD, "x" * 8192),
    ],
)
def test_the_environment_resolves_its_command(text: str, command: str | None) -> None:
    loaded = load_config_text(text, Path("/app/tako.toml"))
    assert release_command(loaded, "production") == command
