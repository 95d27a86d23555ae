"""TechnicalState: one call per 1m bar equals TA-Lib on every timeframe, with no look-ahead."""

from __future__ import annotations

import numpy as np
import pytest

from l2fast.config import TechnicalConfig
from l2fast.errors import ConfigError, InvalidBarError, InvalidInputError
from l2fast.evaluation.synthetic import generate_bars
from l2fast.technical.indicators import CANDLESTICK_PATTERNS, CandlestickDetector
from l2fast.technical.indicators import SupportResistance as Levels
from l2fast.technical.state import TechnicalState, feature_names, feature_warmups

from reference import Unchecked

talib = pytest.importorskip("talib")
pd = pytest.importorskip("pandas")

N_BARS = 100_000
RULES = {"1m": None, "5m": "5min", "15m": "15min", "1h": "1h"}


def _talib_features(bars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The TA-Lib values of the features a timeframe block holds, on that timeframe's bars."""
    o, h, l, c, v = (bars[k] for k in ("open", "high", "low", "close", "volume"))
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    slowk, slowd = talib.STOCH(h, l, c, 14, 3, 0, 3, 0)
    out = {
        "close": c,
        "rsi_14": talib.RSI(c, 14),
        "rsi_21": talib.RSI(c, 21),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
        "atr_14": talib.ATR(h, l, c, 14),
        "stoch_k": slowk,
        "stoch_d": slowd,
        "adx_14": talib.ADX(h, l, c, 14),
        "plus_di_14": talib.PLUS_DI(h, l, c, 14),
        "minus_di_14": talib.MINUS_DI(h, l, c, 14),
        "obv": talib.OBV(c, v),
        "donchian_upper_20": talib.MAX(h, 20),
        "donchian_lower_20": talib.MIN(l, 20),
    }
    for name in CANDLESTICK_PATTERNS:
        out[f"cdl_{name[3:].lower()}"] = getattr(talib, name)(o, h, l, c).astype(np.float64)
    return out


def _resample(bars: dict[str, np.ndarray], rule: str | None) -> dict[str, np.ndarray]:
    if rule is None:
        return bars
    df = pd.DataFrame(bars).set_index(pd.to_datetime(bars["ts"], unit="ms"))
    agg = df.resample(rule, label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    ).dropna()
    return {k: agg[k].to_numpy() for k in agg.columns}


@pytest.fixture(scope="module")
def streamed(btc_1m):
    """Stream N_BARS real bars one call at a time; collect each timeframe's closed-bar features."""
    bars = {k: v[:N_BARS] for k, v in btc_1m.items()}
    state = TechnicalState()
    width = len(state.names) // len(state.timeframes)
    rows: dict[str, list[np.ndarray]] = {tf: [] for tf in state.timeframes}
    for i in range(N_BARS):
        mask = state.update(int(bars["ts"][i]), bars["open"][i], bars["high"][i], bars["low"][i],
                            bars["close"][i], bars["volume"][i])
        for j, tf in enumerate(state.timeframes):
            if mask >> j & 1:
                rows[tf].append(state.values[j * width:(j + 1) * width].copy())
    return bars, state, {tf: np.array(r) for tf, r in rows.items()}


def test_feature_names_cover_the_documented_name_space():
    names = TechnicalState().names
    for name in ("rsi_14_1m", "macd_hist_5m", "bb_pctb_15m", "atr_pct_1h", "ret_1_1m",
                 "vol_z_20_1m", "cdl_engulfing_5m", "sr_dist_support_1h", "rsi_21_1h"):
        assert name in names
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("tf", list(RULES))
def test_every_timeframe_matches_talib_on_pandas_resampled_btc(streamed, tf):
    bars, state, rows = streamed
    expected = _talib_features(_resample(bars, RULES[tf]))
    ours = rows[tf]
    # The last resampled bucket may still be forming (not yet emitted by the state).
    n = len(ours)
    assert len(expected["close"]) - n in (0, 1)
    width = len(state.names) // len(state.timeframes)
    base = [name[: -len("_1m")] for name in state.names[:width]]
    for feature, theirs in expected.items():
        col = ours[:, base.index(feature)]
        theirs = theirs[:n]
        np.testing.assert_array_equal(np.isnan(col), np.isnan(theirs), err_msg=f"{feature}_{tf}")
        ok = ~np.isnan(theirs)
        np.testing.assert_allclose(col[ok], theirs[ok], rtol=1e-9, atol=1e-12, err_msg=f"{feature}_{tf}")


def test_derived_features_follow_their_definitions(streamed):
    _, state, rows = streamed
    width = len(state.names) // len(state.timeframes)
    col = {name[: -len("_1m")]: i for i, name in enumerate(state.names[:width])}
    r = rows["5m"][-500:]
    c = r[:, col["close"]]
    np.testing.assert_allclose(r[:, col["ret_1"]][1:], np.log(c[1:] / c[:-1]), rtol=1e-12)
    np.testing.assert_allclose(r[:, col["ret_5"]][5:], np.log(c[5:] / c[:-5]), rtol=1e-12)
    width_bb = r[:, col["bb_upper"]] - r[:, col["bb_lower"]]
    np.testing.assert_allclose(r[:, col["bb_pctb"]], (c - r[:, col["bb_lower"]]) / width_bb, rtol=1e-12)
    np.testing.assert_allclose(r[:, col["bb_width"]], width_bb / r[:, col["bb_middle"]], rtol=1e-12)
    np.testing.assert_allclose(r[:, col["atr_pct"]], r[:, col["atr_14"]] / c, rtol=1e-12)
    np.testing.assert_allclose(r[:, col["macd_hist_pct"]], r[:, col["macd_hist"]] / c, rtol=1e-12)
    pos = (c - r[:, col["donchian_lower_20"]]) / (r[:, col["donchian_upper_20"]] - r[:, col["donchian_lower_20"]])
    np.testing.assert_allclose(r[:, col["donchian_pos_20"]], pos, rtol=1e-12)


def test_higher_timeframe_features_change_only_when_their_bar_closes(btc_1m_head):
    b = btc_1m_head
    state = TechnicalState()
    hour = state.index["rsi_14_1h"]
    changes = 0
    for i in range(len(b["ts"])):
        before = state.values[hour]
        mask = state.update(int(b["ts"][i]), b["open"][i], b["high"][i], b["low"][i], b["close"][i], b["volume"][i])
        after = state.values[hour]
        if not mask & 0b1000:
            assert after == before or (np.isnan(after) and np.isnan(before))
        else:
            changes += 1
            assert (int(b["ts"][i]) + 60_000) % 3_600_000 == 0  # the hour's last minute
    assert changes == len(b["ts"]) // 60


def test_update_many_equals_streaming_and_records_features(btc_1m_head):
    b = btc_1m_head
    streamed, batched = TechnicalState(), TechnicalState()
    for i in range(len(b["ts"])):
        streamed.update(int(b["ts"][i]), b["open"][i], b["high"][i], b["low"][i], b["close"][i], b["volume"][i])
    rec = batched.update_many(b["ts"], b["open"], b["high"], b["low"], b["close"], b["volume"],
                              record=["rsi_14_1m", "macd_hist_15m"])
    np.testing.assert_array_equal(streamed.values, batched.values)
    assert rec.shape == (len(b["ts"]), 2)
    assert rec[-1, 0] == batched.get("rsi_14_1m")
    np.testing.assert_array_equal(rec[:, 0], talib.RSI(b["close"], 14))


def test_invalid_bar_raises_and_leaves_state_untouched():
    bars = generate_bars(3_000, seed=3)
    state, fresh = TechnicalState(), TechnicalState()
    state.update_many(*(bars[k][:-1] for k in ("ts", "open", "high", "low", "close", "volume")))
    fresh.update_many(*(bars[k][:-1] for k in ("ts", "open", "high", "low", "close", "volume")))
    ts, o, h, l, c, v = (bars[k][-1] for k in ("ts", "open", "high", "low", "close", "volume"))
    before = state.values.copy()
    bad_bars = [
        (int(ts), o, h, l, float("nan"), v),
        (int(ts), o, h, l, -c, v),
        (int(ts), o, min(o, c) * 0.99, l, c, v),
        (int(ts) - 60_000, o, h, l, c, v),
        (int(ts) + 1, o, h, l, c, v),
        (int(ts), o, h, l, c, -1.0),
    ]
    for bad in bad_bars:
        with pytest.raises(InvalidBarError):
            state.update(*bad)
        np.testing.assert_array_equal(state.values, before)
    assert state.bars == fresh.bars
    state.update(int(ts), o, h, l, c, v)
    fresh.update(int(ts), o, h, l, c, v)
    np.testing.assert_array_equal(state.values, fresh.values)


def test_update_many_rejects_a_bad_row_before_consuming_anything():
    bars = generate_bars(500, seed=5)
    bars["high"][321] = bars["low"][321] * 0.5
    state = TechnicalState()
    with pytest.raises(InvalidBarError, match="row 321"):
        state.update_many(*(bars[k] for k in ("ts", "open", "high", "low", "close", "volume")))
    assert state.bars == 0


def test_gaps_are_counted_and_higher_timeframes_close_across_them():
    bars = generate_bars(600, seed=9)
    keep = np.ones(600, dtype=bool)
    keep[100:180] = False  # an 80-minute halt, like the real 2023-03-24 one
    state = TechnicalState()
    state.update_many(*(bars[k][keep] for k in ("ts", "open", "high", "low", "close", "volume")))
    assert (state.gaps, state.missing_bars) == (1, 80)
    assert state.timeframe_bars("5m") == len(np.unique(bars["ts"][keep] // 300_000))


def test_config_rejects_unknown_keys_and_bad_values_naming_the_path():
    with pytest.raises(ConfigError, match=r"technical\.rsi_period: unknown key"):
        TechnicalConfig.from_dict({"rsi_period": 14})
    with pytest.raises(ConfigError, match=r"technical\.levels\.merge_tolerance"):
        TechnicalConfig.from_dict({"levels": {"merge_tolerance": 0.1}})
    with pytest.raises(ConfigError, match="timeframes"):
        TechnicalConfig.from_dict({"timeframes": ["5m", "1h"]})
    with pytest.raises(ConfigError, match="bb_period"):
        TechnicalConfig.from_dict({"bb_period": 1})
    cfg = TechnicalConfig.from_dict({"rsi_periods": [7], "timeframes": ["1m", "4h"]})
    state = TechnicalState(cfg)
    assert "rsi_7_4h" in state.names and "rsi_14_1m" not in state.names


def test_unknown_feature_name_is_rejected_with_examples():
    with pytest.raises(InvalidInputError, match="feature 'rsi_99_1m': unknown"):
        TechnicalState().get("rsi_99_1m")


def _bars_until_ready(indicator, bars: dict[str, np.ndarray], step) -> int:
    for i in range(len(bars["close"])):
        step(indicator, i)
        if indicator.ready:
            return i + 1
    raise AssertionError("never ready")


def test_feature_warmups_are_the_bars_until_each_feature_is_finite_from_any_start():
    cfg = TechnicalConfig.from_dict({
        "timeframes": ["1m", "5m", "15m"], "rsi_periods": [5, 30], "macd": [3, 7, 4], "bb_period": 9,
        "atr_period": 6, "stoch": [5, 2, 4], "adx_period": 8, "volume_z_period": 11,
        "realized_vol_period": 13, "donchian_period": 17,
        "levels": {"pivot_bars": 3, "range_window": 12, "volume_window": 7}})
    warm = feature_warmups(cfg)
    assert list(warm) == list(feature_names(cfg))
    minutes = dict(zip(cfg.timeframes, cfg.timeframe_minutes))
    timed = [n for n in warm if not n.startswith(("sr_", "cdl_"))]
    hour = 1704067200000  # a UTC hour: offset 0 is the first minute of every bucket
    for offset in (0, 1, 7, 14):
        bars = generate_bars(max(warm.values()) + 20, start_ts=hour + offset * 60_000)
        state = TechnicalState(cfg)
        rec = state.update_many(bars["ts"], bars["open"], bars["high"], bars["low"], bars["close"],
                                bars["volume"], record=timed)
        for j, name in enumerate(timed):
            assert np.isfinite(rec[warm[name] - 1:, j]).all(), (offset, name)
            if offset == 0:
                # From a bucket's first minute the feature needs k whole bars, k * m minutes:
                # the k the warm-up counts is exactly the kernel's NaN prefix.
                m = minutes[name.rsplit("_", 1)[1]]
                k = (warm[name] + 1) // m - 1
                assert np.flatnonzero(np.isfinite(rec[:, j]))[0] + 1 == k * m, name

    bars = generate_bars(200)
    levels = Levels(**cfg.levels)
    assert warm["sr_breakout_1m"] == _bars_until_ready(
        levels, bars, lambda s, i: s.update(bars["high"][i], bars["low"][i], bars["close"][i], bars["volume"][i]))
    assert warm["sr_in_range_15m"] == (warm["sr_breakout_1m"] + 1) * 15 - 1
    candles = CandlestickDetector()
    assert warm["cdl_engulfing_1m"] == _bars_until_ready(
        candles, bars, lambda s, i: s.update(bars["open"][i], bars["high"][i], bars["low"][i], bars["close"][i]))


def test_the_config_defaults_to_the_seeds_and_must_be_a_technical_config() -> None:
    assert TechnicalState().config == TechnicalConfig()
    assert TechnicalState(None).names == feature_names(TechnicalConfig())
    with pytest.raises(InvalidInputError, match="expected a TechnicalConfig"):
        TechnicalState({"timeframes": ["1m"]})


@pytest.mark.parametrize("overrides, field", [
    ({"rsi_periods": (14, 7, 21, 28, 9)}, "rsi_periods"),
    ({"rsi_periods": ()}, "rsi_periods"),
    ({"rsi_periods": (0,)}, "rsi_periods"),
    ({"timeframe_minutes": tuple(range(1, 10))}, "timeframes"),
    ({"timeframe_minutes": ()}, "timeframes"),
    ({"bb_period": 0}, "bb_period"),
    ({"macd": (12, -1, 9)}, "macd"),
])
def test_the_kernel_refuses_an_unvalidated_config_beyond_its_arrays(overrides, field):
    # The kernel trusts no caller for its memory: a section that skipped TechnicalConfig's
    # checks gets a typed error, not a write past a fixed array.
    from l2fast.technical import _features

    with pytest.raises(InvalidInputError, match=field):
        _features.TechnicalState(Unchecked(TechnicalConfig(), **overrides))
