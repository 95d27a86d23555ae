"""RollingCorrelation: TA-Lib equality on real BTC/ETH returns and prices, streaming/batch
identity, revisions, flat windows, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from l2fast.errors import InvalidInputError
from l2fast.technical.indicators import RollingCorrelation

from reference.statistics import RollingCorrelationRef

talib = pytest.importorskip("talib")


@pytest.fixture(scope="module")
def returns(btc_1m, eth_1m) -> tuple[np.ndarray, np.ndarray]:
    """1-minute log returns of BTC and ETH (the pair the engine correlates)."""
    return np.diff(np.log(btc_1m["close"])), np.diff(np.log(eth_1m["close"]))


def assert_matches_talib(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(theirs)
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-9, atol=0)


@pytest.mark.parametrize("period", [2, 10, 30, 240])
def test_correlation_of_btc_and_eth_returns_matches_talib(period, returns):
    x, y = returns
    assert_matches_talib(RollingCorrelation(period).update_many(x, y), talib.CORREL(x, y, timeperiod=period))


@pytest.mark.parametrize("period", [10, 30])
def test_correlation_of_btc_and_eth_prices_matches_talib(period, btc_1m, eth_1m):
    x, y = btc_1m["close"], eth_1m["close"]
    assert_matches_talib(RollingCorrelation(period).update_many(x, y), talib.CORREL(x, y, timeperiod=period))


def test_correlation_is_bit_identical_to_talib(returns, btc_1m, eth_1m):
    # Same shifted sums, reseed triggers and guards as TA-Lib 0.8's CORREL.
    x, y = returns
    np.testing.assert_array_equal(RollingCorrelation(30).update_many(x, y), talib.CORREL(x, y, timeperiod=30))
    v, w = btc_1m["volume"], eth_1m["volume"]
    np.testing.assert_array_equal(RollingCorrelation(30).update_many(v, w), talib.CORREL(v, w, timeperiod=30))


def test_correlation_stays_within_minus_one_and_one(returns):
    r = RollingCorrelation(5).update_many(*returns)
    assert np.nanmax(np.abs(r)) <= 1.0


def test_streaming_matches_pure_python_reference(returns):
    x, y = (a[:3000] for a in returns)
    ours, ref = RollingCorrelation(30), RollingCorrelationRef(30)
    for a, b in zip(x, y):
        got, want = ours.update(float(a), float(b)), ref.update(float(a), float(b))
        # r is bounded, so an absolute tolerance is the meaningful one near r = 0.
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-9)


def test_streaming_and_batch_leave_identical_state(returns):
    x, y = (a[:5000] for a in returns)
    streamed, batched = RollingCorrelation(30), RollingCorrelation(30)
    for a, b in zip(x[:-1], y[:-1]):
        streamed.update(float(a), float(b))
    batched.update_many(x[:-1], y[:-1])
    assert streamed.update(float(x[-1]), float(y[-1])) == batched.update(float(x[-1]), float(y[-1]))
    assert streamed.update_last(0.001, -0.002) == batched.update_last(0.001, -0.002)


def test_batch_output_equals_streamed_outputs(returns):
    x, y = (a[:3000] for a in returns)
    ind = RollingCorrelation(20)
    streamed = np.array([ind.update(float(a), float(b)) for a, b in zip(x, y)])
    np.testing.assert_array_equal(RollingCorrelation(20).update_many(x, y), streamed)


def test_update_last_equals_having_updated_with_the_revised_value(returns):
    x, y = (a[:2000] for a in returns)
    revised, direct = RollingCorrelation(10), RollingCorrelation(10)
    for a, b in zip(x, y):
        revised.update(float(a), float(b))
        revised.update_last(float(a) + 0.01, float(b) - 0.01)
        got, want = revised.update_last(float(a), float(b)), direct.update(float(a), float(b))
        assert got == want or (math.isnan(got) and math.isnan(want))
    assert revised.update(0.001, 0.002) == direct.update(0.001, 0.002)


def test_update_last_before_any_update_is_rejected():
    with pytest.raises(InvalidInputError, match="update_last"):
        RollingCorrelation(5).update_last(1.0, 2.0)


def test_reset_returns_to_fresh_state(returns):
    x, y = (a[:300] for a in returns)
    ind = RollingCorrelation(14)
    first = ind.update_many(x, y)
    assert ind.ready
    ind.reset()
    assert not ind.ready
    np.testing.assert_array_equal(ind.update_many(x, y), first)


def test_flat_windows_give_zero_correlation():
    n = 100
    varying = np.sin(np.arange(n, dtype=np.float64))
    flat = np.full(n, 1.5)
    np.testing.assert_array_equal(RollingCorrelation(10).update_many(flat, varying)[9:], 0.0)
    np.testing.assert_array_equal(RollingCorrelation(10).update_many(varying, flat)[9:], 0.0)
    np.testing.assert_array_equal(RollingCorrelation(10).update_many(flat, flat)[9:], 0.0)


def test_zero_returns_of_a_halted_market_give_zero_correlation(returns):
    # A run of flat bars makes one side's returns exactly 0 for a whole window.
    x, y = (a[:200].copy() for a in returns)
    x[100:150] = 0.0
    r = RollingCorrelation(20).update_many(x, y)
    np.testing.assert_array_equal(r[119:150], 0.0)
    np.testing.assert_array_equal(r, talib.CORREL(x, y, timeperiod=20))


def test_perfectly_related_series_give_plus_and_minus_one():
    x = np.cumsum(np.sin(np.arange(200.0))) + 100.0
    np.testing.assert_allclose(RollingCorrelation(30).update_many(x, 2.0 * x + 3.0)[29:], 1.0, rtol=1e-12)
    np.testing.assert_allclose(RollingCorrelation(30).update_many(x, -x)[29:], -1.0, rtol=1e-12)


def test_non_finite_input_is_rejected_and_state_kept():
    ind = RollingCorrelation(3)
    ind.update_many(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]))
    with pytest.raises(InvalidInputError, match="x=nan"):
        ind.update(math.nan, 1.0)
    with pytest.raises(InvalidInputError, match="y=inf"):
        ind.update(1.0, math.inf)
    with pytest.raises(InvalidInputError, match="y=nan"):
        ind.update_last(1.0, math.nan)
    with pytest.raises(InvalidInputError, match=r"x\[1\]=inf"):
        ind.update_many(np.array([1.0, np.inf]), np.array([1.0, 2.0]))
    fresh = RollingCorrelation(3).update_many(np.array([1.0, 2.0, 4.0, 3.0]), np.array([1.0, 3.0, 2.0, 5.0]))
    assert ind.update(3.0, 5.0) == fresh[-1]


def test_arrays_of_different_lengths_are_rejected():
    with pytest.raises(InvalidInputError, match="length 4"):
        RollingCorrelation(3).update_many(np.ones(5), np.ones(4))


def test_period_below_two_is_rejected():
    with pytest.raises(InvalidInputError, match="period=1"):
        RollingCorrelation(1)
