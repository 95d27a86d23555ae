"""Manifest feature names resolved to the technical state's vector (l2fast.technical.names).

The stockstats name space is checked against stockstats itself: every name the parser
accepts is a column stockstats 0.6.10 computes, and the kernel the parse selects, run on
the same bars, gives that column's values.
"""

from __future__ import annotations

import numpy as np
import pytest

from l2fast.errors import InvalidInputError
from l2fast.technical import indicators as ind
from l2fast.technical.names import STOCKSTATS_PREFIX, StockstatsFeature, parse_stockstats, resolve_features

stockstats = pytest.importorskip("stockstats")
pd = pytest.importorskip("pandas")

# FinRL 0.3.7's default INDICATORS (finrl/config.py).
FINRL_INDICATORS = ("macd", "boll_ub", "boll_lb", "rsi_30", "cci_30", "dx_30", "close_30_sma", "close_60_sma")
# More of stockstats' general forms.
MORE = ("rsi_14", "cci_20", "atr_14", "pdi_14", "ndi_14", "close_12_ema", "volume_20_sma", "high_5_ema", "boll",
        "boll_10", "boll_ub_10", "boll_lb_10", "macds", "macdh")


def _kernel_values(f: StockstatsFeature, frame) -> np.ndarray:
    """The values of the standalone kernel the spec names, on ``frame``'s bars."""
    h, lo, c = (frame[k].to_numpy(np.float64) for k in ("high", "low", "close"))
    if f.kind in ("sma", "ema"):
        cls = ind.StockstatsSMA if f.kind == "sma" else ind.StockstatsEMA
        return cls(*f.periods).update_many(frame[f.source].to_numpy(np.float64))
    if f.kind == "rsi":
        return ind.StockstatsRSI(*f.periods).update_many(c)
    if f.kind == "atr":
        return ind.StockstatsATR(*f.periods).update_many(h, lo, c)
    if f.kind == "cci":
        return ind.StockstatsCCI(*f.periods).update_many(h, lo, c)
    if f.kind == "dx":
        return ind.StockstatsDX(*f.periods).update_many(h, lo, c)[("dx", "pdi", "ndi").index(f.output)]
    if f.kind == "boll":
        return ind.StockstatsBollingerBands(*f.periods).update_many(c)[("mid", "ub", "lb").index(f.output)]
    assert f.kind == "macd"
    return ind.StockstatsMACD(*f.periods).update_many(c)[("macd", "macds", "macdh").index(f.output)]


@pytest.fixture(scope="module")
def hourly(btc_1m) -> pd.DataFrame:
    n = 60 * 24 * 60  # 60 days of 1m bars
    frame = pd.DataFrame({k: btc_1m[k][:n] for k in ("open", "high", "low", "close", "volume")},
                         index=pd.to_datetime(btc_1m["ts"][:n], unit="ms"))
    return frame.resample("1h", closed="left", label="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()


@pytest.mark.parametrize("name", FINRL_INDICATORS + MORE)
def test_a_stockstats_name_selects_the_kernel_that_gives_stockstats_column(hourly, name) -> None:
    feature = parse_stockstats(f"{name}_1h")
    assert isinstance(feature, StockstatsFeature)
    assert feature.name == f"{STOCKSTATS_PREFIX}{name}_1h" and feature.timeframe == "1h"
    frame = stockstats.StockDataFrame.retype(hourly.reset_index(drop=True).copy())
    if name.startswith(("boll_ub_", "boll_lb_")):
        # stockstats makes boll_ub_<n> / boll_lb_<n> only as by-products of boll_<n>.
        frame[f"boll_{feature.periods[0]}"]
    theirs = frame[name].to_numpy(np.float64)
    ours = _kernel_values(feature, hourly)
    scale = 100.0 if feature.kind in ("rsi", "cci", "dx") else float(np.nanmean(np.abs(theirs))) or 1.0
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9 * scale, equal_nan=True, err_msg=name)


def test_finrls_default_indicators_parse_to_the_documented_specs() -> None:
    got = {n: parse_stockstats(n, "1h") for n in FINRL_INDICATORS}
    assert got["macd"] == StockstatsFeature("ss:macd_1h", "macd", (12, 26, 9), "macd", "close", "1h")
    assert got["boll_ub"] == StockstatsFeature("ss:boll_ub_1h", "boll", (20,), "ub", "close", "1h")
    assert got["rsi_30"] == StockstatsFeature("ss:rsi_30_1h", "rsi", (30,), "value", "close", "1h")
    assert got["dx_30"] == StockstatsFeature("ss:dx_30_1h", "dx", (30,), "dx", "close", "1h")
    assert got["close_60_sma"] == StockstatsFeature("ss:close_60_sma_1h", "sma", (60,), "value", "close", "1h")


def test_a_suffix_overrides_the_manifest_timeframe_and_close_is_the_shared_column() -> None:
    assert parse_stockstats("rsi_30_15m", "1h").timeframe == "15m"  # type: ignore[union-attr]
    assert parse_stockstats("close", "4h") == "close_4h"
    assert parse_stockstats("close_1h") == "close_1h"


@pytest.mark.parametrize("name, timeframe, match", [
    ("rsi_30", None, "no timeframe"),
    ("rsi_1h", None, "needs a period"),
    ("rsi_0_1h", None, "period 0"),
    ("kdjk_1h", None, "not a stockstats name"),
    ("close_30_wma_1h", None, "not a stockstats name"),
    ("macd_12_26_9_1h", None, "not a stockstats name"),
    ("amount_5_sma_1h", None, "not a stockstats name"),
    ("rsi_14_0m", None, "timeframe"),
    (14, "1h", "must be a string"),
])
def test_a_name_stockstats_or_l2fast_cannot_compute_is_refused_with_the_reason(name, timeframe, match) -> None:
    with pytest.raises(InvalidInputError, match=match):
        parse_stockstats(name, timeframe)


def test_resolve_keeps_l2fast_names_and_collects_each_stockstats_extra_once() -> None:
    names = ("rsi_14_1m", "macd_1m")
    assert resolve_features(names, "l2fast") == (names, ())
    vector, extras = resolve_features(("close", "boll_ub", "boll_lb", "rsi_30", "rsi_30_4h", "boll_ub"),
                                      "stockstats", "1h")
    assert vector == ("close_1h", "ss:boll_ub_1h", "ss:boll_lb_1h", "ss:rsi_30_1h", "ss:rsi_30_4h", "ss:boll_ub_1h")
    assert [e.name for e in extras] == ["ss:boll_ub_1h", "ss:boll_lb_1h", "ss:rsi_30_1h", "ss:rsi_30_4h"]
    with pytest.raises(InvalidInputError, match="feature_namespace"):
        resolve_features(names, "finrl")
