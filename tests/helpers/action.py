"""Run the shell steps of the composite GitHub Action (``action.yml``) outside GitHub.

Job: let tests execute the action's real ``run:`` scripts the way the runner does, so the
unit-level test (a recording ``tako`` shim) and the end-to-end test (the real CLI against
test hosts) check the same text users run. Rules:

- only ``shell: bash`` steps run (``uses:`` steps such as setup-python are skipped, the
  test machine provides Python); each runs as ``bash --noprofile --norc -eo pipefail``
  like the runner, with ``HOME`` and ``PATH`` from the caller;
- ``${{ inputs.NAME }}``, ``${{ github.action_path }}``, ``${{ github.workspace }}`` and
  ``${{ runner.temp }}`` are the only expressions understood (anything else raises
  :class:`ActionError`); inputs fall back to the defaults declared in ``action.yml``;
- ``$GITHUB_ENV`` / ``$GITHUB_PATH`` are real files: what a step appends is visible to the
  later steps, as on GitHub (both ``NAME=value`` and ``NAME<<DELIM`` forms).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXPRESSION = re.compile(r"\$\{\{\s*([a-z]+)\.([A-Za-z0-9_-]+)\s*\}\}")
STEP_TIMEOUT = 600.0


class ActionError(RuntimeError):
    """The action file uses something this runner does not emulate, or a step failed."""


@dataclass(frozen=True)
class ShellStep:
    """One ``run:`` step; ``env`` and ``working_directory`` are unrendered expressions."""

    name: str
    run: str
    env: Mapping[str, str]
    working_directory: str | None


@dataclass(frozen=True)
class StepResult:
    name: str
    returncode: int
    stdout: str
    stderr: str


def load_action(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("runs", {}).get("using") != "composite":
        raise ActionError(f"{path} is not a composite action")
    return data


def input_defaults(path: Path) -> dict[str, str]:
    """Every declared input with its default ('' when none)."""
    inputs = load_action(path).get("inputs") or {}
    return {name: str(spec.get("default", "")) for name, spec in inputs.items()}


def action_shell_steps(path: Path) -> list[ShellStep]:
    """The ``run:`` steps of the action in order (``uses:`` steps are left out)."""
    steps = []
    for raw in load_action(path)["runs"]["steps"]:
        if "run" not in raw:
            continue
        if raw.get("shell") != "bash":
            raise ActionError(f"step {raw.get('name')!r}: only shell: bash is emulated")
        env = {str(k): str(v) for k, v in (raw.get("env") or {}).items()}
        steps.append(ShellStep(raw["name"], raw["run"], env, raw.get("working-directory")))
    return steps


def render(text: str, context: Mapping[str, Mapping[str, str]]) -> str:
    """Substitute ``${{ scope.name }}`` from ``context`` (scope -> name -> value)."""

    def value(match: re.Match[str]) -> str:
        scope, name = match.group(1), match.group(2)
        if scope not in context or name not in context[scope]:
            raise ActionError(f"unsupported or unknown expression {match.group(0)}")
        return context[scope][name]

    return EXPRESSION.sub(value, text)


def read_github_env(path: Path) -> dict[str, str]:
    """Parse a ``$GITHUB_ENV`` file (``NAME=value`` lines and ``NAME<<DELIM`` blocks)."""
    found: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = []
            while i < len(lines) and lines[i] != delimiter:
                block.append(lines[i])
                i += 1
            i += 1
            found[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            found[name] = value
    return found


def run_action_steps(
    path: Path,
    inputs: Mapping[str, str],
    *,
    home: Path,
    workspace: Path,
    path_prefix: Collection[Path] = (),
    extra_env: Mapping[str, str] | None = None,
    skip: Collection[str] = (),
) -> list[StepResult]:
    """Run every shell step (except those named in ``skip``) until one fails."""
    unknown = set(inputs) - set(input_defaults(path))
    if unknown:
        raise ActionError(f"inputs not declared in {path.name}: {sorted(unknown)}")
    runner_temp = workspace / ".runner-temp"
    runner_temp.mkdir(parents=True, exist_ok=True)
    github_env, github_path = runner_temp / "github_env", runner_temp / "github_path"
    github_env.touch()
    github_path.touch()
    context = {
        "inputs": {**input_defaults(path), **inputs},
        "github": {"action_path": str(path.parent), "workspace": str(workspace)},
        "runner": {"temp": str(runner_temp)},
    }
    results = []
    for step in action_shell_steps(path):
        if step.name in skip:
            continue
        extra_path = [str(p) for p in path_prefix]
        extra_path += github_path.read_text(encoding="utf-8").split()
        environ = {
            "PATH": os.pathsep.join([*extra_path, os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": str(home),
            "GITHUB_ENV": str(github_env),
            "GITHUB_PATH": str(github_path),
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_ACTION_PATH": str(path.parent),
            "RUNNER_TEMP": str(runner_temp),
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            **(extra_env or {}),
            **read_github_env(github_env),
            **{name: render(value, context) for name, value in step.env.items()},
        }
        cwd = workspace / render(step.working_directory or ".", context)
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step.run],
            cwd=cwd,
            env=environ,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
        results.append(StepResult(step.name, proc.returncode, proc.stdout, proc.stderr))
        if proc.returncode != 0:
            break
    return results
