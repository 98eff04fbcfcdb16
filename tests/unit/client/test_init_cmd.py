"""`tako init`: detects runtime and main, writes a commented template that validates, never
overwrites without --force (or a yes on a terminal), and writes nothing when invalid."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from tako_client import output
from tako_client.commands import init as init_cmd
from tako_common.config import NOT_IMPLEMENTED, load_config, load_config_text
from tako_common.errors import TakoError

EXAMPLE_LINE = re.compile(r'^# (\[.*\]$|[A-Za-z0-9_.-]+ = )')


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    init_cmd.register(app)
    return app


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "shop"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def run(cli: typer.Typer, args: list[str], stdin: str = "") -> Result:
    return CliRunner().invoke(cli, ["init", *args], input=stdin)


@pytest.mark.parametrize(
    ("files", "runtime", "main"),
    [
        ({"bun.lock": "", "package.json": "{}", "index.ts": ""}, "bun", "index.ts"),
        ({"bun.lockb": "", "src/index.ts": ""}, "bun", "src/index.ts"),
        ({"deno.json": "{}", "main.ts": ""}, "deno", "main.ts"),
        ({"deno.jsonc": "{}", "package.json": "{}"}, "deno", None),
        ({"package.json": '{"main": "./lib/start.js"}', "lib/start.js": ""},
         "node", "lib/start.js"),
        ({"package.json": '{"main": "gone.js"}', "server.js": ""}, "node", "server.js"),
        ({"pyproject.toml": "", "app.py": "", "main.py": ""}, "python", "app.py"),
        ({"requirements.txt": "", "main.py": ""}, "python", "main.py"),
        ({"go.mod": "module x", "main.go": ""}, "go", None),
        ({"README.md": ""}, None, None),
    ],
)
def test_detect_finds_runtime_and_main_from_marker_files(
    tmp_path: Path, files: dict[str, str], runtime: str | None, main: str | None
) -> None:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    found = init_cmd.detect(tmp_path)
    assert (found.runtime, found.main) == (runtime, main)


@pytest.mark.parametrize(
    ("lockfile", "manager"), [("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"), (None, None)]
)
def test_detect_node_package_manager_from_its_lockfile(
    tmp_path: Path, lockfile: str | None, manager: str | None
) -> None:
    (tmp_path / "package.json").write_text("{}")
    if lockfile:
        (tmp_path / lockfile).write_text("")
    assert init_cmd.detect(tmp_path).package_manager == manager


@pytest.mark.parametrize(
    ("entry", "runtime"),
    [
        ("app.py", "python"), ("main.py", "python"), ("server.py", "python"),
        ("src/main.py", "python"), ("main.go", "go"), ("main.ts", "deno"), ("mod.ts", "deno"),
        ("index.ts", "bun"), ("server.ts", "bun"), ("src/index.tsx", "bun"),
        ("index.js", "node"), ("server.js", "node"), ("app.js", "node"), ("index.mjs", "node"),
    ],
)
def test_a_lone_entry_file_tells_the_runtime_and_main(
    tmp_path: Path, entry: str, runtime: str
) -> None:
    (tmp_path / entry).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / entry).write_text("")
    found = init_cmd.detect(tmp_path)
    assert (found.runtime, found.main) == (runtime, None if runtime == "go" else entry)


def test_marker_files_win_over_entry_files(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text("{}")
    (tmp_path / "app.py").write_text("")
    (tmp_path / "index.ts").write_text("")
    assert (init_cmd.detect(tmp_path).runtime, init_cmd.detect(tmp_path).main) == (
        "node", "index.ts"
    )


@pytest.mark.parametrize(("entry", "runtime"), [("app.py", "python"), ("server.js", "node")])
def test_init_in_a_directory_holding_only_an_entry_file_sets_runtime_and_main(
    cli: typer.Typer, app_dir: Path, entry: str, runtime: str
) -> None:
    (app_dir / entry).write_text("")
    result = run(cli, [])
    assert result.exit_code == 0, result.output
    config = load_config(app_dir / "tako.toml").config
    assert (config.runtime, config.main) == (runtime, entry)
    assert f"runtime: {runtime}" in result.stdout and f"main: {entry}" in result.stdout


def test_non_interactive_init_writes_a_valid_file_with_defaults(
    cli: typer.Typer, app_dir: Path
) -> None:
    (app_dir / "package.json").write_text("{}")
    (app_dir / "server.js").write_text("")
    result = run(cli, [])
    assert result.exit_code == 0, result.output
    loaded = load_config(app_dir / "tako.toml")
    assert loaded.config.name == "shop"
    assert loaded.config.runtime == "node" and loaded.config.main == "server.js"
    assert loaded.config.envs["production"].route == "shop.localhost"
    assert loaded.warnings == []


def test_flags_set_name_route_and_runtime(cli: typer.Typer, tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir"
    result = run(cli, [str(target), "--name", "api", "--route", "api.example.com/v1/*",
                       "--runtime", "bun@1.2.3"])
    assert result.exit_code == 0, result.output
    config = load_config(target / "tako.toml").config
    assert (config.name, config.runtime) == ("api", "bun@1.2.3")
    assert config.envs["production"].route == "api.example.com/v1/*"


def test_template_documents_every_option(cli: typer.Typer, app_dir: Path) -> None:
    assert run(cli, []).exit_code == 0
    text = (app_dir / "tako.toml").read_text()
    documented = [
        "name =", "runtime =", "package_manager =", "preset =", "main =", "app_root =",
        "dev =", "start =", "assets =", "container =", "release =", "[envs.production]",
        "route =", "routes =", "servers =", "idle_timeout =", "ssl =", "source_ip =",
        "storages =", "backup =", "[vars]", "[vars.staging]", "[build]", "install =",
        "run =", "cwd =", "include =", "exclude =", "[[build_stages]]", "[images]",
        "remote_patterns =", "local_patterns =", "sizes =", "qualities =", "formats =",
        "[storages.", "provider =", "bucket =", "endpoint =", "region =",
        "force_path_style =", "public_base_url =", "[workflows]", "[workflows.email]",
        "workers =", "concurrency =", "[servers.prod-a.workflows]",
    ]
    assert [key for key in documented if key not in text] == []


def test_each_commented_example_section_is_valid_when_uncommented() -> None:
    text = init_cmd.render("shop", "shop.example.com", init_cmd.Detected("bun", None, None))
    sections = text.split("# ----")[2:]
    assert len(sections) == 6
    for section in sections:
        examples = [
            line.removeprefix("# ") for line in section.splitlines()
            if EXAMPLE_LINE.match(line)
        ]
        assert examples, section
        load_config_text(text + "\n".join(examples) + "\n", Path("/app/tako.toml"))


KEY_LINE = re.compile(r"^(# )?[a-z_]+ = ")


def test_each_option_of_the_top_level_and_production_has_its_own_comment() -> None:
    text = init_cmd.render("shop", "shop.example.com", init_cmd.Detected("bun", "index.ts", None))
    head = text.split("# Another environment")[0].splitlines()
    for before, line in zip(head, head[1:], strict=False):
        if KEY_LINE.match(line):
            assert before.startswith("# ") and not KEY_LINE.match(before), line
    assert "docs/" not in text and "@@" not in text


def test_unimplemented_options_are_marked_in_the_template() -> None:
    raw = init_cmd.template_text()
    marked = set(init_cmd.NOTE_MARKER.findall(raw))
    assert marked == set(NOT_IMPLEMENTED)
    text = init_cmd.render("shop", "shop.example.com", init_cmd.Detected("bun", None, None))
    for label in NOT_IMPLEMENTED.values():
        assert f"# not implemented yet in this version: validated, ignored ({label})" in text
    lines = text.splitlines()
    for label in NOT_IMPLEMENTED.values():  # each note sits right above its option
        note = lines.index(f"# not implemented yet in this version: validated, ignored ({label})")
        assert lines[note + 1].startswith("# ") and "not implemented" not in lines[note + 1]
    container = lines.index('# container = "Dockerfile"')
    assert "not implemented" not in lines[container - 1]  # container releases are implemented
    release = text.splitlines().index('# release = "bun run db:migrate"')
    assert "not implemented" not in text.splitlines()[release - 1]  # release commands run


def test_an_implemented_option_loses_its_template_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(NOT_IMPLEMENTED, "ssl_cloudflare")
    text = init_cmd.render("shop", "shop.example.com", init_cmd.Detected("bun", None, None))
    assert '(ssl = "cloudflare")' not in text
    assert "validated, ignored ([workflows])" in text
    load_config_text(text, Path("/app/tako.toml"))


def test_existing_file_is_kept_without_force(cli: typer.Typer, app_dir: Path) -> None:
    (app_dir / "tako.toml").write_text("# mine\n")
    result = run(cli, [])
    assert result.exit_code == 1
    assert isinstance(result.exception, TakoError)
    assert result.exception.hint == "pass --force to overwrite it"
    assert (app_dir / "tako.toml").read_text() == "# mine\n"


def test_force_overwrites_an_existing_file(cli: typer.Typer, app_dir: Path) -> None:
    (app_dir / "tako.toml").write_text("# mine\n")
    assert run(cli, ["--force"]).exit_code == 0
    assert load_config(app_dir / "tako.toml").config.name == "shop"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--route", "/api/*"], "path-only routes are invalid"),
        (["--route", "https://x.com"], "a route takes no scheme"),
        (["--name", "Bad_Name"], "invalid app name 'Bad_Name'"),
        (["--runtime", "ruby"], "invalid runtime 'ruby'"),
    ],
)
def test_invalid_answers_write_nothing(
    cli: typer.Typer, app_dir: Path, args: list[str], message: str
) -> None:
    result = run(cli, args)
    assert result.exit_code == 1
    assert message in result.stderr or message in str(result.exception)
    assert not (app_dir / "tako.toml").exists()
    assert list(app_dir.iterdir()) == []


def test_directory_without_a_usable_name_needs_name_when_not_interactive(
    cli: typer.Typer, tmp_path: Path
) -> None:
    target = tmp_path / "123"
    target.mkdir()
    result = run(cli, [str(target)])
    assert result.exit_code == 1
    assert isinstance(result.exception, TakoError)
    assert "cannot derive an app name" in result.exception.message
    assert result.exception.hint == "pass --name"
    assert run(cli, [str(target), "--name", "numbers"]).exit_code == 0


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as if stdin and stdout were a terminal (answers come from the runner's input)."""
    monkeypatch.setattr(output, "is_interactive", lambda: True)


