"""Candlestick patterns: exact TA-Lib equality on real data, streaming, revisions, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from l2fast.errors import InvalidInputError
from l2fast.technical.indicators import CANDLESTICK_PATTERNS, CandlestickDetector, candlestick

from reference.candles import CandlesRef

talib = pytest.importorskip("talib")

# TA-Lib's lookback per pattern (default settings): its batch output is 0 there.
LOOKBACK = {
    "CDLDOJI": 10,
    "CDLDOJISTAR": 11,
    "CDLDRAGONFLYDOJI": 10,
    "CDLGRAVESTONEDOJI": 10,
    "CDLLONGLEGGEDDOJI": 10,
    "CDLHAMMER": 11,
    "CDLHANGINGMAN": 11,
    "CDLINVERTEDHAMMER": 11,
    "CDLSHOOTINGSTAR": 11,
    "CDLENGULFING": 2,
    "CDLHARAMI": 11,
    "CDLHARAMICROSS": 11,
    "CDLPIERCING": 11,
    "CDLDARKCLOUDCOVER": 11,
    "CDLMORNINGSTAR": 12,
    "CDLEVENINGSTAR": 12,
    "CDL3WHITESOLDIERS": 12,
    "CDL3BLACKCROWS": 13,
    "CDLMARUBOZU": 10,
    "CDLSPINNINGTOP": 10,
}


def ohlc(bars: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return bars["open"], bars["high"], bars["low"], bars["close"]


def talib_all(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    return {name: getattr(talib, name)(o, h, lo, c) for name in CANDLESTICK_PATTERNS}


@pytest.fixture(scope="module")
def btc_talib(btc_1m) -> dict[str, np.ndarray]:
    return talib_all(*ohlc(btc_1m))


def drifting_tie_bars(n: int = 30_000, seed: int = 2) -> tuple[np.ndarray, ...]:
    """Every third real body equals the mean of the 10 before it, amid prices spread over
    0.5..2000: sums of bodies of such different binary granularity round, so each running
    total drifts in its own way and these exact ties are decided by that rounding."""
    rng = np.random.default_rng(seed)
    o, c = np.empty(n), np.empty(n)
    for i in range(n):
        if i >= 12 and i % 3 == 0:
            mean = sum(abs(c[j] - o[j]) for j in range(i - 10, i)) / 10
            o[i] = mean
            c[i] = 2 * mean if rng.random() < 0.5 else mean / 2
        else:
            o[i] = np.exp(rng.uniform(np.log(0.5), np.log(2000)))
            c[i] = o[i] * (1 + rng.normal(0, 0.01))
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.01, n))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.01, n))
    return o, h, lo, c


def long_body_decisions(body: np.ndarray, first: int) -> np.ndarray:
    """TA-Lib's "body longer than the mean of the 10 before" with its total started at ``first``."""
    total = sum(body[first : first + 10])
    out = np.zeros(body.shape[0], dtype=bool)
    for i in range(first + 10, body.shape[0]):
        out[i] = body[i] > total / 10
        total += body[i] - body[i - 10]
    return out


def test_pattern_list_and_lookbacks_are_talibs():
    assert CANDLESTICK_PATTERNS == tuple(LOOKBACK)
    abstract = pytest.importorskip("talib.abstract")
    assert {name: abstract.Function(name).lookback for name in CANDLESTICK_PATTERNS} == LOOKBACK


@pytest.mark.parametrize("name", CANDLESTICK_PATTERNS)
def test_candlestick_matches_talib_exactly_on_full_btc_1m(name, btc_1m, btc_talib):
    ours = candlestick(name, *ohlc(btc_1m))
    assert ours.dtype == np.int32
    np.testing.assert_array_equal(ours, btc_talib[name])


def test_every_pattern_fires_on_btc_so_equality_is_meaningful(btc_talib):
    # Fewest on the full series: CDLPIERCING and CDLDARKCLOUDCOVER, 24 each.
    counts = {name: int(np.count_nonzero(v)) for name, v in btc_talib.items()}
    assert min(counts.values()) >= 20, counts


def test_detector_update_many_matches_talib_exactly_on_full_btc_1m(btc_1m, btc_talib):
    out = CandlestickDetector().update_many(*ohlc(btc_1m))
    assert out.shape == (btc_1m["close"].shape[0], len(CANDLESTICK_PATTERNS))
    assert out.dtype == np.int32
    for j, name in enumerate(CANDLESTICK_PATTERNS):
        np.testing.assert_array_equal(out[:, j], btc_talib[name], err_msg=name)


