"""Python module mains: requirements read like the server installs them, uvicorn/gunicorn
chosen by interface, a clear error when neither is listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_client.build import pyapps
from tako_client.build.plan import BuildError


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"requirements.txt": "Django==5.2\ngunicorn>=22 # web\n"}, {"django", "gunicorn"}),
        ({"requirements.txt": "uvicorn[standard]>=0.30\nFast_API.x ; python_version>'3'\n"},
         {"uvicorn", "fast-api-x"}),
        ({"requirements.txt": "-r base.txt\nflask\n", "base.txt": "# c\n--index-url x\nGunicorn\n"},
         {"flask", "gunicorn"}),
        ({"requirements.txt": "-c pins.txt\nflask\n", "pins.txt": "gunicorn==1\n"}, {"flask"}),
        ({"requirements.txt": "-r ../outside.txt\nflask\n"}, {"flask"}),  # stays in the app
        ({"requirements.txt": "git+https://x/y.git#egg=foo\nmy-pkg @ https://x/p.whl\n"},
         {"my-pkg"}),
        ({"pyproject.toml": '[project]\ndependencies = ["fastapi>=0.110", "uvicorn"]\n'},
         {"fastapi", "uvicorn"}),
        ({"pyproject.toml": '[tool.poetry.dependencies]\npython = "^3.11"\nDjango = "*"\n'},
         {"django"}),
        ({"requirements.txt": "flask\n", "pyproject.toml": '[project]\ndependencies=["x"]\n'},
         {"flask"}),  # requirements.txt first, as the server installs it
        ({}, set()),
    ],
)
def test_requirement_names_are_read_like_the_server_installs_them(
    tmp_path: Path, files: dict[str, str], expected: set[str]
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (tmp_path / "outside.txt").write_text("gunicorn\n")
    for name, text in files.items():
        (app / name).write_text(text)
    assert pyapps.requirement_names(app) == expected


@pytest.mark.parametrize(
    ("main", "preset_interface", "names", "expected"),
    [
        ("main:app", "asgi", {"uvicorn"}, ("uvicorn", "asgi")),
        ("main:app", "asgi", {"uvicorn", "gunicorn"}, ("uvicorn", "asgi")),
        ("app:app", "wsgi", {"gunicorn"}, ("gunicorn", "wsgi")),
        ("app:app", "wsgi", {"uvicorn"}, ("uvicorn", "wsgi")),
        ("app:app", "wsgi", {"uvicorn", "gunicorn"}, ("gunicorn", "wsgi")),
        ("mysite.asgi:application", None, {"uvicorn"}, ("uvicorn", "asgi")),
        ("mysite.wsgi:application", None, {"gunicorn"}, ("gunicorn", "wsgi")),
        ("mysite.wsgi:application", None, {"uvicorn"}, ("uvicorn", "wsgi")),
        ("server:app", None, {"gunicorn", "uvicorn"}, ("gunicorn", None)),
        ("server:app", None, {"uvicorn"}, ("uvicorn", None)),
    ],
)
def test_the_server_is_chosen_by_interface_and_requirements(
    main: str, preset_interface: str | None, names: set[str], expected: tuple[str, str | None]
) -> None:
    interface = pyapps.interface_of(main, preset_interface)
    assert pyapps.server_for(main, interface, names) == expected


@pytest.mark.parametrize(
    ("main", "preset_interface", "names", "message"),
    [
        ("main:app", "asgi", {"gunicorn"}, "is an ASGI app: list uvicorn"),
        ("mysite.asgi:application", None, set(), "is an ASGI app: list uvicorn"),
        ("app:app", "wsgi", set(), "list uvicorn \\(ASGI\\) or gunicorn \\(WSGI\\)"),
        ("server:app", None, {"flask"}, "list uvicorn \\(ASGI\\) or gunicorn \\(WSGI\\)"),
    ],
)
def test_without_a_usable_server_the_error_names_what_to_list(
    main: str, preset_interface: str | None, names: set[str], message: str
) -> None:
    with pytest.raises(BuildError, match=message) as info:
        pyapps.server_for(main, pyapps.interface_of(main, preset_interface), names)
    assert main in info.value.message and info.value.hint


@pytest.mark.parametrize(
    ("requirements", "interface", "script"),
    [
        ("uvicorn\n", "asgi", 'exec uvicorn --host "$HOST" --port "$PORT" "$1"'),
        ("uvicorn\n", "wsgi", 'exec uvicorn --host "$HOST" --port "$PORT" --interface wsgi "$1"'),
        ("gunicorn\n", "wsgi", 'exec gunicorn --bind "$HOST:$PORT" --access-logfile - "$1"'),
    ],
)
def test_start_commands_bind_host_and_port_and_pass_main_as_its_own_argument(
    tmp_path: Path, requirements: str, interface: str, script: str
) -> None:
    (tmp_path / "requirements.txt").write_text(requirements)
    command = pyapps.start_command("main:app", interface, tmp_path)
    assert command[:3] == ("/bin/sh", "-c", script)
    assert command[-1] == "{main}"


def test_an_app_listing_only_uvicorn_prefers_asgi_entries() -> None:
    assert pyapps.preferred_interface({"uvicorn"}) == "asgi"
    assert pyapps.preferred_interface({"uvicorn", "gunicorn"}) == "wsgi"
    assert pyapps.preferred_interface(set()) == "wsgi"
