"""Options this version validates but does not implement yet: one list, and loading warns
(with file, line and key) wherever such an option is set; settings that change nothing
are not reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_common.config import NOT_IMPLEMENTED, load_config_text, unimplemented
from tests.unit.common.test_config_model import COMPLETE_EXAMPLE

PROD = '[envs.production]\nroute = "app.example.com"\n'
S3 = (
    '[storages.media]\nprovider = "s3"\nbucket = "b"\nendpoint = "https://s3.example.com"\n'
    'region = "auto"\n'
)


def warnings_of(text: str) -> list[str]:
    return load_config_text(text, Path("/app/tako.toml")).warnings


def test_the_list_names_what_is_not_implemented_and_each_entry_can_be_found() -> None:
    assert set(NOT_IMPLEMENTED) == {
        "workflows", "source_ip",
        "ssl_cloudflare",
    }
    assert set(NOT_IMPLEMENTED) <= set(unimplemented.FINDERS)


def message(option: str) -> str:
    return f"'{option}' is not implemented yet in this version and is ignored"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PROD + "[workflows]\nworkers = 1\n", f"tako.toml:3 workflows: {message('[workflows]')}"),
        (PROD + "[servers.la.workflows]\nworkers = 1\n",
         f"tako.toml:3 servers.la.workflows: {message('[workflows]')}"),
        (PROD + 'source_ip = "auto"\n',
         f"tako.toml:3 envs.production.source_ip: {message('source_ip')}"),
        (PROD + 'ssl = "cloudflare"\n',
         "tako.toml:3 envs.production.ssl: " + message('ssl = "cloudflare"')),
    ],
)
def test_a_set_option_that_is_not_implemented_warns_with_its_line(
    text: str, expected: str
) -> None:
    assert expected in warnings_of(text)


@pytest.mark.parametrize(
    "text",
    [
        'runtime = "bun"\n' + PROD,
        'runtime = "bun@1.2.3"\n' + PROD,  # pinned runtimes are provisioned (docs/runtimes.md)
        PROD + 'release = ""\n',
        'release = "migrate"\n' + PROD,  # release commands are implemented
        PROD + 'release = "seed"\n',
        PROD + 'ssl = "letsencrypt"\nidle_timeout = 60\n',
        '[envs.production]\nroutes = ["a.com"]\nservers = ["la"]\n',
        PROD + 'storages = { uploads = "local" }\n',  # storages and backups are implemented
        PROD + "[images]\nsizes = [320]\n",  # the image optimizer is implemented
        'dev = ["bun", "dev"]\n' + PROD,  # tako dev runs it
        'container = "Dockerfile"\ncontainer_read_only = false\n' + PROD,  # docs/containers.md
        PROD + S3,
        PROD + 'backup = { storage = "media", keep_daily = 14 }\n' + S3,
    ],
)
def test_implemented_or_neutral_settings_do_not_warn(text: str) -> None:
    assert warnings_of(text) == []


def test_the_complete_reference_example_warns_for_each_unimplemented_option_it_sets() -> None:
    found = warnings_of(COMPLETE_EXAMPLE)
    absent = {"ssl_cloudflare"}  # not in the reference's example
    for option_id, option in NOT_IMPLEMENTED.items():
        hits = [line for line in found if message(option) in line]
        assert bool(hits) is (option_id not in absent), option


def test_an_entry_removed_from_the_list_stops_warning_and_loses_its_template_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert unimplemented.template_note("ssl_cloudflare") == (
        '# not implemented yet in this version: validated, ignored (ssl = "cloudflare")'
    )
    monkeypatch.delitem(NOT_IMPLEMENTED, "ssl_cloudflare")
    assert warnings_of(PROD + 'ssl = "cloudflare"\n') == []
    assert unimplemented.template_note("ssl_cloudflare") == ""
