"""The client's side of ``[images]`` and maintenance mode, without servers:

- ``[images]`` from tako.toml becomes the settings the release manifest carries (defaults
  filled in; no table: no settings) and travels in the ``deploy`` request;
- ``tako maintenance``: bad input is refused before any server is asked; each host's line;
- ``tako servers status`` shows an app in maintenance mode.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_client.build.artifacts import BuiltArtifact
from tako_client.commands.maintenance import check_message, describe, maintenance_command
from tako_client.commands.servers import app_line
from tako_client.deploy import DeployTarget, build_request, image_settings
from tako_common.config import load_config_text
from tako_common.errors import TakoError
from tako_common.protocol import AppStatus, MaintenanceData

PROD = '[envs.production]\nroute = "app.example.com"\n'


def images_of(text: str) -> object:
    return image_settings(load_config_text(PROD + text, Path("/app/tako.toml")).config.images)


def test_no_images_table_means_no_image_endpoint() -> None:
    assert images_of("") is None


def test_images_defaults_are_filled_in_and_set_values_kept() -> None:
    settings = image_settings(
        load_config_text(
            PROD + '[images]\nremote_patterns = ["cdn.example.com/**"]\nformats = ["avif"]\n',
            Path("/app/tako.toml"),
        ).config.images
    )
    assert settings is not None
    assert settings.remote_patterns == ["cdn.example.com/**"]
    assert settings.local_patterns == ["/**"]
    assert settings.sizes == [320, 640, 960, 1200, 1920]
    assert (settings.qualities, settings.formats) == ([75], ["avif"])


def test_the_deploy_request_carries_images_in_the_release_manifest() -> None:
    settings = image_settings(
        load_config_text(PROD + "[images]\nsizes = [640]\n", Path("/app/tako.toml")).config.images
    )
    target = DeployTarget(
        app="app",
        env="production",
        routes=["app.example.com"],
        vars={},
        secrets={},
        instances=None,
        idle_timeout=300,
        images=settings,
    )
    artifact = BuiltArtifact(
        path=Path("/x.tar.zst"),
        sha256="ab" * 32,
        size=1,
        version="v1",
        cache_hit=False,
        manifest={"runtime": "python", "main": "app.py"},
    )
    request = build_request(target, artifact, "me@host:1")
    assert request.manifest.images is not None and request.manifest.images.sizes == [640]
    wire = request.model_dump(mode="json")
    assert wire["manifest"]["images"]["sizes"] == [640]


@pytest.mark.parametrize(
    ("state", "message", "words"),
    [
        ("maybe", "", "unknown maintenance state 'maybe': use on or off"),
        ("off", "bye", "--message only goes with `tako maintenance on`"),
    ],
)
def test_bad_maintenance_arguments_are_refused_before_anything_else(
    state: str, message: str, words: str
) -> None:
    with pytest.raises(TakoError, match=words.replace("?", r"\?")):
        maintenance_command(
            state, directory=None, env="production", message=message, server=None, config=None
        )


def test_a_message_the_server_would_refuse_is_refused_here() -> None:
    check_message("app", "production", "back at 5\nthanks")
    with pytest.raises(TakoError, match="invalid --message: the maintenance message is longer"):
        check_message("app", "production", "x" * 1001)
    with pytest.raises(TakoError, match="control characters"):
        check_message("app", "production", "\x07")


def test_each_host_says_what_its_edge_does_now() -> None:
    on = MaintenanceData(app="app", env="production", enabled=True, since="2026-01-01T10:00:00Z")
    assert describe(on) == (
        "app/production: maintenance on since 2026-01-01T10:00:00Z, the edge answers 503"
    )
    off = MaintenanceData(app="app", env="production", enabled=False)
    assert "maintenance off" in describe(off)


def test_servers_status_shows_maintenance_mode() -> None:
    status = AppStatus(
        app="app",
        env="production",
        version="v1",
        state="running",
        desired_instances=1,
        healthy_instances=1,
    )
    assert "MAINTENANCE" not in app_line(status)
    down = status.model_copy(
        update={"maintenance": True, "maintenance_since": "2026-01-01T10:00:00Z"}
    )
    assert app_line(down).startswith(
        "app/production  running  MAINTENANCE since 2026-01-01T10:00:00Z  1/1 healthy"
    )
