"""Layering: tako_common imports neither side; the client never imports the server."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("tako_common", {"tako_server", "tako_client"}),
        ("tako_client", {"tako_server"}),
        ("tako_server", {"tako_client"}),
    ],
)
def test_layering_is_respected(package: str, forbidden: set[str]) -> None:
    assert not imported_packages(package) & forbidden


def test_import_linter_contracts_hold() -> None:
    pytest.importorskip("importlinter")
    script = (
        "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "Contracts: 3 kept, 0 broken" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0
