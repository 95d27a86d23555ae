"""stockstats-compatible indicators (FinRL's features): equality with stockstats 0.6.10
itself on real BTC/ETH 1m bars and on 1h bars rolled up from them, with the pure-Python
twin, stockstats' first-row and division-by-zero conventions, streaming/batch identity,
revisions, validation.

Tolerance: relative 1e-9 plus an absolute floor of 1e-9 times the output's scale: the mean
|close| for outputs in price units (SMA, EMA, Bollinger, MACD, ATR: each is, or is a
difference of, price levels, so its rounding is that of a price, whatever its own size)
and 100 for the oscillators (RSI, +DI/-DI, DX, CCI: ratios whose numerator can cancel to
near 0, where a relative bound alone would judge rounding noise).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from l2fast.errors import InvalidInputError
from l2fast.technical.indicators import (
    StockstatsATR,
    StockstatsBollingerBands,
    StockstatsCCI,
    StockstatsDX,
    StockstatsEMA,
    StockstatsMACD,
    StockstatsRSI,
    StockstatsSMA,
)

from reference.stockstats import ATRRef, BollRef, CCIRef, DXRef, EWMRef, MACDRef, RSIRef, SMARef

pd = pytest.importorskip("pandas")
stockstats = pytest.importorskip("stockstats")

SLICE = 20_000
OSC = 100.0


def stockstats_columns(bars: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """stockstats' columns ``names`` for ``bars``, requested as FinRL does (``retype(df)[name]``)."""
    df = pd.DataFrame({k: bars[k] for k in ("open", "high", "low", "close", "volume")})
    sdf = stockstats.StockDataFrame.retype(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {name: sdf[name].to_numpy(dtype=np.float64) for name in names}


def assert_close(ours: np.ndarray, theirs: np.ndarray, scale: float) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(theirs)
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-9, atol=1e-9 * scale)


