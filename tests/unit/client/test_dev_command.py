"""Which command `tako dev` runs (command line > tako.toml dev > preset > runtime default),
`{main}` expansion, the errors that name the keys to set, and whether a command reloads
the app by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_client.dev.command import (
    RUNTIME_DEFAULTS,
    NoDevCommand,
    choose_dev_command,
    dev_command_for,
    preset_dev_and_main,
    reloads_itself,
)
from tako_common.config import load_config_text


def choose(**kwargs: object) -> tuple[tuple[str, ...], str, bool]:
    args: dict[str, object] = {
        "override": None, "configured": None, "preset_dev": None, "preset_name": None,
        "runtime": None, "main": None,
    }
    args.update(kwargs)
    found = choose_dev_command(**args)  # type: ignore[arg-type]
    return found.argv, found.source, found.reloads_itself


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"override": ["npm", "run", "dev"], "configured": ["x"], "runtime": "node"},
         (("npm", "run", "dev"), "the command line", True)),
        ({"configured": ["python", "{main}"], "preset_dev": ["y"], "main": "app.py"},
         (("python", "app.py"), "tako.toml dev", False)),
        ({"preset_dev": ["bun", "--watch", "{main}"], "preset_name": "bun", "runtime": "bun",
          "main": "index.ts"},
         (("bun", "--watch", "index.ts"), "the bun preset", True)),
        ({"runtime": "node", "main": "server.js"},
         (("node", "--watch", "server.js"), "the node default", True)),
        ({"runtime": "python", "main": "main.py"},
         (("python3", "main.py"), "the python default", False)),
        ({"runtime": "go"}, (("go", "run", "."), "the go default", False)),
        ({"runtime": "deno", "main": "main.ts"},
         (("deno", "run", "-A", "--watch", "main.ts"), "the deno default", True)),
    ],
)
def test_the_first_source_that_has_a_command_wins(
    given: dict[str, object], expected: tuple[tuple[str, ...], str, bool]
) -> None:
    assert choose(**given) == expected


def test_only_an_argument_that_is_exactly_main_is_replaced() -> None:
    argv, _, _ = choose(configured=["x", "--entry={main}", "{main}", "{main}.js"], main="a.py")
    assert argv == ("x", "--entry={main}", "a.py", "{main}.js")


def test_every_runtime_has_a_default() -> None:
    assert set(RUNTIME_DEFAULTS) == {"bun", "node", "deno", "python", "go"}


@pytest.mark.parametrize(
    ("given", "names"),
    [
        ({}, ("dev", "runtime")),
        ({"runtime": "elixir"}, ("dev", "runtime")),
        ({"runtime": "python"}, ("main",)),
        ({"configured": ["node", "{main}"]}, ("main",)),
    ],
)
def test_no_resolvable_command_says_which_keys_to_set(
    given: dict[str, object], names: tuple[str, ...]
) -> None:
    with pytest.raises(NoDevCommand) as caught:
        choose(**given)
    text = caught.value.message + " " + (caught.value.hint or "")
    for name in names:
        assert name in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["node", "--watch", "server.js"], True),
        (["deno", "run", "--watch=src/", "main.ts"], True),
        (["bun", "--hot", "index.ts"], True),
        (["uvicorn", "main:app", "--reload"], True),
        (["vite"], True),
        (["./node_modules/.bin/next", "dev"], True),
        (["npx", "nodemon", "server.js"], True),
        (["npm", "run", "dev"], True),
        (["pnpm", "dev"], True),
        (["deno", "task", "dev"], True),
        (["npm", "run", "start"], False),
        (["tsx", "watch", "src/index.ts"], True),
        (["python", "manage.py", "runserver"], True),
        (["python", "manage.py", "runserver", "--noreload"], False),
        (["flask", "run", "--debug"], True),
        (["flask", "run"], False),
        (["python3", "app.py"], False),
        (["node", "server.js"], False),
        (["go", "run", "."], False),
    ],
)
def test_whether_a_command_reloads_by_itself(argv: list[str], expected: bool) -> None:
    assert reloads_itself(argv) is expected


def test_the_base_presets_carry_a_dev_command() -> None:
    dev, main = preset_dev_and_main("python", None)
    assert dev is not None and "{main}" in dev
    assert main == "app.py"
    node_dev, _ = preset_dev_and_main("node", None)
    assert node_dev is not None and "--watch" in node_dev


def test_a_preset_for_another_runtime_is_refused() -> None:
    with pytest.raises(Exception, match="runtime"):
        preset_dev_and_main("python", "node")


def test_the_app_directory_gives_runtime_and_main(tmp_path: Path) -> None:
    (tmp_path / "server.js").write_text("")
    (tmp_path / "package.json").write_text('{"main": "server.js"}')
    loaded = load_config_text('name = "web"\n', tmp_path / "tako.toml")
    found = dev_command_for(loaded, None)
    assert found.argv[-1] == "server.js" and found.runtime == "node"
    assert found.reloads_itself


def test_a_container_app_still_runs_its_dev_command(tmp_path: Path) -> None:
    loaded = load_config_text(
        'name = "web"\ncontainer = "Dockerfile"\ndev = ["./run-dev"]\n', tmp_path / "tako.toml"
    )
    assert dev_command_for(loaded, None).argv == ("./run-dev",)
