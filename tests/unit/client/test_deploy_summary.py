"""The end of `tako deploy`: one line per server, then revision and URLs only when some
server runs the release, and a verdict: partial failure or failure on every server, both
exiting 1."""

from __future__ import annotations

import pytest
import typer

from tako_client.commands import deploy as deploy_cmd
from tako_client.deploy import ServerOutcome, failure_summary
from tako_client.fanout import HostResult
from tako_common.errors import TakoError

KEY = "shop/production"
ROUTES = ["shop.example.com"]


@pytest.mark.parametrize(
    ("succeeded", "total", "line"),
    [
        (2, 2, None),
        (1, 1, None),
        (1, 2, "deployment of shop/production partially failed: 1/2 servers succeeded"),
        (0, 2, "deploy of shop/production failed on all 2 servers"),
        (0, 1, "deploy of shop/production failed on its only server"),
    ],
)
def test_failure_summary_names_partial_and_total_failure(
    succeeded: int, total: int, line: str | None
) -> None:
    assert failure_summary(KEY, succeeded, total) == line


def results(*oks: bool) -> list[HostResult[ServerOutcome]]:
    return [
        HostResult(f"web-{i}") if ok else HostResult(f"web-{i}", error=TakoError("refused"))
        for i, ok in enumerate(oks, start=1)
    ]


def test_every_server_failing_prints_no_url_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exit_info:
        deploy_cmd._summary(KEY, ROUTES, results(False, False), "abc1234")
    assert exit_info.value.exit_code == 1
    out, err = capsys.readouterr()
    assert "URL" not in out and "https://" not in out and "Revision" not in out
    assert "deploy of shop/production failed on all 2 servers" in err
    assert "partially" not in err and "0/2" not in err
    assert "web-1: refused" in err and "web-2: refused" in err


def test_partial_failure_keeps_its_line_and_the_url_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exit_info:
        deploy_cmd._summary(KEY, ROUTES, results(True, False), "abc1234")
    assert exit_info.value.exit_code == 1
    out, err = capsys.readouterr()
    assert "URL     : https://shop.example.com" in out and "Revision: abc1234" in out
    assert "✓ web-1: deployed" in out
    assert "partially failed: 1/2 servers succeeded" in err


def test_success_prints_the_url_and_returns(capsys: pytest.CaptureFixture[str]) -> None:
    deploy_cmd._summary(KEY, ROUTES, results(True, True), "abc1234")
    out, err = capsys.readouterr()
    assert "URL     : https://shop.example.com" in out
    assert err == ""