def test_batch_and_detector_match_talib_exactly_on_full_eth_1m(eth_1m):
    bars = ohlc(eth_1m)
    expected = talib_all(*bars)
    out = CandlestickDetector().update_many(*bars)
    for j, name in enumerate(CANDLESTICK_PATTERNS):
        np.testing.assert_array_equal(candlestick(name, *bars), expected[name], err_msg=name)
        np.testing.assert_array_equal(out[:, j], expected[name], err_msg=name)


def test_update_bar_by_bar_matches_talib_on_btc_head(btc_1m_head):
    bars = ohlc(btc_1m_head)
    expected = talib_all(*bars)
    det = CandlestickDetector()
    rows = np.array([det.update(float(o), float(h), float(lo), float(c)) for o, h, lo, c in zip(*bars)])
    for j, name in enumerate(CANDLESTICK_PATTERNS):
        np.testing.assert_array_equal(rows[:, j], expected[name], err_msg=name)


def test_ties_decided_by_rounded_running_totals_match_talib():
    bars = drifting_tie_bars()
    body = np.abs(bars[3] - bars[0])
    # The series is sensitive: the same total started one bar later decides some ties
    # differently, so totals shared between patterns or started elsewhere would show.
    assert (long_body_decisions(body, 0)[11:] != long_body_decisions(body, 1)[11:]).any()
    expected = talib_all(*bars)
    out = CandlestickDetector().update_many(*bars)
    for j, name in enumerate(CANDLESTICK_PATTERNS):
        np.testing.assert_array_equal(candlestick(name, *bars), expected[name], err_msg=name)
        np.testing.assert_array_equal(out[:, j], expected[name], err_msg=name)


def test_streaming_matches_pure_python_reference(btc_1m_head):
    det, ref = CandlestickDetector(), CandlesRef()
    cols = {name: CANDLESTICK_PATTERNS.index(name) for name in CandlesRef.LOOKBACK}
    fired = dict.fromkeys(cols, 0)
    for o, h, lo, c in zip(*ohlc(btc_1m_head)):
        ours = det.update(float(o), float(h), float(lo), float(c))
        theirs = ref.update(float(o), float(h), float(lo), float(c))
        for name, j in cols.items():
            assert ours[j] == theirs[name], name
            fired[name] += theirs[name] != 0
    assert min(fired.values()) > 0, fired


def test_output_is_zero_during_each_lookback(btc_1m_head):
    out = CandlestickDetector().update_many(*(x[:20] for x in ohlc(btc_1m_head)))
    for j, name in enumerate(CANDLESTICK_PATTERNS):
        assert not out[: LOOKBACK[name], j].any(), name


def test_streaming_and_batch_leave_identical_state(btc_1m_head):
    o, h, lo, c = ohlc(btc_1m_head)
    streamed, batched = CandlestickDetector(), CandlestickDetector()
    for i in range(2000):
        streamed.update(float(o[i]), float(h[i]), float(lo[i]), float(c[i]))
    batched.update_many(o[:2000], h[:2000], lo[:2000], c[:2000])
    np.testing.assert_array_equal(
        streamed.update(o[2000], h[2000], lo[2000], c[2000]),
        batched.update(o[2000], h[2000], lo[2000], c[2000]),
    )
    np.testing.assert_array_equal(
        streamed.update_last(o[2000], h[2000] + 5, lo[2000] - 5, o[2000]),
        batched.update_last(o[2000], h[2000] + 5, lo[2000] - 5, o[2000]),
    )


def test_update_last_equals_having_updated_with_the_revised_bar(btc_1m_head):
    o, h, lo, c = ohlc(btc_1m_head)
    revised, direct = CandlestickDetector(), CandlestickDetector()
    for i in range(1500):
        bar = (float(o[i]), float(h[i]), float(lo[i]), float(c[i]))
        revised.update(*bar)
        revised.update_last(bar[0], bar[1] * 1.01, bar[2] * 0.99, bar[1])
        np.testing.assert_array_equal(revised.update_last(*bar), direct.update(*bar))
    np.testing.assert_array_equal(revised.update_many(o[1500:], h[1500:], lo[1500:], c[1500:]),
                                  direct.update_many(o[1500:], h[1500:], lo[1500:], c[1500:]))


