"""Layering: tako_common imports neither side; the client never imports the server; the
edge never imports the supervisor or the command side (import-linter contracts in
``pyproject.toml``, checked here, plus a direct parse that also sees lazy imports)."""

import ast
import subprocess
import sys
import tomllib
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
    assert "Contracts: 4 kept, 0 broken" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0


EDGE_MAY_NOT_IMPORT = {
    "tako_server.supervisor",
    "tako_server.apps",
    "tako_server.deployer",
    "tako_server.handlers",
    "tako_server.daemon",
    "tako_server.control",
}


def test_the_edge_contract_is_in_force() -> None:
    """A forbidden contract (indirect imports included) keeps the edge to its hooks."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    [edge] = [c for c in contracts if c["source_modules"] == ["tako_server.edge"]]
    assert edge["type"] == "forbidden"
    assert EDGE_MAY_NOT_IMPORT <= set(edge["forbidden_modules"])
    assert not edge.get("allow_indirect_imports", False)


def test_no_edge_module_names_a_forbidden_module() -> None:
    """Every import in tako_server/edge, function-level and TYPE_CHECKING ones included."""
    found = []
    for path in sorted((ROOT / "tako_server" / "edge").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if any(name == f or name.startswith(f + ".") for f in EDGE_MAY_NOT_IMPORT):
                    found.append(f"{path.name}:{node.lineno}: {name}")
    assert found == []
