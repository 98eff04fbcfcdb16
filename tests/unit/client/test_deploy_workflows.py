"""What ``tako deploy`` sends about workflows, per server, and the PostgreSQL rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_client.deploy import check_workflows_storage, workflows_spec
from tako_common.config import load_config
from tako_common.config.loader import LoadedConfig
from tako_common.errors import ValidationError

CONFIG = """
[envs.production]
route = "a.com"
servers = ["la", "nyc"]

[workflows]
concurrency = 3

[workflows.email]
run = ["python3", "worker.py", "email"]
workers = 1
retries = 4

[workflows.report]
run = ["./report"]
schedule = "0 * * * *"

[servers.la.workflows.email]
workers = 5
"""


def _loaded(tmp_path: Path, text: str = CONFIG) -> LoadedConfig:
    path = tmp_path / "tako.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_each_server_gets_its_own_resolved_groups(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    la, nyc = workflows_spec(loaded, "la", 2), workflows_spec(loaded, "nyc", 2)
    assert la is not None and nyc is not None and la.shared and nyc.shared
    email_la, email_nyc = la.group("email"), nyc.group("email")
    assert email_la is not None and email_nyc is not None
    assert (email_la.workers, email_nyc.workers, email_la.concurrency) == (5, 1, 3)
    assert email_la.retries == 4 and email_la.run == ["python3", "worker.py", "email"]
    report = la.group("report")
    assert report is not None and report.schedule == "0 * * * *" and report.workers == 0


def test_one_server_is_not_shared_and_no_groups_is_none(tmp_path: Path) -> None:
    spec = workflows_spec(_loaded(tmp_path), "la", 1)
    assert spec is not None and not spec.shared
    bare = _loaded(tmp_path, '[envs.production]\nroute = "a.com"\n')
    assert workflows_spec(bare, "la", 1) is None


def test_a_group_without_run_is_refused(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, '[envs.production]\nroute = "a.com"\n[workflows.x]\nworkers = 1\n')
    with pytest.raises(ValidationError, match="workflow group 'x' has no run command"):
        workflows_spec(loaded, "la", 1)


def test_multi_server_workflows_need_postgres_url(tmp_path: Path) -> None:
    shared = workflows_spec(_loaded(tmp_path), "la", 2)
    with pytest.raises(ValidationError) as info:
        check_workflows_storage(shared, "production", {})
    assert info.value.hint == "tako credentials set postgres_url --env production"
    check_workflows_storage(shared, "production", {"postgres_url": "postgresql://db/x"})
    check_workflows_storage(workflows_spec(_loaded(tmp_path), "la", 1), "production", {})
    check_workflows_storage(None, "production", {})
