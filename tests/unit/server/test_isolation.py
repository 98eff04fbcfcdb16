"""Per-app isolation, the pure parts: user names, when isolation applies, limits and their
cgroup files, the daemon's cgroup, OOM counts, the OOM exit reason, the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_common.errors import ConfigError
from tako_server.cgroups import AppCgroup, Limits, limit_files, oom_kills, own_cgroup
from tako_server.isolation import MAX_USER_NAME, app_user_name, isolation_enabled, limits_for
from tako_server.settings import load_settings
from tako_server.supervisor.events import Exited, Log, Restore, Spawned
from tako_server.supervisor.machine import AppMachine
from tako_server.supervisor.spec import Isolation, LaunchSpec, SupervisorSettings


@pytest.mark.parametrize(
    ("app", "env", "name"),
    [
        ("web", "production", "tako-web-production"),
        ("a", "b", "tako-a-b"),
        ("shop-frontend", "staging", "tako-shop-frontend-staging"),
    ],
)
def test_app_users_are_named_after_app_and_env(app: str, env: str, name: str) -> None:
    assert app_user_name(app, env) == name


def test_long_names_are_shortened_with_a_hash_and_stay_distinct() -> None:
    one = app_user_name("a-very-long-application-name", "production")
    two = app_user_name("a-very-long-application-name", "productio")
    assert len(one) <= MAX_USER_NAME and len(two) <= MAX_USER_NAME
    assert one != two and one.startswith("tako-a-very-long")
    assert not one.startswith("tako--")


@pytest.mark.parametrize(
    ("mode", "euid", "enabled"),
    [("auto", 0, True), ("auto", 1000, False), ("on", 1000, True), ("off", 0, False)],
)
def test_isolation_applies_as_root_unless_turned_off(mode: str, euid: int, enabled: bool) -> None:
    assert isolation_enabled(mode, euid) is enabled  # type: ignore[arg-type]


def test_limits_become_cgroup_v2_files() -> None:
    assert limit_files(Limits(memory_mb=256, cpu_percent=150, pids_max=64)) == {
        "memory.max": str(256 * 1024 * 1024),
        "memory.swap.max": "0",
        "cpu.max": "150000 100000",
        "pids.max": "64",
    }


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("0::/system.slice/tako-server.service\n", "/system.slice/tako-server.service"),
        ("12:memory:/x\n0::/\n", "/"),
        ("4:memory:/process_api/1\n1:cpu:/\n", None),  # cgroup v1 only
    ],
)
def test_the_daemons_cgroup_v2_path(text: str, path: str | None) -> None:
    assert own_cgroup(text) == path


def test_oom_kills_are_counted_from_memory_events() -> None:
    events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"
    assert oom_kills(events) == 2
    assert oom_kills("") == 0


def test_app_limits_override_the_server_defaults(tmp_path: Path) -> None:
    (tmp_path / "server-config.toml").write_text(
        '[server]\napp_memory_mb = 2048\n\n[apps."web/production"]\nmemory_mb = 256\n'
    )
    settings = load_settings(data_dir=tmp_path)
    assert limits_for(settings, "web", "production") == Limits(256, 200, 1024)
    assert limits_for(settings, "api", "production") == Limits(2048, 200, 1024)


@pytest.mark.parametrize(
    "text",
    [
        '[apps."Web/production"]\nmemory_mb = 256\n',  # not an app/env key
        '[apps."web/production"]\nmemory_mb = 1\n',  # below 16 MiB
        '[apps."web/production"]\nswap = 1\n',  # unknown key
        '[server]\napp_users = "maybe"\n',
    ],
)
def test_bad_limit_settings_are_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "server-config.toml").write_text(text)
    with pytest.raises(ConfigError):
        load_settings(data_dir=tmp_path)


CGROUP = AppCgroup((Path("/sys/fs/cgroup/x"),), Path("/sys/fs/cgroup/x/memory.events"))


def test_an_oom_kill_is_the_exit_reason_with_the_apps_limit() -> None:
    spec = LaunchSpec(
        "hog",
        "prod",
        "v1",
        Path("/srv"),
        ["app"],
        {},
        Path("/srv/logs"),
        isolation=Isolation(uid=990, gid=990, cgroup=CGROUP, memory_mb=64),
    )
    machine = AppMachine("hog/prod", SupervisorSettings())
    machine.handle(Restore(spec, 1, 300), 0.0)
    machine.handle(Spawned(1, 4242, 40001), 0.1)
    actions = machine.handle(Exited(1, -9, oom=True), 1.0)
    reason = "killed by the OOM killer (the app's memory limit is 64 MiB)"
    assert Log(1, f"exited during startup ({reason})") in actions
    assert machine.last_error == f"instance 1 exited during startup ({reason})"
