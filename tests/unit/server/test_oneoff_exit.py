"""One-off exit codes follow the shell: a signal N reads as 128 + N, with its name."""

from __future__ import annotations

import pytest

from tako_server.oneoff import exit_status


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [
        (0, (0, None)),
        (3, (3, None)),
        (255, (255, None)),
        (-2, (130, "SIGINT")),
        (-9, (137, "SIGKILL")),
        (-15, (143, "SIGTERM")),
        (-99, (227, "SIG99")),
    ],
)
def test_exit_status_reads_like_a_shell(returncode: int, expected: tuple[int, str | None]) -> None:
    assert exit_status(returncode) == expected
