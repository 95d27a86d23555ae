"""BollingerBands, ATR, Donchian, RealizedVolatility: TA-Lib/pandas equality on the real
data, streaming/batch identity, revisions, flat series, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from l2fast.errors import InvalidInputError
from l2fast.technical.indicators import ATR, BollingerBands, Donchian, RealizedVolatility

from reference.volatility import ATRRef, BollingerBandsRef, DonchianRef, RealizedVolatilityRef

talib = pytest.importorskip("talib")
pd = pytest.importorskip("pandas")

# Input fields of each indicator's update(), in order.
FIELDS = {
    BollingerBands: ("close",),
    ATR: ("high", "low", "close"),
    Donchian: ("high", "low"),
    RealizedVolatility: ("close",),
}
CLASSES = list(FIELDS)
MINUTES_PER_YEAR = 365 * 24 * 60


def as_tuple(value: float | tuple[float, ...]) -> tuple[float, ...]:
    return value if isinstance(value, tuple) else (value,)


def columns(cls: type, bars: dict[str, np.ndarray], n: int | None = None) -> list[np.ndarray]:
    return [bars[f][:n] for f in FIELDS[cls]]


def stream(ind: object, cols: list[np.ndarray], i: int, method: str = "update") -> tuple[float, ...]:
    return as_tuple(getattr(ind, method)(*(float(c[i]) for c in cols)))


def assert_matches_talib(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(theirs)
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-9, atol=0)


# ------------------------------------------------------------- reference data


@pytest.mark.parametrize("period,nbdev", [(2, 2.0), (20, 2.0), (20, 1.0), (50, 2.5)])
def test_bollinger_matches_talib_on_btc_1m(period, nbdev, btc_1m):
    close = btc_1m["close"]
    ours = BollingerBands(period, nbdev).update_many(close)
    theirs = talib.BBANDS(close, period, nbdev, nbdev, matype=0)
    for band, ref in zip(ours, theirs):
        assert_matches_talib(band, ref)


@pytest.mark.parametrize("period", [1, 2, 14, 100])
def test_atr_matches_talib_on_btc_1m(period, btc_1m):
    h, l, c = btc_1m["high"], btc_1m["low"], btc_1m["close"]
    assert_matches_talib(ATR(period).update_many(h, l, c), talib.ATR(h, l, c, timeperiod=period))


def test_bollinger_and_atr_are_bit_identical_to_talib_on_btc_and_eth_1m(btc_1m, eth_1m):
    # Same operations in the same order as TA-Lib 0.8's C code: not merely close.
    for bars in (btc_1m, eth_1m):
        h, l, c = bars["high"], bars["low"], bars["close"]
        for band, ref in zip(BollingerBands(20, 2.0).update_many(c), talib.BBANDS(c, 20, 2.0, 2.0, matype=0)):
            np.testing.assert_array_equal(band, ref)
        np.testing.assert_array_equal(ATR(14).update_many(h, l, c), talib.ATR(h, l, c, timeperiod=14))


@pytest.mark.parametrize("period", [2, 20, 55])
def test_donchian_bands_equal_talib_max_and_min_on_btc_1m(period, btc_1m):
    high, low = btc_1m["high"], btc_1m["low"]
    upper, middle, lower = Donchian(period).update_many(high, low)
    top, bottom = talib.MAX(high, timeperiod=period), talib.MIN(low, timeperiod=period)
    np.testing.assert_array_equal(upper, top)
    np.testing.assert_array_equal(lower, bottom)
    np.testing.assert_array_equal(middle, (top + bottom) / 2)


@pytest.mark.parametrize("period", [3, 20])
def test_donchian_is_exact_on_monotone_series_where_the_extreme_leaves_every_bar(period):
    # The worst case of a rescan-on-expiry rolling max; the block algorithm stays exact.
    for series in (np.arange(500, 0, -1, dtype=np.float64), np.arange(500, dtype=np.float64)):
        upper, _, lower = Donchian(period).update_many(series, series)
        np.testing.assert_array_equal(upper, talib.MAX(series, timeperiod=period))
        np.testing.assert_array_equal(lower, talib.MIN(series, timeperiod=period))


@pytest.mark.parametrize("period", [2, 20, 60])
def test_realized_volatility_matches_pandas_on_btc_1m(period, btc_1m):
    close = btc_1m["close"]
    ours = RealizedVolatility(period).update_many(close)
    theirs = (np.log(pd.Series(close)).diff().rolling(period).std() * math.sqrt(MINUTES_PER_YEAR)).to_numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    # Below ~1% a year (a nearly flat window) pandas' own running-sum drift and last-ulp
    # differences between libm's and numpy's log() dominate the comparison.
    ok = theirs > 1e-2
    assert ok.sum() > 0.9 * (~np.isnan(theirs)).sum()
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-9, atol=0)


def test_realized_volatility_scales_with_bar_minutes(btc_1m_head):
    close = btc_1m_head["close"]
    one = RealizedVolatility(60, bar_minutes=1).update_many(close)
    five = RealizedVolatility(60, bar_minutes=5).update_many(close)
    np.testing.assert_allclose(five, one / math.sqrt(5), rtol=1e-12)


# ------------------------------------------------------- streaming behaviour


def make(cls: type, period: int) -> object:
    return cls(period, 2.0) if cls is BollingerBands else cls(period)


def reference(cls: type, period: int) -> object:
    if cls is BollingerBands:
        return BollingerBandsRef(period, 2.0)
    if cls is ATR:
        return ATRRef(period)
    if cls is Donchian:
        return DonchianRef(period)
    return RealizedVolatilityRef(period, 1.0)


@pytest.mark.parametrize("cls", CLASSES)
def test_streaming_matches_pure_python_reference(cls, btc_1m_head):
    cols = columns(cls, btc_1m_head, 3000)
    ours, ref = make(cls, 20), reference(cls, 20)
    for i in range(3000):
        a, b = stream(ours, cols, i), stream(ref, cols, i)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=0)


@pytest.mark.parametrize("cls", CLASSES)
def test_streaming_and_batch_leave_identical_state(cls, btc_1m_head):
    cols = columns(cls, btc_1m_head)
    streamed, batched = make(cls, 14), make(cls, 14)
    for i in range(len(cols[0]) - 1):
        stream(streamed, cols, i)
    batched.update_many(*(c[:-1] for c in cols))
    last = len(cols[0]) - 1
    assert stream(streamed, cols, last) == stream(batched, cols, last)
    revised = [c[last] * 1.001 for c in cols]
    assert as_tuple(streamed.update_last(*revised)) == as_tuple(batched.update_last(*revised))


@pytest.mark.parametrize("cls", CLASSES)
def test_batch_output_equals_streamed_outputs(cls, btc_1m_head):
    cols = columns(cls, btc_1m_head, 2000)
    batch = np.column_stack([np.asarray(a) for a in as_tuple(make(cls, 10).update_many(*cols))])
    ind = make(cls, 10)
    streamed = np.array([stream(ind, cols, i) for i in range(2000)])
    np.testing.assert_array_equal(batch, streamed)


@pytest.mark.parametrize("cls", CLASSES)
def test_update_last_equals_having_updated_with_the_revised_value(cls, btc_1m_head):
    # period 10 over 500 bars: Donchian crosses ~50 block boundaries under revision.
    cols = columns(cls, btc_1m_head, 500)
    revised, direct = make(cls, 10), make(cls, 10)
    for i in range(500):
        stream(revised, cols, i)
        revised.update_last(*(float(c[i]) * 1.01 for c in cols))
        a = stream(revised, cols, i, "update_last")
        b = stream(direct, cols, i)
        np.testing.assert_array_equal(a, b)
    probe = [float(c[0]) for c in cols]
    assert as_tuple(revised.update(*probe)) == as_tuple(direct.update(*probe))


@pytest.mark.parametrize("cls", CLASSES)
def test_update_last_before_any_update_is_rejected(cls):
    ind = make(cls, 5)
    with pytest.raises(InvalidInputError, match="update_last"):
        ind.update_last(*([100.0] * len(FIELDS[cls])))


@pytest.mark.parametrize("cls", CLASSES)
def test_reset_returns_to_fresh_state(cls, btc_1m_head):
    cols = columns(cls, btc_1m_head, 300)
    ind = make(cls, 14)
    first = as_tuple(ind.update_many(*cols))
    assert ind.ready
    ind.reset()
    assert not ind.ready
    for a, b in zip(as_tuple(ind.update_many(*cols)), first):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", CLASSES)
def test_ready_flips_with_the_first_defined_output(cls, btc_1m_head):
    cols = columns(cls, btc_1m_head, 50)
    ind = make(cls, 10)
    for i in range(50):
        out = stream(ind, cols, i)
        assert ind.ready == (not math.isnan(out[0]))


# ----------------------------------------------------------------- flat data


def test_flat_series_gives_zero_width_bands_and_zero_volatility():
    flat = np.full(200, 42.0)
    upper, middle, lower = BollingerBands(20, 2.0).update_many(flat)
    for band in (upper, middle, lower):
        np.testing.assert_array_equal(band[19:], 42.0)
    np.testing.assert_array_equal(ATR(14).update_many(flat, flat, flat)[14:], 0.0)
    for band in Donchian(20).update_many(flat, flat):
        np.testing.assert_array_equal(band[19:], 42.0)
    np.testing.assert_array_equal(RealizedVolatility(20).update_many(flat)[20:], 0.0)


def test_bands_collapse_exactly_once_a_volatile_window_turns_flat(btc_1m_head):
    # The variance is extracted as a difference of running sums; the flat-window floor
    # must still bring it to exactly 0 (no sqrt of a rounding residue).
    series = np.concatenate([btc_1m_head["close"][:500], np.full(60, 43_210.57)])
    upper, middle, lower = BollingerBands(20, 2.0).update_many(series)
    np.testing.assert_array_equal(upper[-30:], middle[-30:])
    np.testing.assert_array_equal(lower[-30:], middle[-30:])
    vol = RealizedVolatility(20).update_many(series)
    np.testing.assert_array_equal(vol[-30:], 0.0)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("cls", CLASSES)
def test_non_finite_input_is_rejected_and_state_kept(cls, btc_1m_head):
    cols = columns(cls, btc_1m_head, 40)
    ind, twin = make(cls, 5), make(cls, 5)
    ind.update_many(*(c[:-1] for c in cols))
    twin.update_many(*(c[:-1] for c in cols))
    good = [float(c[-1]) for c in cols]
    for k, field in enumerate(FIELDS[cls]):
        bad = list(good)
        bad[k] = math.nan
        with pytest.raises(InvalidInputError, match=f"{field}=nan"):
            ind.update(*bad)
        with pytest.raises(InvalidInputError, match=f"{field}=nan"):
            ind.update_last(*bad)
        arrays = [c[-5:].copy() for c in cols]
        arrays[k][2] = math.inf
        with pytest.raises(InvalidInputError, match=rf"{field}\[2\]=inf"):
            ind.update_many(*arrays)
    assert stream(ind, [np.array(good)] * len(cols), 0) == stream(twin, [np.array(good)] * len(cols), 0)


def test_realized_volatility_rejects_non_positive_close():
    rv = RealizedVolatility(3)
    rv.update_many(np.array([100.0, 101.0, 102.0]))
    with pytest.raises(InvalidInputError, match="close=0.0"):
        rv.update(0.0)
    with pytest.raises(InvalidInputError, match=r"close\[1\]=-1.0"):
        rv.update_many(np.array([100.0, -1.0]))
    assert rv.update(103.0) == RealizedVolatility(3).update_many(np.array([100.0, 101.0, 102.0, 103.0]))[-1]


@pytest.mark.parametrize("cls,fields", [(ATR, 3), (Donchian, 2)])
def test_arrays_of_different_lengths_are_rejected(cls, fields):
    arrays = [np.ones(10)] * (fields - 1) + [np.ones(9)]
    with pytest.raises(InvalidInputError, match="length 9"):
        cls(3).update_many(*arrays)


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: BollingerBands(1, 2.0), "period=1"),
        (lambda: BollingerBands(20, -1.0), "nbdev=-1.0"),
        (lambda: BollingerBands(20, math.nan), "nbdev=nan"),
        (lambda: ATR(0), "period=0"),
        (lambda: Donchian(1), "period=1"),
        (lambda: RealizedVolatility(1), "period=1"),
        (lambda: RealizedVolatility(60, 0.0), "bar_minutes=0.0"),
        (lambda: RealizedVolatility(60, math.inf), "bar_minutes=inf"),
    ],
)
def test_invalid_parameters_are_rejected(factory, match):
    with pytest.raises(InvalidInputError, match=match):
        factory()
