"""Prometheus exposition of the engine's metrics (checked with prometheus_client's parser as
the independent reference), the /metrics HTTP server over real connections, the JSON
hand-off and the merge of workers."""

from __future__ import annotations

import asyncio
import http.client
import math
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from l2fast.engine._telemetry import STAGE_NAMES, MetricsRecorder
from l2fast.errors import ConfigError
from l2fast.ops.monitoring import (
    CONTENT_TYPE,
    EngineCollector,
    MetricsServer,
    bucket_quantile,
    merge_metrics,
    metrics_from_json,
    metrics_to_json,
    render_prometheus,
)

CODES = ("ENTRY", "EXIT", "LOW_CONSENSUS", "DAILY_LOSS_LIMIT")
MEMBERS = ("ppo", "dqn")
ADAPTER = {"decisions": 2, "fills": 5, "bars": 900, "signals": 880, "stale": 1, "unauthenticated": 4, "malformed": 3,
           "refused": 0, "rejected_by_topic": {"market.bars": 7}, "last_rejection": "bad bar"}


def engine_metrics(*, denials: int = 2, equity: float = 10_500.0) -> dict[str, Any]:
    """A recorder's dict with the keys the engine adds, as TacticalSignalGenerator.metrics() gives it."""
    m = MetricsRecorder(CODES, MEMBERS)
    for side, code in ((1, 0), (1, 0), (-1, 1), (0, 2), (0, 3), (0, 3)):
        m.signal(side, code)
    for c, k in ((0.75, 0.9), (0.35, 0.5), (1.0, 1.0)):
        m.vote(c, k)
    m.member(0, False, 1, 1)
    m.member(0, False, -1, 1)
    m.member(1, True, 0, 1)
    for stage in range(len(STAGE_NAMES)):
        for ns in (800, 12_000, 40_000):
            m.latency(stage, ns * (stage + 1))
    d = m.as_dict()
    d.update(positions={"active": 2, "max": 3}, portfolio_heat=0.0325, equity=equity, gross_exposure=2_100.0,
             halted=False, entries_today=4, denials={"DAILY_LOSS_LIMIT": denials})
    return d


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Sample values of family ``name`` by their labels (worker left out)."""
    out = {}
    for family in families(text).values():
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted((k, v) for k, v in s.labels.items() if k != "worker"))] = s.value
    return out


# ----------------------------------------------------------------- exposition


def test_exposition_is_valid_for_prometheus_client_with_every_family_typed():
    text = render_prometheus(engine_metrics(), worker="w1", adapter=ADAPTER)
    found = {name: f.type for name, f in families(text).items()}
    assert found == {
        "l2fast_bars": "counter", "l2fast_signals": "counter", "l2fast_reasons": "counter",
        "l2fast_denials": "counter", "l2fast_votes": "counter", "l2fast_member_votes": "counter",
        "l2fast_member_agree": "counter", "l2fast_member_failures": "counter",
        "l2fast_confidence_mean": "gauge", "l2fast_consensus_mean": "gauge",
        "l2fast_confidence": "histogram", "l2fast_stage_latency_seconds": "histogram",
        "l2fast_positions_active": "gauge", "l2fast_positions_max": "gauge", "l2fast_equity": "gauge",
        "l2fast_gross_exposure": "gauge", "l2fast_portfolio_heat": "gauge", "l2fast_entries_today": "gauge",
        "l2fast_halted": "gauge", "l2fast_bus_messages": "counter",
    }
    assert text.endswith("\n")
    assert all(s.labels["worker"] == "w1" for f in families(text).values() for s in f.samples)


def test_counters_carry_the_metrics_numbers_by_label():
    text = render_prometheus(engine_metrics(), worker="w1", adapter=ADAPTER)
    assert 'l2fast_bars_total{worker="w1"} 6.0\n' in text
    assert samples(text, "l2fast_signals_total") == {(("side", "buy"),): 2, (("side", "sell"),): 1,
                                                     (("side", "hold"),): 3}
    assert samples(text, "l2fast_reasons_total") == {(("code", "ENTRY"),): 2, (("code", "EXIT"),): 1,
                                                     (("code", "LOW_CONSENSUS"),): 1,
                                                     (("code", "DAILY_LOSS_LIMIT"),): 2}
    assert samples(text, "l2fast_denials_total") == {(("code", "DAILY_LOSS_LIMIT"),): 2}
    assert samples(text, "l2fast_member_votes_total") == {(("member", "ppo"),): 2, (("member", "dqn"),): 0}
    assert samples(text, "l2fast_member_agree_total") == {(("member", "ppo"),): 1, (("member", "dqn"),): 0}
    assert samples(text, "l2fast_member_failures_total") == {(("member", "ppo"),): 0, (("member", "dqn"),): 1}
    assert samples(text, "l2fast_votes_total") == {(): 3}


def test_gauges_carry_the_engine_state():
    text = render_prometheus(engine_metrics(), worker="w1")
    values = {name: samples(text, name)[()] for name in (
        "l2fast_positions_active", "l2fast_positions_max", "l2fast_portfolio_heat", "l2fast_equity",
        "l2fast_gross_exposure", "l2fast_halted", "l2fast_entries_today", "l2fast_confidence_mean",
        "l2fast_consensus_mean")}
    assert values == {"l2fast_positions_active": 2, "l2fast_positions_max": 3, "l2fast_portfolio_heat": 0.0325,
                      "l2fast_equity": 10_500.0, "l2fast_gross_exposure": 2_100.0, "l2fast_halted": 0,
                      "l2fast_entries_today": 4, "l2fast_confidence_mean": (0.75 + 0.35 + 1.0) / 3,
                      "l2fast_consensus_mean": (0.9 + 0.5 + 1.0) / 3}
    halted = render_prometheus({**engine_metrics(), "halted": True}, worker="w1")
    assert 'l2fast_halted{worker="w1"} 1.0\n' in halted


def test_confidence_histogram_is_cumulative_over_tenths():
    text = render_prometheus(engine_metrics(), worker="w1")
    buckets = samples(text, "l2fast_confidence_bucket")
    # 0.35 in [0.3, 0.4), 0.75 in [0.7, 0.8), 1.0 in the last bucket.
    expected = {"0.1": 0, "0.2": 0, "0.3": 0, "0.4": 1, "0.5": 1, "0.6": 1, "0.7": 1, "0.8": 2, "0.9": 2,
                "1.0": 3, "+Inf": 3}
    assert buckets == {(("le", le),): n for le, n in expected.items()}
    assert samples(text, "l2fast_confidence_count") == {(): 3}
    assert samples(text, "l2fast_confidence_sum") == {(): 0.75 + 0.35 + 1.0}


def test_stage_latency_histograms_end_with_inf_equal_to_count_with_the_sum_in_seconds():
    d = engine_metrics()
    text = render_prometheus(d, worker="w1")
    buckets = samples(text, "l2fast_stage_latency_seconds_bucket")
    for k, stage in enumerate(STAGE_NAMES):
        assert buckets[(("le", "+Inf"), ("stage", stage))] == 3
        assert samples(text, "l2fast_stage_latency_seconds_count")[(("stage", stage),)] == 3
        assert samples(text, "l2fast_stage_latency_seconds_sum")[(("stage", stage),)] == pytest.approx(
            52_800e-9 * (k + 1))
        mine = [(float(dict(labels)["le"]), n) for labels, n in buckets.items() if dict(labels)["stage"] == stage]
        assert mine == [tuple(b) for b in d["latency"][stage]["buckets"]]
        counts = [n for _, n in mine]
        assert counts == sorted(counts)


def test_label_values_and_help_are_escaped_per_the_format():
    tricky = 'w"1\\x\ny'
    d = engine_metrics()
    d["members"] = {'m"\\': d["members"]["ppo"]}
    text = render_prometheus(d, worker=tricky)
    assert 'l2fast_bars_total{worker="w\\"1\\\\x\\ny"} 6.0\n' in text
    parsed = families(text)
    assert {s.labels["worker"] for s in parsed["l2fast_bars"].samples} == {tricky}
    assert {s.labels["member"] for s in parsed["l2fast_member_votes"].samples} == {'m"\\'}


def test_means_before_the_first_vote_and_absent_engine_keys_give_no_sample():
    bare = MetricsRecorder(CODES, MEMBERS).as_dict()
    text = render_prometheus(bare, worker="w1")
    parsed = families(text)
    assert parsed["l2fast_confidence_mean"].samples == []
    assert "l2fast_equity" not in parsed and "l2fast_positions_active" not in parsed
    assert "l2fast_bus_messages" not in parsed
    assert samples(text, "l2fast_confidence_bucket")[(("le", "+Inf"),)] == 0


def test_adapter_counters_are_bus_messages_by_kind():
    text = render_prometheus(engine_metrics(), worker="w1", adapter=ADAPTER)
    assert samples(text, "l2fast_bus_messages_total") == {
        (("kind", k),): ADAPTER[k]
        for k in ("decisions", "fills", "bars", "signals", "stale", "unauthenticated", "malformed", "refused")}


# ----------------------------------------------------------------- JSON and merging


def test_the_workers_redis_faults_are_bus_faults_by_fault():
    faults = {"redis_state_lost": 2, "far_ahead_ids": 1, "lease_retaken": 3}
    text = render_prometheus(engine_metrics(), worker="w1", adapter={**ADAPTER, **faults})
    assert samples(text, "l2fast_bus_faults_total") == {(("fault", k),): v for k, v in faults.items()}
    # An adapter without a Redis (in-process bus) has no such family.
    assert "l2fast_bus_faults" not in families(render_prometheus(engine_metrics(), worker="w1", adapter=ADAPTER))


def test_json_form_is_strict_and_round_trips_the_inf_bound():
    d = engine_metrics()
    text = metrics_to_json(d)
    assert "Infinity" not in text and '"+Inf"' in text
    assert metrics_from_json(text) == d
    with pytest.raises(ValueError, match="object"):
        metrics_from_json("[1, 2]")


def test_bucket_quantile_follows_the_kernel_rule():
    d = engine_metrics()
    for h in d["latency"].values():
        assert [bucket_quantile(h["buckets"], q, h["max_s"]) for q in (0.5, 0.95, 0.99)] == [
            h["p50_s"], h["p95_s"], h["p99_s"]]
    assert bucket_quantile([[1e-6, 0], [math.inf, 0]], 0.5, 0.0) is None


def test_merging_one_worker_gives_its_own_metrics():
    d = engine_metrics()
    merged = merge_metrics([d])
    assert merged.pop("portfolio_heat") == pytest.approx(d["portfolio_heat"])
    assert merged == {k: v for k, v in d.items() if k != "portfolio_heat"}


def test_merging_workers_sums_counters_and_recomputes_means_and_quantiles():
    a, b = engine_metrics(denials=2, equity=10_000.0), engine_metrics(denials=5, equity=30_000.0)
    b["portfolio_heat"] = 0.01
    b["halted"] = True
    merged = merge_metrics([a, b])
    assert (merged["bars"], merged["votes"], merged["signals"]["buy"]) == (12, 6, 4)
    assert merged["denials"] == {"DAILY_LOSS_LIMIT": 7}
    assert merged["confidence"]["mean"] == pytest.approx(a["confidence"]["mean"])
    assert merged["members"]["ppo"] == {"votes": 4, "agree": 2, "agreement": 0.5, "failures": 0}
    assert merged["positions"] == {"active": 4, "max": 6}
    assert merged["portfolio_heat"] == pytest.approx((0.0325 * 10_000 + 0.01 * 30_000) / 40_000)
    assert merged["halted"] is True
    total = merged["latency"]["total"]
    assert total["count"] == 6 and total["p95_s"] == a["latency"]["total"]["p95_s"]
    with pytest.raises(ValueError, match="no worker"):
        merge_metrics([])


# ----------------------------------------------------------------- HTTP server


def _http(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def serve(collector: Any, check: Callable[[int], None]) -> None:
    """Run ``check(port)`` in a thread against a started server (real TCP connections)."""
    async def main() -> None:
        async with MetricsServer(collector) as server:
            assert server.port != 0
            await asyncio.to_thread(check, server.port)

    asyncio.run(asyncio.wait_for(main(), 30))


def collector_of(*, fail_first: bool = False) -> EngineCollector:
    """The test metrics' collector, recording the thread of each read; the first read
    raises if ``fail_first``."""
    reads: list[threading.Thread] = []

    def metrics() -> dict[str, Any]:
        reads.append(threading.current_thread())
        if fail_first and len(reads) == 1:
            raise RuntimeError("boom")
        return engine_metrics()

    collector = EngineCollector(metrics, worker="w1", adapter=lambda: ADAPTER)
    collector.reads = reads  # type: ignore[attr-defined]
    return collector


def status_of(reply: bytes) -> int:
    found = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    assert found, reply[:80]
    return int(found.group(1))


def test_get_metrics_serves_the_exposition_with_its_content_type_reading_on_the_loop_thread():
    text = render_prometheus(engine_metrics(), worker="w1", adapter=ADAPTER)
    collector = collector_of()

    def check(port: int) -> None:
        status, headers, body = _http(port, "GET", "/metrics")
        assert status == 200
        assert headers["content-type"] == CONTENT_TYPE
        assert body.decode("utf-8") == text
        assert int(headers["content-length"]) == len(body)
        families(body.decode("utf-8"))
        # prometheus_client's family selection.
        status, _, body = _http(port, "GET", "/metrics?name[]=l2fast_votes_total")
        assert status == 200
        assert set(families(body.decode("utf-8"))) == {"l2fast_votes"}

    serve(collector, check)
    assert collector.reads == [threading.main_thread()] * 2  # type: ignore[attr-defined]


def test_other_paths_are_404_other_methods_405_and_head_has_no_body():
    text = render_prometheus(engine_metrics(), worker="w1", adapter=ADAPTER)

    def check(port: int) -> None:
        assert _http(port, "GET", "/")[0] == 404
        assert _http(port, "GET", "/metrics/x")[0] == 404
        assert _http(port, "GET", "/favicon.ico")[0] == 404
        for method in ("POST", "OPTIONS"):
            status, headers, _ = _http(port, method, "/metrics")
            assert (status, headers["allow"]) == (405, "GET, HEAD")
        status, headers, body = _http(port, "HEAD", "/metrics")
        assert (status, body, headers["content-length"]) == (200, b"", str(len(text)))

    serve(collector_of(), check)


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"garbage\r\n\r\n", 400),
    (b"GET /metrics\r\n\r\n", 400),
    (b"GET /metrics SPDY/3\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /" + b"m" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
])
def test_a_malformed_request_is_refused_and_the_server_keeps_serving(request_bytes, status):
    def check(port: int) -> None:
        assert status_of(_raw(port, request_bytes)) == status
        assert _http(port, "GET", "/metrics")[0] == 200

    serve(collector_of(), check)


def test_a_failing_collector_is_500_and_the_server_keeps_serving():
    def check(port: int) -> None:
        assert _http(port, "GET", "/metrics")[0] == 500
        assert _http(port, "GET", "/metrics")[0] == 200

    serve(collector_of(fail_first=True), check)


def test_a_client_that_sends_nothing_does_not_stop_the_others():
    def check(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            assert _http(port, "GET", "/metrics")[0] == 200

    serve(collector_of(), check)


def test_ipv6_loopback_is_served():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")

    async def main() -> None:
        try:
            server = MetricsServer(collector_of(), host="::1")
            await server.start()
        except OSError as exc:
            pytest.skip(f"cannot bind ::1: {exc}")
        try:
            def get() -> int:
                conn = http.client.HTTPConnection("::1", server.port, timeout=10)
                try:
                    conn.request("GET", "/metrics")
                    return conn.getresponse().status
                finally:
                    conn.close()

            assert await asyncio.to_thread(get) == 200
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_a_non_loopback_host_is_refused_naming_it(host):
    with pytest.raises(ConfigError, match=f"host='{host}'"):
        MetricsServer(collector_of(), host=host)


def test_loopback_hosts_and_allow_remote_are_accepted():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert MetricsServer(collector_of(), host=host).host == host
    assert MetricsServer(collector_of(), host="0.0.0.0", allow_remote=True).host == "0.0.0.0"
    with pytest.raises(ConfigError, match="port=70000"):
        MetricsServer(collector_of(), port=70_000)
