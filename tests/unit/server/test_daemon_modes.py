"""A fresh start clears upgrading mode left by its own dead reload, never a client's."""

import subprocess
import sys
from pathlib import Path

import pytest

from tako_server.daemon import _clear_dead_reload_mode
from tako_server.state import StateStore


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("owner", "after"),
    [
        (f"reload-{dead_pid()}", "normal"),
        ("upgrade-prod-a-1700000000-42", "upgrading"),
        ("reload-1", "upgrading"),  # pid 1 is alive
    ],
)
def test_only_a_dead_reloads_upgrading_mode_is_cleared(
    tmp_path: Path, owner: str, after: str
) -> None:
    state = StateStore.open(tmp_path / "state.sqlite3")
    state.set_server_mode("upgrading", owner, "2026-01-01T00:00:00Z")
    _clear_dead_reload_mode(state)
    assert state.server_mode().mode == after
