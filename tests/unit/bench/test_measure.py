"""The proxy benchmark's parsers: /proc text and wrk's report in, numbers out (no /proc,
no wrk: the inputs are the texts those produce)."""

from __future__ import annotations

import pytest

from bench.measure import parse_netstat, parse_pss_kib, parse_stat, source_address
from bench.run import Cell, WrkRun, cell_duration, parse_wrk, summarize

SMAPS_ROLLUP = """00400000-7ffd2e5f6000 ---p 00000000 00:00 0                          [rollup]
Rss:               21644 kB
Pss:                9053 kB
Pss_Anon:           4312 kB
Shared_Clean:      12572 kB
"""

WRK = """Running 2s test @ https://127.0.0.1:41231/
  2 threads and 5000 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   445.96ms  347.06ms   3.73s    93.17%
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    3.10ms
     99%    1.50s
  112956 requests in 10.11s, 18.10MB read
  Socket errors: connect 0, read 12, write 3, timeout 7
  Non-2xx or 3xx responses: 40
Requests/sec:  11172.70
Transfer/sec:      1.79MB
"""


@pytest.mark.parametrize(
    ("text", "kib"),
    [(SMAPS_ROLLUP, 9053), ("", 0), ("Rss: 10 kB\n", 0)],
)
def test_pss_is_read_from_smaps_rollup(text: str, kib: int) -> None:
    assert parse_pss_kib(text) == kib


@pytest.mark.parametrize(
    ("stat", "parent", "ticks"),
    [
        ("1234 (nginx) S 1200 1234 1234 0 -1 4194560 1 0 0 0 70 30 0 0 20 0 1", 1200, 100),
        ("99 (a b) (c)) R 7 99 99 0 -1 0 0 0 0 0 5 6 0 0 20 0 1", 7, 11),  # odd command name
    ],
)
def test_stat_gives_parent_and_cpu_ticks(stat: str, parent: int, ticks: int) -> None:
    assert parse_stat(stat) == (parent, ticks)


@pytest.mark.parametrize(
    ("index", "address"),
    [(0, "127.1.0.1"), (63, "127.1.0.64"), (254, "127.1.0.255"), (255, "127.1.1.0")],
)
def test_source_addresses_are_numbered_as_the_shim_numbers_them(index: int, address: str) -> None:
    assert source_address(index) == address


def test_wrk_report_gives_rate_latencies_and_every_kind_of_error() -> None:
    run = parse_wrk(WRK)
    assert run == WrkRun(11172.70, 0.812, 1500.0, 112956, 22, 40)


def test_a_wrk_report_without_errors_counts_none() -> None:
    text = WRK.replace("  Socket errors: connect 0, read 12, write 3, timeout 7\n", "")
    text = text.replace("  Non-2xx or 3xx responses: 40\n", "")
    run = parse_wrk(text)
    assert (run.socket_errors, run.non_2xx) == (0, 0)


def test_a_cell_takes_medians_sums_errors_and_cpu_per_thousand_requests() -> None:
    runs = [
        WrkRun(100.0, 1.0, 9.0, 1000, 1, 0, cpu_s=0.5, listen_overflows=4),
        WrkRun(300.0, 3.0, 5.0, 3000, 0, 2, cpu_s=1.5),
        WrkRun(200.0, 2.0, 7.0, 2000, 0, 0, cpu_s=1.0, listen_overflows=1),
    ]
    cell = summarize("tako", "https", 64, runs)
    assert cell == Cell("tako", "https", 64, 200.0, 2.0, 7.0, 3, 2, 6000, 500.0, 5)


@pytest.mark.parametrize(
    ("duration", "conns", "seconds"), [(10.0, 64, 10.0), (3.0, 1000, 3.0), (3.0, 5000, 10.0)]
)
def test_a_cell_runs_at_least_two_seconds_per_thousand_connections(
    duration: float, conns: int, seconds: float
) -> None:
    assert cell_duration(duration, conns) == seconds


NETSTAT = """TcpExt: SyncookiesSent ListenOverflows ListenDrops
TcpExt: 0 1072 1080
IpExt: InNoRoutes
IpExt: 0
"""


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [(NETSTAT, "ListenOverflows", 1072), (NETSTAT, "ListenDrops", 1080), (NETSTAT, "Nope", 0)],
)
def test_listen_overflows_are_read_from_the_tcpext_counters(
    text: str, name: str, value: int
) -> None:
    assert parse_netstat(text, name) == value