def test_update_many_then_update_last_revises_the_last_array_bar(btc_1m_head):
    o, h, lo, c = (x[:300] for x in ohlc(btc_1m_head))
    det = CandlestickDetector()
    det.update_many(o, h, lo, c)
    revised = det.update_last(o[-1], h[-1], lo[-1], o[-1])
    expected = CandlestickDetector().update_many(o, h, lo, np.append(c[:-1], o[-1]))[-1]
    np.testing.assert_array_equal(revised, expected)


def test_update_returns_a_fresh_int32_array_per_bar(btc_1m_head):
    det = CandlestickDetector()
    o, h, lo, c = ohlc(btc_1m_head)
    first = det.update(o[0], h[0], lo[0], c[0])
    kept = first.copy()
    det.update(o[1], h[1], lo[1], c[1])
    assert first.dtype == np.int32 and first.shape == (len(CANDLESTICK_PATTERNS),)
    np.testing.assert_array_equal(first, kept)


def test_ready_after_the_longest_lookback(btc_1m_head):
    det = CandlestickDetector()
    o, h, lo, c = ohlc(btc_1m_head)
    for i in range(14):
        assert not det.ready
        det.update(o[i], h[i], lo[i], c[i])
    assert det.ready


def test_reset_returns_to_fresh_state(btc_1m_head):
    bars = tuple(x[:500] for x in ohlc(btc_1m_head))
    det = CandlestickDetector()
    first = det.update_many(*bars)
    assert det.ready
    det.reset()
    assert not det.ready
    np.testing.assert_array_equal(det.update_many(*bars), first)


def test_flat_series_equals_talib():
    flat = np.full(60, 42.0)
    bars = (flat, flat, flat, flat)
    expected = talib_all(*bars)
    out = CandlestickDetector().update_many(*bars)
    for j, name in enumerate(CANDLESTICK_PATTERNS):
        np.testing.assert_array_equal(candlestick(name, *bars), expected[name], err_msg=name)
        np.testing.assert_array_equal(out[:, j], expected[name], err_msg=name)
    assert out[:, CANDLESTICK_PATTERNS.index("CDLDOJI")][10:].all()


def test_empty_input_gives_empty_output():
    empty = np.array([])
    assert candlestick("CDLDOJI", empty, empty, empty, empty).shape == (0,)
    assert CandlestickDetector().update_many(empty, empty, empty, empty).shape == (0, len(CANDLESTICK_PATTERNS))


def test_non_finite_input_is_rejected_and_state_kept(btc_1m_head):
    bars = tuple(x[:100] for x in ohlc(btc_1m_head))
    det = CandlestickDetector()
    det.update_many(*(x[:99] for x in bars))
    with pytest.raises(InvalidInputError, match="close=nan"):
        det.update(1.0, 2.0, 0.5, float("nan"))
    with pytest.raises(InvalidInputError, match="high=inf"):
        det.update_last(1.0, float("inf"), 0.5, 1.0)
    with pytest.raises(InvalidInputError, match=r"low\[1\]=-inf"):
        det.update_many(np.ones(2), np.ones(2), np.array([1.0, -np.inf]), np.ones(2))
    with pytest.raises(InvalidInputError, match=r"open\[0\]=nan"):
        candlestick("CDLDOJI", np.array([np.nan]), np.ones(1), np.ones(1), np.ones(1))
    np.testing.assert_array_equal(
        det.update(bars[0][99], bars[1][99], bars[2][99], bars[3][99]),
        CandlestickDetector().update_many(*bars)[-1],
    )


def test_unknown_pattern_name_is_rejected_listing_known_names():
    one = np.ones(3)
    with pytest.raises(InvalidInputError, match="name='CDLNOPE'.*CDLDOJI, CDLDOJISTAR"):
        candlestick("CDLNOPE", one, one, one, one)


def test_mismatched_lengths_are_rejected():
    with pytest.raises(InvalidInputError, match="close: length 2 differs"):
        candlestick("CDLHAMMER", np.ones(3), np.ones(3), np.ones(3), np.ones(2))
    with pytest.raises(InvalidInputError, match="low: length 4 differs"):
        CandlestickDetector().update_many(np.ones(3), np.ones(3), np.ones(4), np.ones(3))


def test_update_last_before_any_bar_is_rejected():
    with pytest.raises(InvalidInputError, match="no bar to revise"):
        CandlestickDetector().update_last(1.0, 1.0, 1.0, 1.0)