@dataclass(frozen=True)
class Family:
    """One indicator: its kernel, bar fields, stockstats column names and output scale."""

    name: str
    make: Callable[[], Any]
    fields: tuple[str, ...]
    columns: tuple[str, ...]
    price_scaled: bool
    make_ref: Callable[[], Any]

    def ours(self, bars: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        out = self.make().update_many(*(bars[f] for f in self.fields))
        return out if isinstance(out, tuple) else (out,)

    def scale(self, bars: dict[str, np.ndarray]) -> float:
        return float(np.mean(np.abs(bars["close"]))) if self.price_scaled else OSC


def families(p: int) -> list[Family]:
    """Every indicator at period ``p`` (MACD at its stockstats default and at a ``p`` form)."""
    boll = ("boll", "boll_ub", "boll_lb") if p == 20 else (f"boll_{p}", f"boll_ub_{p}", f"boll_lb_{p}")
    hlc = ("high", "low", "close")
    return [
        Family(f"sma_{p}", lambda: StockstatsSMA(p), ("close",), (f"close_{p}_sma",), True, lambda: SMARef(p)),
        Family(f"ema_{p}", lambda: StockstatsEMA(p), ("close",), (f"close_{p}_ema",), True,
               lambda: EWMRef.span(p)),
        Family(f"boll_{p}", lambda: StockstatsBollingerBands(p), ("close",), boll, True, lambda: BollRef(p)),
        Family(f"rsi_{p}", lambda: StockstatsRSI(p), ("close",), (f"rsi_{p}",), False, lambda: RSIRef(p)),
        Family(f"atr_{p}", lambda: StockstatsATR(p), hlc, (f"atr_{p}",), True, lambda: ATRRef(p)),
        Family(f"dx_{p}", lambda: StockstatsDX(p), hlc, (f"dx_{p}", f"pdi_{p}", f"ndi_{p}"), False,
               lambda: DXRef(p)),
        Family(f"cci_{p}", lambda: StockstatsCCI(p), hlc, (f"cci_{p}",), False, lambda: CCIRef(p)),
        Family(f"macd_{p}", lambda: StockstatsMACD(p, 2 * p + 1, p), ("close",),
               tuple(f"macd{x}_{p},{2 * p + 1},{p}" for x in ("", "s", "h")), True,
               lambda: MACDRef(p, 2 * p + 1, p)),
    ]


FINRL = [  # FinRL's default INDICATORS and stockstats' default periods
    Family("macd", lambda: StockstatsMACD(12, 26, 9), ("close",), ("macd", "macds", "macdh"), True,
           lambda: MACDRef(12, 26, 9)),
    *families(20),
    *families(30),
    *families(14),
    Family("sma_60", lambda: StockstatsSMA(60), ("close",), ("close_60_sma",), True, lambda: SMARef(60)),
]
ALL = FINRL + families(1) + families(3)
IDS = [f.name for f in ALL]
# Below 5 bars pandas' running variance (stockstats' ``mov_std``) drifts past the tolerance
# on near-flat windows: see test_short_bollinger_bands_equal_a_two_pass_std_where_pandas_drifts.
SMALL_BOLL = {"boll_2", "boll_3"}
VS_STOCKSTATS = [f for f in ALL if f.name not in SMALL_BOLL]
VS_IDS = [f.name for f in VS_STOCKSTATS]


def check_family(family: Family, bars: dict[str, np.ndarray]) -> None:
    theirs = stockstats_columns(bars, list(family.columns))
    for ours, name in zip(family.ours(bars), family.columns):
        assert_close(ours, theirs[name], family.scale(bars))


def head(data: dict[str, np.ndarray], start: int = 0) -> dict[str, np.ndarray]:
    return {k: v[start:start + SLICE].copy() for k, v in data.items()}


def hourly(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """1h bars rolled up from the 1m series with pandas (UTC hours, empty hours dropped)."""
    df = pd.DataFrame(data)
    df.index = pd.to_datetime(df.pop("ts"), unit="ms", utc=True)
    h = df.resample("1h").agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    h = h.dropna()
    return {k: h[k].to_numpy(dtype=np.float64) for k in h.columns}


# ------------------------------------------------------------- against stockstats


@pytest.mark.parametrize("family", VS_STOCKSTATS, ids=VS_IDS)
def test_matches_stockstats_from_the_first_bar_on_btc_1m(family, btc_1m_head):
    check_family(family, btc_1m_head)


@pytest.mark.parametrize("family", VS_STOCKSTATS, ids=VS_IDS)
def test_matches_stockstats_from_the_first_bar_on_eth_1m(family, eth_1m):
    check_family(family, head(eth_1m, 500_000))


@pytest.fixture(scope="module")
def btc_1h(btc_1m):
    return hourly(btc_1m)


@pytest.fixture(scope="module")
def eth_1h(eth_1m):
    return hourly(eth_1m)


@pytest.mark.parametrize("family", FINRL, ids=[f.name for f in FINRL])
def test_matches_stockstats_on_hourly_bars_rolled_up_from_btc_1m(family, btc_1h):
    check_family(family, btc_1h)


@pytest.mark.parametrize("family", FINRL, ids=[f.name for f in FINRL])
def test_matches_stockstats_on_hourly_bars_rolled_up_from_eth_1m(family, eth_1h):
    check_family(family, eth_1h)


def test_period_2_indicators_match_stockstats(btc_1m_head, eth_1m):
    for family in families(2):
        if family.name not in SMALL_BOLL:
            check_family(family, btc_1m_head)
            check_family(family, head(eth_1m, 500_000))


@pytest.mark.parametrize("period", [2, 3])
def test_short_bollinger_bands_equal_a_two_pass_std_where_pandas_drifts(period, btc_1m_head, eth_1m):
    """On windows of 2 or 3 bars pandas' running variance (stockstats' ``mov_std``) drifts:
    near-flat windows of BTC/ETH closes get a std off by up to ~1e-3 (two equal closes: 7.8e-4
    instead of 0). The kernel rebuilds its variance every ``period`` bars, so its bands
    equal a two-pass sample std (the twin's ``math.fsum``); its middle band equals
    stockstats', and its bands stay within stockstats' drift (1e-7 relative)."""
    for bars in (btc_1m_head, head(eth_1m, 500_000)):
        close = bars["close"]
        ours = StockstatsBollingerBands(period).update_many(close)
        ref = BollRef(period)
        twin = np.array([ref.update(x) for x in close]).T
        names = [f"boll_{period}", f"boll_ub_{period}", f"boll_lb_{period}"]
        theirs = stockstats_columns(bars, names)
        scale = float(np.mean(close))
        for k in range(3):
            assert_close(ours[k], twin[k], scale)
            np.testing.assert_allclose(ours[k], theirs[names[k]], rtol=1e-7)
        assert_close(ours[0], theirs[names[0]], scale)


def test_first_bar_values_are_stockstats_conventions():
    """First bar: SMA/EMA/middle = close, bands NaN, MACD 0, RSI 50, ATR = high - low,
    +DI/-DI/DX 0 (no directional move yet), CCI 0."""
    h, l, c = 101.0, 98.0, 100.0
    assert StockstatsSMA(5).update(c) == c
    assert StockstatsEMA(5).update(c) == c
    mid, ub, lb = StockstatsBollingerBands(5).update(c)
    assert mid == c and np.isnan(ub) and np.isnan(lb)
    assert StockstatsMACD(12, 26, 9).update(c) == (0.0, 0.0, 0.0)
    assert StockstatsRSI(14).update(c) == 50.0
    assert StockstatsATR(14).update(h, l, c) == h - l
    assert StockstatsDX(14).update(h, l, c) == (0.0, 0.0, 0.0)
    assert StockstatsCCI(14).update(h, l, c) == 0.0


# ------------------------------------------------------------------ edge cases


def flat_bars(n: int = 60, price: float = 100.0) -> dict[str, np.ndarray]:
    one = np.full(n, price)
    return {"open": one, "high": one.copy(), "low": one.copy(), "close": one.copy(), "volume": one.copy()}


@pytest.mark.parametrize("family", ALL, ids=IDS)
def test_constant_prices_give_stockstats_values_exactly(family):
    """Zero ranges: RSI 50, CCI 0, ATR 0, +DI/-DI/DX NaN (0 / 0 ATR), bands = middle, MACD 0."""
    bars = flat_bars()
    theirs = stockstats_columns(bars, list(family.columns))
    for ours, name in zip(family.ours(bars), family.columns):
        np.testing.assert_array_equal(ours, theirs[name])


@pytest.mark.parametrize("family", VS_STOCKSTATS, ids=VS_IDS)
def test_a_flat_start_then_moves_matches_stockstats(family, btc_1m_head):
    """NaN +DI/-DI/DX while the ATR is 0, then defined; partial windows across the flat part."""
    bars = head(btc_1m_head)
    for k in ("high", "low", "close"):
        bars[k] = np.concatenate([np.full(40, bars["close"][0]), bars[k][:400]])
    bars["open"] = bars["close"].copy()
    bars["volume"] = np.ones_like(bars["close"])
    check_family(family, bars)


def test_stockstats_gives_nan_cci_on_a_series_shorter_than_the_window_unlike_the_kernel():
    """stockstats' CCI on a whole series depends on its length (all NaN if shorter than the
    window); the kernel gives each bar the 0 stockstats gives it in a longer series."""
    bars = flat_bars(10)
    bars["close"] = bars["close"] + np.arange(10.0)
    assert np.isnan(stockstats_columns(bars, ["cci_14"])["cci_14"]).all()
    np.testing.assert_array_equal(StockstatsCCI(14).update_many(bars["high"], bars["low"], bars["close"]), 0.0)


# ------------------------------------------------------------ against the twin


@pytest.mark.parametrize("family", ALL, ids=IDS)
def test_streaming_matches_pure_python_twin(family, btc_1m_head):
    bars = {k: v[:3000] for k, v in btc_1m_head.items()}
    ind, ref = family.make(), family.make_ref()
    cols = [bars[f] for f in family.fields]
    scale = family.scale(bars)
    ours = np.array([np.atleast_1d(ind.update(*row)) for row in zip(*cols)])
    theirs = np.array([np.atleast_1d(ref.update(*row)) for row in zip(*cols)])
    for j in range(ours.shape[1]):
        assert_close(ours[:, j], theirs[:, j], scale)


# ------------------------------------------------------- the incremental contract


def outputs(out: object) -> np.ndarray:
    return np.array(out if isinstance(out, tuple) else (out,), dtype=np.float64)


@pytest.mark.parametrize("family", ALL, ids=IDS)
def test_update_many_equals_repeated_update_and_leaves_the_same_state(family, btc_1m_head):
    cols = [btc_1m_head[f][:500] for f in family.fields]
    a, b = family.make(), family.make()
    batch = np.column_stack(outputs_many(a, cols, 400))
    one = np.array([outputs(b.update(*row)) for row in zip(*(c[:400] for c in cols))])
    np.testing.assert_array_equal(batch, one)
    nxt = [c[400:] for c in cols]
    np.testing.assert_array_equal(np.array(outputs_many(a, nxt, 100)), np.array(outputs_many(b, nxt, 100)))


def outputs_many(ind: Any, cols: list[np.ndarray], n: int) -> tuple[np.ndarray, ...]:
    out = ind.update_many(*(c[:n] for c in cols))
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("family", ALL, ids=IDS)
def test_update_last_equals_having_updated_with_the_revised_value(family, btc_1m_head):
    cols = [btc_1m_head[f][:300] for f in family.fields]
    revised = [c[299] * 1.001 for c in cols]
    a, b = family.make(), family.make()
    a.update_many(*cols)
    b.update_many(*(c[:299] for c in cols))
    np.testing.assert_array_equal(outputs(a.update_last(*revised)),
                                  outputs(b.update(*revised)))
    np.testing.assert_array_equal(outputs(a.update(*(c[0] for c in cols))),
                                  outputs(b.update(*(c[0] for c in cols))))


@pytest.mark.parametrize("family", ALL, ids=IDS)
def test_update_last_before_any_update_is_rejected(family):
    with pytest.raises(InvalidInputError, match="no value to revise"):
        family.make().update_last(*([100.0] * len(family.fields)))


@pytest.mark.parametrize("family", ALL, ids=IDS)
def test_reset_returns_to_the_fresh_state(family, btc_1m_head):
    cols = [btc_1m_head[f][:200] for f in family.fields]
    ind = family.make()
    fresh = outputs_many(ind, cols, 100)
    ind.update_many(*(c[100:] for c in cols))
    ind.reset()
    assert not ind.ready
    np.testing.assert_array_equal(np.array(outputs_many(ind, cols, 100)), np.array(fresh))


@pytest.mark.parametrize("family", ALL, ids=IDS)
def test_ready_turns_true_after_warmup_updates(family, btc_1m_head):
    ind = family.make()
    warmup = ind.warmup
    cols = [btc_1m_head[f] for f in family.fields]
    for i, row in enumerate(zip(*cols)):
        assert ind.ready == (i >= warmup)
        if i > warmup:
            break
        ind.update(*row)


@pytest.mark.parametrize("family", ALL, ids=IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected_and_state_kept(family, bad, btc_1m_head):
    cols = [btc_1m_head[f][:60] for f in family.fields]
    a, b = family.make(), family.make()
    a.update_many(*(c[:50] for c in cols))
    b.update_many(*(c[:50] for c in cols))
    for k in range(len(cols)):
        row = [c[50] for c in cols]
        row[k] = bad
        with pytest.raises(InvalidInputError, match="must be finite"):
            a.update(*row)
        arrays = [c[50:].copy() for c in cols]
        arrays[k][3] = bad
        with pytest.raises(InvalidInputError, match="must be finite"):
            a.update_many(*arrays)
    np.testing.assert_array_equal(np.array(outputs_many(a, [c[50:] for c in cols], 10)),
                                  np.array(outputs_many(b, [c[50:] for c in cols], 10)))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: StockstatsSMA(0), "period=0"),
        (lambda: StockstatsEMA(-1), "period=-1"),
        (lambda: StockstatsBollingerBands(0), "period=0"),
        (lambda: StockstatsRSI(0), "period=0"),
        (lambda: StockstatsATR(0), "period=0"),
        (lambda: StockstatsDX(0), "period=0"),
        (lambda: StockstatsCCI(0), "period=0"),
        (lambda: StockstatsMACD(0, 26, 9), "fast=0"),
        (lambda: StockstatsMACD(12, 0, 9), "slow=0"),
        (lambda: StockstatsMACD(12, 26, 0), "signal=0"),
    ],
)
def test_invalid_periods_are_rejected(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make()


def test_periods_are_required_arguments():
    for cls in (StockstatsSMA, StockstatsEMA, StockstatsBollingerBands, StockstatsRSI, StockstatsATR,
                StockstatsDX, StockstatsCCI, StockstatsMACD):
        with pytest.raises(TypeError):
            cls()


@pytest.mark.parametrize("make", [lambda: StockstatsATR(14), lambda: StockstatsDX(14), lambda: StockstatsCCI(14)])
def test_update_many_rejects_arrays_of_different_lengths(make):
    with pytest.raises(InvalidInputError, match="length"):
        make().update_many(np.ones(5), np.ones(4), np.ones(5))


@pytest.mark.parametrize("family", ALL, ids=IDS)
def test_empty_update_many_returns_empty_arrays(family):
    out = outputs_many(family.make(), [np.empty(0)] * len(family.fields), 0)
    assert all(o.shape == (0,) for o in out)