@pytest.mark.usefixtures("terminal")
def test_interactive_init_asks_for_name_and_route(cli: typer.Typer, app_dir: Path) -> None:
    result = run(cli, [], stdin="store\nstore.example.com\n")
    assert result.exit_code == 0, result.output
    assert "App name [shop]" in result.output and "Production route [store.localhost]" in (
        result.output
    )
    config = load_config(app_dir / "tako.toml").config
    assert config.name == "store"
    assert config.envs["production"].route == "store.example.com"


@pytest.mark.usefixtures("terminal")
@pytest.mark.parametrize(("answer", "code", "kept"), [("n", 1, True), ("y", 0, False)])
def test_interactive_init_asks_before_overwriting(
    cli: typer.Typer, app_dir: Path, answer: str, code: int, kept: bool
) -> None:
    (app_dir / "tako.toml").write_text("# mine\n")
    result = run(cli, [], stdin=f"{answer}\n\n\n")
    assert result.exit_code == code, result.output
    assert ((app_dir / "tako.toml").read_text() == "# mine\n") is kept


PTY_SCRIPT = """
import typer
from tako_client.commands import init
app = typer.Typer()
@app.callback()
def _root() -> None:
    pass
init.register(app)
app(["init"])
"""


def _pty_session(
    cwd: Path, answers: dict[str, str], deadline_s: float = 20.0
) -> tuple[int, str]:
    """Run `init` on a real pseudo-terminal, answering each prompt once it appears."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", PTY_SCRIPT], cwd=cwd, stdin=slave, stdout=slave, stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    seen, pending = "", dict(answers)
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
                for prompt in [p for p in pending if p in seen]:
                    os.write(master, (pending.pop(prompt) + "\n").encode())
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(0.1, deadline - time.monotonic())), seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_init_prompts_on_a_real_terminal(app_dir: Path) -> None:
    code, seen = _pty_session(
        app_dir, {"App name [shop]": "kiosk", "Production route [kiosk.localhost]": ""}
    )
    assert code == 0, seen
    config = load_config(app_dir / "tako.toml").config
    assert config.name == "kiosk"
    assert config.envs["production"].route == "kiosk.localhost"


@pytest.mark.parametrize(
    ("files", "runtime", "preset", "manager"),
    [
        ({"package.json": '{"devDependencies": {"vite": "^6"}}'}, "node", "vite", None),
        ({"package.json": '{"dependencies": {"next": "15", "react": "19"}}',
          "pnpm-lock.yaml": ""}, "node", "nextjs", "pnpm"),
        ({"package.json": '{"dependencies": {"@tanstack/react-start": "1"},'
                          ' "devDependencies": {"vite": "7"}}', "bun.lock": ""},
         "bun", "tanstack-start", None),
        ({"package.json": '{"dependencies": {"astro": "5", "@astrojs/node": "9"}}'},
         "node", "astro", None),
        ({"package.json": '{"devDependencies": {"@remix-run/dev": "2", "vite": "5"}}',
          "yarn.lock": ""}, "node", "remix", "yarn"),
        ({"package.json": '{"devDependencies": {"@react-router/dev": "7", "vite": "6"}}'},
         "node", "react-router", None),
        ({"deno.json": "{}", "package.json": '{"dependencies": {"next": "15"}}'},
         "deno", None, None),  # nextjs does not run on deno
        ({"package.json": '{"dependencies": {"express": "5"}}', "server.js": ""},
         "node", None, None),
        ({"requirements.txt": "Django>=5\ngunicorn\n", "manage.py": ""}, "python", "django", None),
        ({"manage.py": "", "requirements.txt": ""}, "python", "django", None),
        ({"requirements.txt": "fastapi\nuvicorn[standard]\n", "main.py": ""},
         "python", "fastapi", None),
        ({"pyproject.toml": '[project]\ndependencies = ["flask"]\n', "app.py": ""},
         "python", "flask", None),
        ({"requirements.txt": "requests\n", "app.py": ""}, "python", None, None),
    ],
)
def test_detect_finds_the_framework_preset_and_package_manager(
    tmp_path: Path, files: dict[str, str], runtime: str, preset: str | None, manager: str | None
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    found = init_cmd.detect(tmp_path)
    assert (found.runtime, found.preset, found.package_manager) == (runtime, preset, manager)
    if preset is not None:
        assert found.main is None  # the preset resolves the entry point


def test_init_writes_the_detected_preset_and_leaves_main_to_it(
    cli: typer.Typer, app_dir: Path
) -> None:
    (app_dir / "package.json").write_text('{"devDependencies": {"vite": "^6"}}')
    (app_dir / "pnpm-lock.yaml").write_text("")
    (app_dir / "index.js").write_text("")
    result = run(cli, [])
    assert result.exit_code == 0, result.output
    config = load_config(app_dir / "tako.toml").config
    assert (config.runtime, config.preset, config.package_manager, config.main) == (
        "node", "vite", "pnpm", None
    )
    assert "preset: vite" in result.stdout and "from the vite preset" in result.stdout
