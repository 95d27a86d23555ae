"""The in-engine metrics kernel (l2fast.engine._telemetry): bucket edges, quantiles and counters
against hand-computed values, and the pure-Python twin over random event streams."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2fast.engine._telemetry import (
    CONF_BUCKETS,
    LATENCY_BOUNDS_NS,
    MAX_CODES,
    MAX_MEMBERS,
    STAGE_NAMES,
    MetricsRecorder,
    latency_bucket,
    now_ns,
)
from l2fast.errors import InvalidInputError

from reference import telemetry as ref

CODES = ("ENTRY", "EXIT", "WARM_UP", "LOW_CONSENSUS", "DAILY_LOSS_LIMIT")
MEMBERS = ("ppo", "dqn", "a2c")
TOTAL = STAGE_NAMES.index("total")
OVERFLOW = len(LATENCY_BOUNDS_NS)


def recorder() -> MetricsRecorder:
    return MetricsRecorder(CODES, MEMBERS)


# ----------------------------------------------------------------- latency buckets


def test_latency_bounds_are_four_per_octave_from_256_ns_to_2_pow_30_ns():
    assert LATENCY_BOUNDS_NS == ref.LATENCY_BOUNDS_NS
    assert LATENCY_BOUNDS_NS[:9] == (256, 320, 384, 448, 512, 640, 768, 896, 1024)
    assert (len(LATENCY_BOUNDS_NS), LATENCY_BOUNDS_NS[-1]) == (89, 1 << 30)


def test_a_latency_on_a_bound_counts_in_that_bucket_and_one_above_in_the_next():
    previous = 0
    for k, bound in enumerate(LATENCY_BOUNDS_NS):
        assert latency_bucket(bound) == k
        assert latency_bucket(bound + 1) == k + 1
        assert latency_bucket(previous + 1) == k
        previous = bound
    assert [latency_bucket(ns) for ns in (-5, 0, 1, 255)] == [0, 0, 0, 0]
    assert [latency_bucket(ns) for ns in ((1 << 30) + 1, 1 << 62)] == [OVERFLOW, OVERFLOW]


def test_latency_bucket_matches_the_reference_on_every_octave_edge():
    edges = {b + d for b in LATENCY_BOUNDS_NS for d in (-1, 0, 1)}
    edges |= {(1 << s) + d for s in range(40) for d in (-1, 0, 1)}
    for ns in sorted(x for x in edges if x >= 0):
        assert latency_bucket(ns) == ref.latency_bucket(ns), ns


def test_latency_buckets_are_cumulative_with_inf_last():
    m = recorder()
    for ns in (100, 256, 257, 5_000, 2_000_000_000):
        m.latency(TOTAL, ns)
    h = m.as_dict()["latency"]["total"]
    bounds = [b for b, _ in h["buckets"]]
    assert bounds[:-1] == [b / 1e9 for b in LATENCY_BOUNDS_NS] and bounds[-1] == math.inf
    cumulative = dict(h["buckets"])
    assert (cumulative[256e-9], cumulative[320e-9], cumulative[5120e-9]) == (2, 3, 4)
    assert (cumulative[(1 << 30) / 1e9], cumulative[math.inf]) == (4, 5)
    assert (h["count"], h["sum_s"], h["max_s"]) == (5, 2_000_005_613 / 1e9, 2.0)


# ----------------------------------------------------------------- quantiles


def test_quantiles_are_upper_bounds_of_the_buckets_holding_their_rank():
    m = recorder()
    for ns, n in ((1_000, 50), (10_000, 45), (100_000, 5)):
        for _ in range(n):
            m.latency(TOTAL, ns)
    h = m.as_dict()["latency"]["total"]
    # 1,000 ns lies in (896, 1024], 10,000 in (8192, 10240], 100,000 in (98304, 114688].
    assert (h["p50_s"], h["p95_s"], h["p99_s"]) == (1024e-9, 10240e-9, 114688e-9)
    assert m.quantile(TOTAL, 0.5) == 1024e-9
    assert m.quantile(TOTAL, 0.51) == 10240e-9
    assert m.quantile(TOTAL, 0.0) == 1024e-9
    assert m.quantile(TOTAL, 1.0) == 114688e-9


def test_a_quantile_in_the_overflow_bucket_is_the_largest_observation():
    m = recorder()
    m.latency(TOTAL, 500)
    m.latency(TOTAL, 3_000_000_000)
    m.latency(TOTAL, 2_000_000_000)
    assert m.quantile(TOTAL, 0.99) == 3.0
    assert m.quantile(TOTAL, 0.3) == 512e-9


def test_an_empty_histogram_has_no_quantiles():
    m = recorder()
    assert math.isnan(m.quantile(TOTAL, 0.5))
    h = m.as_dict()["latency"]["technical"]
    assert (h["count"], h["sum_s"], h["p50_s"], h["p95_s"], h["p99_s"]) == (0, 0.0, None, None, None)
    assert all(n == 0 for _, n in h["buckets"])


def test_stages_keep_separate_histograms():
    m = recorder()
    for stage in range(len(STAGE_NAMES)):
        for _ in range(stage + 1):
            m.latency(stage, 1_000 * (stage + 1))
    latency = m.as_dict()["latency"]
    assert list(latency) == list(STAGE_NAMES)
    assert [latency[s]["count"] for s in STAGE_NAMES] == [1, 2, 3, 4, 5]


# ----------------------------------------------------------------- counters


def test_confidence_buckets_are_tenths_with_one_in_the_last():
    m = recorder()
    for c in (0.0, 0.0999, 0.1, 0.55, 0.7, 0.95, 1.0):
        m.vote(c, 0.5)
    conf = m.as_dict()["confidence"]
    assert conf["buckets"] == [2, 1, 0, 0, 0, 1, 0, 1, 0, 2]
    assert len(conf["buckets"]) == CONF_BUCKETS
    assert conf["sum"] == 0.0 + 0.0999 + 0.1 + 0.55 + 0.7 + 0.95 + 1.0
    assert conf["mean"] == conf["sum"] / 7


def test_means_are_none_before_the_first_vote():
    d = recorder().as_dict()
    assert (d["votes"], d["confidence"]["mean"], d["consensus"]["mean"]) == (0, None, None)
    assert d["confidence"]["buckets"] == [0] * CONF_BUCKETS


def test_consensus_mean_is_over_the_voting_bars():
    m = recorder()
    m.vote(0.8, 1.0)
    m.vote(0.6, 0.5)
    d = m.as_dict()
    assert (d["votes"], d["consensus"]["mean"], d["confidence"]["mean"]) == (2, 0.75, (0.8 + 0.6) / 2)


def test_signals_count_bars_sides_and_the_named_nonzero_codes():
    m = recorder()
    for side, code in ((1, 0), (-1, 1), (0, 2), (0, 2), (0, 4)):
        m.signal(side, code)
    d = m.as_dict()
    assert d["bars"] == 5
    assert d["signals"] == {"buy": 1, "sell": 1, "hold": 3}
    assert d["codes"] == {"ENTRY": 1, "EXIT": 1, "WARM_UP": 2, "DAILY_LOSS_LIMIT": 1}


def test_member_agreement_counts_votes_matching_a_nonzero_direction():
    m = recorder()
    m.member(0, False, 1, 1)      # agrees
    m.member(0, False, -1, 1)     # disagrees
    m.member(0, False, 0, 0)      # no direction: never an agreement
    m.member(1, True, 1, 1)       # failed: not a vote
    m.member(2, False, -1, -1)
    members = m.as_dict()["members"]
    assert members["ppo"] == {"votes": 3, "agree": 1, "agreement": 1 / 3, "failures": 0}
    assert members["dqn"] == {"votes": 0, "agree": 0, "agreement": None, "failures": 1}
    assert members["a2c"] == {"votes": 1, "agree": 1, "agreement": 1.0, "failures": 0}


def test_reset_returns_to_the_fresh_state():
    m = recorder()
    m.latency(0, 1_000)
    m.signal(1, 0)
    m.vote(0.9, 0.9)
    m.member(0, True, 0, 1)
    m.reset()
    assert m.as_dict() == recorder().as_dict()


def test_now_ns_is_the_monotonic_clock():
    before = time.monotonic_ns()
    t = now_ns()
    after = time.monotonic_ns()
    assert before <= t <= after


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(("call", "field"), [
    (lambda m: m.latency(5, 10), "stage=5"),
    (lambda m: m.latency(0, -1), "ns=-1"),
    (lambda m: m.latency(0, 1.5), "ns=1.5"),
    (lambda m: m.signal(2, 0), "side=2"),
    (lambda m: m.signal(1, len(CODES)), "code=5"),
    (lambda m: m.signal(True, 0), "side=True"),
    (lambda m: m.vote(1.2, 0.5), "confidence=1.2"),
    (lambda m: m.vote(0.5, math.nan), "consensus=nan"),
    (lambda m: m.member(3, False, 0, 0), "k=3"),
    (lambda m: m.member(0, False, 0, -2), "direction=-2"),
    (lambda m: m.quantile(0, 1.5), "q=1.5"),
])
def test_recorder_rejects_bad_arguments_naming_them_and_counts_nothing(call, field):
    m = recorder()
    with pytest.raises(InvalidInputError, match=field):
        call(m)
    assert m.as_dict() == recorder().as_dict()


@pytest.mark.parametrize(("codes", "members", "message"), [
    (("A", "A"), (), "distinct"),
    (("A", ""), (), "non-empty string"),
    ((), ("m",) * 2, "distinct"),
    (tuple(f"C{i}" for i in range(MAX_CODES + 1)), (), f"at most {MAX_CODES}"),
    ((), tuple(f"m{i}" for i in range(MAX_MEMBERS + 1)), f"at most {MAX_MEMBERS}"),
    (("A", 3), (), "3 is not"),
])
def test_recorder_rejects_bad_name_lists(codes, members, message):
    with pytest.raises(InvalidInputError, match=message):
        MetricsRecorder(codes, members)


# ----------------------------------------------------------------- the twin

latencies = st.one_of(
    st.integers(0, 3_000_000_000),
    st.sampled_from(LATENCY_BOUNDS_NS).flatmap(lambda b: st.sampled_from((b - 1, b, b + 1))),
    st.integers(0, 2_000),
)
unit = st.one_of(st.floats(0.0, 1.0), st.sampled_from((0.0, 0.1, 0.3, 0.7, 0.9, 1.0)))
sides = st.sampled_from((-1, 0, 1))
events = st.one_of(
    st.tuples(st.just("latency"), st.integers(0, len(STAGE_NAMES) - 1), latencies),
    st.tuples(st.just("signal"), sides, st.integers(0, len(CODES) - 1)),
    st.tuples(st.just("vote"), unit, unit),
    st.tuples(st.just("member"), st.integers(0, len(MEMBERS) - 1), st.booleans(), sides, sides),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=300), st.floats(0.0, 1.0))
def test_kernel_matches_the_reference_on_random_event_streams(stream, q):
    ours, twin = recorder(), ref.MetricsRecorderRef(CODES, MEMBERS)
    for name, *args in stream:
        getattr(ours, name)(*args)
        getattr(twin, name)(*args)
    assert ours.as_dict() == twin.as_dict()
    for stage in range(len(STAGE_NAMES)):
        a, b = ours.quantile(stage, q), twin.quantile(stage, q)
        assert a == b or (math.isnan(a) and math.isnan(b))
