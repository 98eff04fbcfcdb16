"""The release step of a deploy, pure parts: which command, which leader, what a failure
says, the gate every server waits on, and the output plumbing (lines, tail, prefixes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tako_client.appctx import AppContext, select_servers
from tako_client.global_config import GlobalConfig
from tako_client.oneoff import LineSplitter, OutputSink, Tail
from tako_client.release import (
    ReleaseCoordinator,
    ReleaseGate,
    ReleaseStep,
    leader_of,
    release_failure,
    release_step,
)
from tako_common.config import load_config_text, release_command
from tako_common.errors import TakoError
from tako_common.protocol import SessionExit

INVENTORY = "".join(
    f'[[servers]]\nname = "{name}"\nhost = "10.0.0.{i}"\n\n'
    for i, name in enumerate(["la", "nyc", "fra"], start=1)
)

CONFIG = """\
name = "shop"
release = "python manage.py migrate"
[envs.production]
route = "shop.example.com"
servers = ["nyc", "la"]
[envs.staging]
route = "staging.example.com"
servers = ["fra"]
release = ""
[envs.qa]
route = "qa.example.com"
servers = ["la", "fra"]
release = "python manage.py seed"
"""

LEGACY = """\
name = "shop"
release = "migrate"
[envs.production]
route = "shop.example.com"
[servers.fra]
env = "production"
[servers.la]
env = "production"
"""


def _ctx(tmp_path: Path, text: str, env: str) -> AppContext:
    return AppContext(load_config_text(text, tmp_path / "tako.toml"), env)


def _inventory(tmp_path: Path, text: str = INVENTORY) -> GlobalConfig:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(text)
    return GlobalConfig.load(home)


@pytest.mark.parametrize(
    ("text", "env", "command", "leader"),
    [
        (CONFIG, "production", "python manage.py migrate", "nyc"),  # the first listed
        (CONFIG, "staging", None, None),  # "" clears the top-level command
        (CONFIG, "qa", "python manage.py seed", "la"),  # the env's own command
        (LEGACY, "production", "migrate", "fra"),  # legacy mappings in file order
    ],
)
def test_the_step_runs_the_envs_resolved_command_on_its_first_server(
    tmp_path: Path, text: str, env: str, command: str | None, leader: str | None
) -> None:
    ctx = _ctx(tmp_path, text, env)
    servers = [e.name for e in select_servers(ctx, _inventory(tmp_path)).servers]
    step = release_step(release_command(ctx.loaded, env), servers, None)
    if command is None:
        assert step is None
    else:
        assert step == ReleaseStep(command, leader or "", None)


def test_the_single_server_helper_makes_the_only_server_the_leader(tmp_path: Path) -> None:
    text = 'release = "migrate"\n[envs.production]\nroute = "a.example.com"\n'
    ctx = _ctx(tmp_path, text, "production")
    only = _inventory(tmp_path, '[[servers]]\nname = "solo"\nhost = "10.0.0.9"\n')
    servers = [e.name for e in select_servers(ctx, only).servers]
    assert release_step("migrate", servers, 30) == ReleaseStep("migrate", "solo", 30)


def test_an_environment_without_servers_has_no_leader() -> None:
    with pytest.raises(TakoError, match="no leader"):
        leader_of([])


STEP = ReleaseStep("bin/migrate --all", "nyc", None)


@pytest.mark.parametrize(
    ("result", "timeout", "message"),
    [
        (SessionExit(exit_code=0), None, None),
        (
            SessionExit(exit_code=3),
            None,
            "release command `bin/migrate --all` failed with exit code 3 on nyc",
        ),
        (
            SessionExit(exit_code=137, signal="SIGKILL"),
            None,
            "release command `bin/migrate --all` failed with exit code 137 (SIGKILL) on nyc",
        ),
        (
            SessionExit(exit_code=143, signal="SIGTERM", timed_out=True),
            600,
            "release command `bin/migrate --all` timed out after 600s on nyc",
        ),
    ],
)
def test_a_failed_release_names_the_command_and_shows_its_last_lines(
    result: SessionExit, timeout: int | None, message: str | None
) -> None:
    failure = release_failure(STEP, result, ["line 1", "error: no table"], timeout)
    if message is None:
        assert failure is None
        return
    assert failure is not None and failure.message == message
    assert failure.hint is not None
    assert "last output lines:\n    line 1\n    error: no table\n" in failure.hint
    assert "no server switched" in failure.hint


def test_a_silent_failure_says_it_printed_nothing() -> None:
    failure = release_failure(STEP, SessionExit(exit_code=1), [])
    assert failure is not None and "(it printed nothing)" in (failure.hint or "")


async def test_the_gate_opens_for_every_waiting_server() -> None:
    gate = ReleaseGate()
    waiting = [asyncio.ensure_future(gate.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)
    gate.open()
    gate.shut("too late: the first decision wins")
    assert await asyncio.gather(*waiting) == [None, None, None]


async def test_a_shut_gate_tells_every_server_why() -> None:
    gate = ReleaseGate()
    gate.shut("the release command failed on nyc")
    gate.open()
    assert await gate.wait() == "the release command failed on nyc"


async def test_the_leaders_failure_before_its_command_shuts_the_gate() -> None:
    coordinator = ReleaseCoordinator(STEP)
    coordinator.leader_failed(TakoError("deploy lock of shop/production is held by bob"))
    reason = await coordinator.gate.wait()
    assert reason == (
        "the release command could not run on nyc (deploy lock of shop/production is held by bob)"
    )


@pytest.mark.parametrize(
    ("chunks", "lines", "rest"),
    [
        ([b"one\ntwo\n"], ["one", "two"], []),
        ([b"par", b"tial\nnext"], ["partial"], ["next"]),
        ([b"crlf\r\n", b"\xffbad\n"], ["crlf", "\ufffdbad"], []),
        ([b""], [], []),
    ],
)
def test_output_is_split_into_whole_lines(
    chunks: list[bytes], lines: list[str], rest: list[str]
) -> None:
    splitter = LineSplitter()
    seen = [line for chunk in chunks for line in splitter.feed(chunk)]
    assert (seen, splitter.flush()) == (lines, rest)


def test_the_tail_keeps_the_last_lines() -> None:
    tail = Tail(size=3)
    tail.add(["a", "b"])
    tail.add(["c", "d", "e"])
    assert tail.as_list() == ["c", "d", "e"]


def test_several_servers_output_is_prefixed_line_by_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = OutputSink(prefix="nyc")
    sink.write("stdout", b"migrating\nhalf")
    sink.write("stderr", b"warning: slow\n")
    sink.write("stdout", b" done")
    sink.flush()
    captured = capsys.readouterr()
    assert captured.out == "nyc | migrating\nnyc | half done\n"
    assert captured.err == "nyc | warning: slow\n"
    assert sink.tail.as_list() == ["migrating", "warning: slow", "half done"]
