"""The root CLI: version, and the single error boundary's exit codes (real console script)."""

import subprocess
import sys
from pathlib import Path

from tako_common import __version__


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tako_client.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_tako_and_tako_server_print_the_same_version(tmp_path: Path) -> None:
    assert run("--version", cwd=tmp_path).stdout.strip() == f"tako {__version__}"
    for form in ("version", "--version"):
        server = subprocess.run(
            [sys.executable, "-m", "tako_server.cli", form], capture_output=True, text=True
        )
        assert server.returncode == 0, server.stderr
        assert server.stdout.strip() == f"tako-server {__version__}"


def test_a_tako_error_is_one_red_line_with_hint_and_exit_1(tmp_path: Path) -> None:
    done = run("config", cwd=tmp_path)
    assert done.returncode == 1
    assert "no tako.toml" in done.stderr and "tako init" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_exiting_with_1_makes_the_process_exit_1(tmp_path: Path) -> None:
    (tmp_path / "tako.toml").write_text('name = "x"\nruntime = "python"\n[envs.production]\n')
    done = run("config", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("deploy", "--no-such-flag", cwd=tmp_path).returncode == 2


def test_success_exits_0(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print(1)\n")
    done = run("init", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert run("config", cwd=tmp_path).returncode == 0
