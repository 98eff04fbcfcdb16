"""The container create body of an instance (pure): port, environment, limits, labels;
and adoption's pure parts: log timestamps, the log cursor, resuming, verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from tako_server.supervisor.container import (
    LABEL_APP,
    LABEL_INSTANCE,
    LABEL_PORT,
    LABEL_VERSION,
    ContainerVerdict,
    LogCursor,
    Resume,
    create_config,
    judge_container,
    split_stamp,
)
from tako_server.supervisor.spec import ContainerRun, LaunchSpec


def spec(run: ContainerRun, command: list[str] | None = None) -> LaunchSpec:
    return LaunchSpec(
        app="shop",
        env="production",
        version="abc123",
        workdir=Path("/opt/tako/apps/shop/production/releases/abc123"),
        command=command or [],
        environ={"SECRET": "s", "TAKO_ENV": "production"},
        log_dir=Path("/tmp/logs"),
        container=run,
    )


def test_port_is_published_on_loopback_only_with_env_labels_and_limits() -> None:
    run = ContainerRun(
        "localhost/tako/shop-production:abc123",
        Path("/run/p.sock"),
        memory_mb=256,
        pids_limit=64,
        mounts=(Path("/opt/tako/data"),),
    )
    body = create_config(spec(run), run, port=41000, instance_id=3)
    host = body["HostConfig"]
    assert host["PortBindings"] == {"41000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41000"}]}
    assert body["ExposedPorts"] == {"41000/tcp": {}}
    assert {"SECRET=s", "PORT=41000", "HOST=0.0.0.0", "TAKO_INSTANCE=3"} <= set(body["Env"])
    assert body["Labels"] == {
        LABEL_APP: "shop/production",
        LABEL_VERSION: "abc123",
        LABEL_INSTANCE: "3",
        LABEL_PORT: "41000",
    }
    assert (host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (256 << 20, 256 << 20, 64)
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["Binds"] == ["/opt/tako/data:/opt/tako/data:rw"]
    assert {"Name": "nproc", "Soft": 64, "Hard": 64} in host["Ulimits"]
    assert "Cmd" not in body  # the image's own command


def test_a_writable_root_and_an_explicit_command() -> None:
    run = ContainerRun("img:1", Path("/run/p.sock"), read_only=False)
    body = create_config(spec(run, ["/bin/sh", "-c", "serve"]), run, port=1, instance_id=1)
    assert body["HostConfig"]["ReadonlyRootfs"] is False and "Tmpfs" not in body["HostConfig"]
    assert body["Cmd"] == ["/bin/sh", "-c", "serve"]


def test_a_one_off_runs_in_a_new_container_and_never_shows_values_in_its_argv() -> None:
    from tako_server.oneoff_service import container_oneoff_argv

    run = ContainerRun(
        "localhost/tako/shop-production:v1",
        Path("/run/tako/podman.sock"),
        memory_mb=128,
        pids_limit=32,
        mounts=(Path("/opt/tako/data"),),
    )
    argv = container_oneoff_argv(
        "shop/production", run, ["sh", "-c", "migrate"], ["SECRET", "TERM"], tty=True, stdin=False
    )
    assert argv[:5] == ["podman", "--url", "unix:///run/tako/podman.sock", "run", "--rm"]
    assert argv[-4:] == ["sh", "localhost/tako/shop-production:v1", "-c", "migrate"]
    assert argv[argv.index("--entrypoint") + 1] == "sh"
    assert ["-e", "SECRET"] == argv[argv.index("SECRET") - 1 : argv.index("SECRET") + 1]
    assert "-i" in argv and "-t" in argv and "--read-only" in argv
    assert ["--memory", "128m"] == argv[argv.index("--memory") : argv.index("--memory") + 2]
    assert ["-v", "/opt/tako/data:/opt/tako/data"] == argv[argv.index("-v") : argv.index("-v") + 2]
    assert not any("=" in a and a.startswith("SECRET") for a in argv)


@pytest.mark.parametrize(
    ("line", "second", "text"),
    [
        ("2026-11-30T09:56:41Z tick 1", 1796032601, "tick 1"),
        ("2026-11-30T09:56:41.123456789Z tick 1", 1796032601, "tick 1"),  # fractions dropped
        ("2026-11-30T10:56:41+01:00 a b", 1796032601, "a b"),
        ("2026-11-30T10:56:41.5+01:00 x", 1796032601, "x"),
        ("2026-11-30T09:56:41Z ", 1796032601, ""),  # an empty line
        ("no stamp here", None, "no stamp here"),
        ("2026-11-30T09:56:41 naive", None, "2026-11-30T09:56:41 naive"),  # no zone
        ("oneword", None, "oneword"),
    ],
)
def test_engine_timestamps_are_whole_seconds(line: str, second: int | None, text: str) -> None:
    assert split_stamp(line) == (second, text)


def test_the_cursor_names_a_second_and_counts_into_it() -> None:
    cursor = LogCursor().after(10).after(10).after(11).after(11).after(11)
    assert cursor == LogCursor(11, 3)


@pytest.mark.parametrize(
    ("cursor", "seconds", "new"),
    [
        (LogCursor(), [5, 5, 6], [True, True, True]),  # a fresh container: all of it
        (LogCursor(5, 2), [5, 5, 5, 6], [False, False, True, True]),
        (LogCursor(5, 2), [4, 5, 5, 6], [False, False, False, True]),  # before: read
        (LogCursor(5, 3), [5, 6, 5], [False, True, True]),  # past the cursor: all new
        (LogCursor(5, 1), [None, 5], [True, True]),  # a line without a stamp ends it
    ],
)
def test_a_resumed_log_skips_exactly_what_was_read(
    cursor: LogCursor, seconds: list[int | None], new: list[bool]
) -> None:
    resume = Resume(cursor)
    assert [resume.is_new(second) for second in seconds] == new


def labels(version: str = "v2", instance: str = "3", port: str = "41000") -> dict[str, str]:
    return {LABEL_APP: "shop/production", LABEL_VERSION: version, LABEL_INSTANCE: instance,
            LABEL_PORT: port}


@pytest.mark.parametrize(
    ("state", "found", "stopped", "verdict"),
    [
        ("running", labels(), False, ContainerVerdict.ADOPT),
        ("exited", labels(), False, ContainerVerdict.GONE),
        ("running", labels(), True, ContainerVerdict.STALE),  # the app is stopped
        ("running", labels(version="v1"), False, ContainerVerdict.STALE),
        ("exited", labels(version="v1"), False, ContainerVerdict.STALE),
        ("running", {LABEL_APP: "shop/production", LABEL_VERSION: "v2"}, False,
         ContainerVerdict.STALE),  # made before instances were labelled: not adoptable
        ("running", labels(port="x"), False, ContainerVerdict.STALE),
    ],
)
def test_a_found_container_is_adopted_only_when_it_runs_the_restored_version(
    state: str, found: Mapping[str, str], stopped: bool, verdict: ContainerVerdict
) -> None:
    assert judge_container(state, found, "v2", stopped) is verdict
