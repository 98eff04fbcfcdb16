"""Metrics: the edge's counting (Meter, merging worker snapshots) and the Prometheus text
(:func:`tako_server.metrics.render`) read back with Prometheus's own parser."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tako_server.edge.meter import Meter, check_snapshot, merge_snapshots
from tako_server.metrics import AppReading, Readings, render


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_meter_counts_bounded_labels() -> None:
    meter = Meter()
    meter.record("a/prod", 200, b"GET", 0.004)
    meter.record("a/prod", 204, b"GET", 0.02)
    meter.record("a/prod", 503, b"BREW", 2.0)
    meter.record(None, 404, b"GET", 0.001)
    meter.record("a/prod", 99, b"GET", 0.1)  # a status outside 1xx-5xx counts as 5xx
    requests = dict(((a, c, m), n) for a, c, m, n in meter.snapshot()["requests"])
    assert requests == {
        ("a/prod", "2xx", "GET"): 2,
        ("a/prod", "5xx", "OTHER"): 1,
        ("", "4xx", "GET"): 1,
        ("a/prod", "5xx", "GET"): 1,
    }
    counts, total, count = meter.snapshot()["durations"]["a/prod"]
    assert count == 4 and sum(counts) == 4 and total == pytest.approx(2.124)


def test_worker_snapshots_merge_and_survive_json() -> None:
    one, two = Meter(), Meter()
    one.record("a/prod", 200, b"GET", 0.01)
    two.record("a/prod", 200, b"GET", 0.3)
    two.count("upstream_connect_errors", "a/prod")
    wire = [check_snapshot(json.loads(json.dumps(m.snapshot()))) for m in (one, two)]
    merged = merge_snapshots(wire)
    assert merged["requests"] == [["a/prod", "2xx", "GET", 2]]
    assert merged["durations"]["a/prod"][2] == 2
    assert merged["counters"] == [["upstream_connect_errors", "a/prod", 1]]


@pytest.mark.parametrize(
    "bad",
    [
        {"requests": "x", "counters": [], "durations": {}, "cold_waits": {}},
        {"requests": [["a", "2xx", "GET", 1.5]], "counters": [], "durations": {}, "cold_waits": {}},
        {"requests": [], "counters": [["n", 1]], "durations": {}, "cold_waits": {}},
        {"requests": [], "counters": [], "durations": {"a": [[1, 2], 0, 1]}, "cold_waits": {}},
    ],
)
def test_malformed_snapshots_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        check_snapshot(bad)


def test_render_parses_as_prometheus_text() -> None:
    meter = Meter()
    for seconds in (0.001, 0.02, 0.02, 3.0):
        meter.record("shop/prod", 200, b"GET", seconds)
    meter.record("shop/prod", 502, b"POST", 0.5)
    meter.cold_start("shop/prod", 1.2)
    meter.count("upstream_connect_errors", "shop/prod", 2)
    meter.count("limited", None)
    readings = Readings(
        edge=meter.snapshot(),
        apps=[AppReading('we"ird/prod', [("healthy", 3, 1), ("draining", 1, 0)], 4, 2)],
        certs=[("shop.example.com", 1_900_000_000.0)],
        events=Counter({("deploy", "shop/prod", "ok"): 2, ("rollback", "shop/prod", "error"): 1}),
        worker_restarts=1,
    )
    got = samples(render(readings))
    shop = (("app", "shop"), ("env", "prod"))
    assert (
        got[("tako_http_requests_total", (*shop, ("method", "GET"), ("status_class", "2xx")))] == 4
    )
    assert got[("tako_http_request_duration_seconds_bucket", (*shop, ("le", "0.025")))] == 3
    assert got[("tako_http_request_duration_seconds_bucket", (*shop, ("le", "+Inf")))] == 5
    assert got[("tako_http_request_duration_seconds_count", shop)] == 5
    assert got[("tako_cold_start_wait_seconds_count", shop)] == 1
    assert got[("tako_upstream_connect_errors_total", shop)] == 2
    assert got[("tako_limited_total", ())] == 1
    weird = (("app", 'we"ird'), ("env", "prod"))
    assert got[("tako_http_requests_in_flight", weird)] == 4
    assert got[("tako_instances", (*weird, ("state", "healthy")))] == 1
    assert got[("tako_instances", (*weird, ("state", "failed")))] == 0
    assert got[("tako_instance_restarts_total", weird)] == 1
    assert got[("tako_health_check_failures_total", weird)] == 4
    assert got[("tako_cold_starts_total", weird)] == 2
    assert got[("tako_deploys_total", (*shop, ("result", "ok")))] == 2
    assert got[("tako_rollbacks_total", (*shop, ("result", "error")))] == 1
    host = (("host", "shop.example.com"),)
    assert got[("tako_certificate_expiry_timestamp_seconds", host)] == 1.9e9
    assert got[("tako_edge_worker_restarts_total", ())] == 1


def test_an_empty_server_renders_valid_text() -> None:
    text = render(Readings())
    assert samples(text)[("tako_edge_worker_restarts_total", ())] == 0
    assert text.endswith("\n")


def test_the_docs_and_the_dashboard_name_only_exported_metrics() -> None:
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parents[3] / "docs"
    meter = Meter()
    meter.record("a/prod", 200, b"GET", 0.1)
    meter.cold_start("a/prod", 1.0)
    meter.count("upstream_connect_errors", "a/prod")
    meter.count("limited", None)
    meter.count("proxy_protocol_errors", None)
    text = render(
        Readings(
            edge=meter.snapshot(),
            apps=[AppReading("a/prod", [("healthy", 0, 0)])],
            certs=[("a.example.com", 1.0)],
            events=Counter({("deploy", "a/prod", "ok"): 1, ("rollback", "a/prod", "ok"): 1}),
        )
    )
    exported = {name for name, _ in samples(text)}
    exported |= {n.rsplit("_", 1)[0] for n in exported if n.endswith(("_bucket", "_sum"))}
    for doc in ("metrics.md", "grafana-dashboard.json"):
        named = set(re.findall(r"\btako_[a-z_]+[a-z]", (docs / doc).read_text()))
        assert named and named <= exported, f"{doc}: {sorted(named - exported)}"
