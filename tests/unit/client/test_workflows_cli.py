"""``tako workflows`` without servers: bad input refused before anything is sent, and the
status line of a group."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_client.commands.servers import workflow_line
from tako_client.commands.workflows import enqueue, runs
from tako_common.errors import TakoError
from tako_common.protocol import WorkflowGroupStatus

CONFIG = (
    '[envs.production]\nroute = "app.example.com"\nservers = ["la"]\n'
    '[workflows.email]\nrun = ["python3", "worker.py"]\nworkers = 1\n'
)


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "app" / "tako.toml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    return str(path)


@pytest.mark.parametrize(
    ("group", "payload", "words"),
    [
        ("email", "{not json", "--payload is not valid JSON"),
        ("email", "", "--payload is not valid JSON"),
        ("sms", "{}", "unknown workflow group 'sms' (tako.toml groups: email)"),
    ],
)
def test_enqueue_refuses_bad_input_before_any_server(
    config: str, group: str, payload: str, words: str
) -> None:
    with pytest.raises(TakoError) as info:
        enqueue(group, payload=payload, delay=0.0, key=None, env="production", server=None,
                config=config)
    assert words in info.value.message


def test_runs_of_an_unknown_group_are_refused_locally(config: str) -> None:
    with pytest.raises(TakoError, match="unknown workflow group 'nope'"):
        runs(env="production", group="nope", only_failed=False, limit=10, server=None,
             config=config)


def test_status_line_of_a_group() -> None:
    group = WorkflowGroupStatus(name="email", workers=2, running=2, queued=3, running_runs=1)
    assert workflow_line(group) == (
        "workflows email: 2/2 workers  3 queued  1 running  0 failed"
    )
    lazy = WorkflowGroupStatus(name="nightly", workers=0, running=0)
    assert workflow_line(lazy).startswith("workflows nightly: 0/on demand workers")
