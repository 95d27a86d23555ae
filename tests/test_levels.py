"""SupportResistance: constructed series with known answers, invariants on the real data,
streaming/batch identity, revisions, the pure-Python twin, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from l2fast.config import TechnicalConfig
from l2fast.errors import InvalidInputError
from l2fast.technical.indicators import LevelsSnapshot, SupportResistance

from reference.levels import SupportResistanceRef

FIELDS = LevelsSnapshot._fields


def levels(**kwargs) -> dict:
    """The config's level parameters (their one owner) with ``kwargs``."""
    return {**TechnicalConfig().levels, **kwargs}


def new_sr(**kwargs) -> SupportResistance:
    return SupportResistance(**levels(**kwargs))


def bars(closes, volume=1.0, half_spread=0.5) -> tuple[np.ndarray, ...]:
    """Bars around a close path: high/low = close +/- half_spread."""
    c = np.asarray(closes, dtype=np.float64)
    v = np.broadcast_to(np.asarray(volume, dtype=np.float64), c.shape).copy()
    return c + half_spread, c - half_spread, c, v


def mirrored(h, l, c, v, axis=200.0):
    """Reflect prices around ``axis``: highs become lows, tops become bottoms."""
    return axis - l, axis - h, axis - c, v


def path(*legs: tuple[float, float]) -> list[float]:
    """Unit-step piecewise-linear closes through the given (from, to) legs."""
    out: list[float] = []
    for a, b in legs:
        step = 1.0 if b >= a else -1.0
        leg = [float(x) for x in np.arange(a, b, step)] + [float(b)]
        out.extend(leg[1:] if out and out[-1] == leg[0] else leg)
    return out


def events(arr: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~np.isnan(arr)) if arr.dtype.kind == "f" else np.flatnonzero(arr)


def btc(btc_1m, n: int) -> tuple[np.ndarray, ...]:
    return tuple(btc_1m[k][:n] for k in ("high", "low", "close", "volume"))


def same(a: LevelsSnapshot, b: LevelsSnapshot) -> bool:
    """Field-wise equality where NaN equals NaN."""
    return all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))


def assert_same_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for f in FIELDS:
        np.testing.assert_array_equal(a[f], b[f], err_msg=f)


# ------------------------------------------------------------- constructed series

def test_v_gives_one_pivot_low_confirmed_pivot_bars_later():
    out = new_sr().update_many(*bars(path((110, 100), (100, 110))))
    np.testing.assert_array_equal(events(out["pivot_low"]), [15])  # pivot at bar 10, N = 5
    assert out["pivot_low"][15] == 99.5
    assert events(out["pivot_high"]).size == 0
    assert out["support"][15] == 99.5 and out["support_touches"][15] == 1.0
    assert out["n_levels"][14] == 0 and out["n_levels"][15] == 1


@pytest.mark.parametrize("pivot_bars", [1, 2, 3])
def test_pivot_bars_sets_the_confirmation_delay(pivot_bars):
    out = new_sr(pivot_bars=pivot_bars).update_many(*bars(path((110, 100), (100, 110))))
    np.testing.assert_array_equal(events(out["pivot_low"]), [10 + pivot_bars])


def test_w_gives_a_double_bottom_with_its_neckline_when_the_second_low_confirms():
    sr = new_sr()
    out = sr.update_many(*bars(path((110, 100), (100, 105), (105, 100), (100, 110))))
    np.testing.assert_array_equal(events(out["pivot_low"]), [15, 25])
    np.testing.assert_array_equal(events(out["pivot_high"]), [20])
    np.testing.assert_array_equal(events(out["double_bottom"]), [25])
    assert out["bottom_neckline"][25] == 105.5
    assert events(out["bottom_neckline"]).tolist() == [25]
    assert events(out["double_top"]).size == 0
    assert [(price, touches) for price, touches, _ in sr.levels()] == [(99.5, 2), (105.5, 1)]


def test_m_gives_a_double_top_with_its_neckline():
    out = new_sr().update_many(*mirrored(*bars(path((110, 100), (100, 105), (105, 100), (100, 110)))))
    np.testing.assert_array_equal(events(out["double_top"]), [25])
    assert out["top_neckline"][25] == 200.0 - 105.5
    assert events(out["double_bottom"]).size == 0


def test_double_bottom_needs_separation_depth_and_matching_lows():
    w = path((110, 100), (100, 105), (105, 100), (100, 110))
    assert events(new_sr(min_separation=11).update_many(*bars(w))["double_bottom"]).size == 0
    assert events(new_sr(min_depth=0.07).update_many(*bars(w))["double_bottom"]).size == 0
    lopsided = path((110, 100), (100, 105), (105, 98), (98, 110))
    assert events(new_sr().update_many(*bars(lopsided))["double_bottom"]).size == 0


def test_a_lower_intermediate_top_is_skipped_and_a_higher_one_blocks():
    skipped = path((90, 110), (110, 100), (100, 106), (106, 100), (100, 110), (110, 90))
    out = new_sr().update_many(*bars(skipped))
    assert events(out["double_top"]).size == 1
    assert out["top_neckline"][events(out["double_top"])[0]] == 99.5
    blocked = path((90, 110), (110, 100), (100, 120), (120, 100), (100, 110), (110, 90))
    assert events(new_sr().update_many(*bars(blocked))["double_top"]).size == 0


def test_repeated_touches_merge_into_one_level_with_the_touch_weighted_price():
    troughs = [100.0, 100.2, 99.9, 100.1]
    closes = [110.0]
    for t in troughs:
        closes += path((110, t))[1:] + path((t, 110))[1:]
    half_life = 500.0
    sr = new_sr(half_life=half_life)
    out = sr.update_many(*bars(closes))
    confirm = events(out["pivot_low"])
    assert len(confirm) == 4
    lows = [t - 0.5 for t in troughs]
    price = lows[0]
    for k, x in enumerate(lows[1:], start=1):
        price = (price * k + x) / (k + 1)
    decay = 0.5 ** (1.0 / half_life)
    last = len(closes) - 1
    strength = sum(decay ** (last - int(b)) for b in confirm)
    support = [lv for lv in sr.levels() if lv[0] < 105]
    assert support == [(price, 4, pytest.approx(strength, rel=1e-12))]
    assert out["support_touches"][-1] == 4.0


def breakout_series(volume_on_cross: float):
    closes = path((100, 105), (105, 100)) + [100.0] * 15 + path((100, 108))[1:]
    cross = closes.index(106.0)
    h, l, c, v = bars(closes)
    v[cross:] = volume_on_cross
    return (h, l, c, v), cross


def test_volume_confirmed_breakout_fires_once_on_the_crossing_bar():
    series, cross = breakout_series(3.0)
    out = new_sr().update_many(*series)
    np.testing.assert_array_equal(events(out["breakout"]), [cross])
    assert out["breakout"][cross] == 1 and out["breakout_level"][cross] == 105.5
    assert events(out["breakout_level"]).tolist() == [cross]
    assert out["support"][cross] == 105.5 and np.isnan(out["resistance"][cross])


def test_breakdown_mirrors_breakout():
    series, cross = breakout_series(3.0)
    out = new_sr().update_many(*mirrored(*series))
    np.testing.assert_array_equal(events(out["breakout"]), [cross])
    assert out["breakout"][cross] == -1 and out["breakout_level"][cross] == 200.0 - 105.5


def test_volume_threshold_is_against_the_mean_of_the_previous_bars():
    at_threshold, cross = breakout_series(1.5)
    assert new_sr().update_many(*at_threshold)["breakout"][cross] == 1
    below, cross = breakout_series(1.49)
    assert events(new_sr().update_many(*below)["breakout"]).size == 0


def test_unconfirmed_breakout_gives_no_event():
    series, _ = breakout_series(1.0)
    assert events(new_sr().update_many(*series)["breakout"]).size == 0


def test_tight_series_is_flagged_in_range_with_its_bounds():
    h, l, c, v = bars(np.full(60, 100.0), half_spread=0.2)
    out = new_sr().update_many(h, l, c, v)
    np.testing.assert_array_equal(out["in_range"], [0] * 29 + [1] * 31)
    assert np.isnan(out["range_high"][:29]).all()
    np.testing.assert_array_equal(out["range_high"][29:], 100.2)
    np.testing.assert_array_equal(out["range_low"][29:], 99.8)


def test_wide_swings_are_not_a_range():
    out = new_sr().update_many(*bars(path((100, 110), (110, 100)) * 3))
    assert not out["in_range"].any()


def test_flat_series_has_no_levels_and_no_division_artifacts():
    h = l = c = np.full(200, 50.0)
    out = new_sr().update_many(h, l, c, np.zeros(200))
    assert not out["n_levels"].any() and not out["breakout"].any()
    assert np.isnan(out["support"]).all() and np.isnan(out["resistance_dist"]).all()
    assert out["in_range"][29:].all() and (out["range_high"][29:] == 50.0).all()
    for f in FIELDS:
        assert not np.isinf(out[f].astype(np.float64)).any(), f


def test_decay_drops_an_unrefreshed_level_after_the_expected_number_of_bars():
    half_life, min_strength = 10.0, 0.3
    drop_after = math.ceil(half_life * math.log2(1.0 / min_strength))  # first k with 0.5**(k/10) < 0.3
    assert drop_after == 18
    closes = path((110, 100), (100, 110)) + [110.0] * 40
    out = new_sr(half_life=half_life, min_strength=min_strength).update_many(*bars(closes))
    born = 15
    alive = np.flatnonzero(out["n_levels"])
    np.testing.assert_array_equal(alive, np.arange(born, born + drop_after))
    assert out["support_strength"][born + drop_after - 1] == pytest.approx(0.5 ** ((drop_after - 1) / half_life))


def test_full_table_replaces_its_weakest_level():
    closes = [110.0]
    for t in (100.0, 90.0, 80.0):  # three separate lows, in a table of two
        closes += path((110, t))[1:] + path((t, 110))[1:]
    sr = new_sr(max_levels=2)
    sr.update_many(*bars(closes, half_spread=0.0))
    # The top at 110 is re-touched every cycle; each new low evicts the previous, weaker one.
    assert [p for p, _, _ in sr.levels()] == [80.0, 110.0]


# ------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def btc_200k(btc_1m):
    data = btc(btc_1m, 200_000)
    return data, new_sr().update_many(*data)


def test_breakouts_close_beyond_their_level_and_the_previous_close_did_not(btc_200k):
    (_, _, close, volume), out = btc_200k
    up, down = np.flatnonzero(out["breakout"] == 1), np.flatnonzero(out["breakout"] == -1)
    assert len(up) > 100 and len(down) > 100
    lvl = out["breakout_level"]
    assert (close[up] > lvl[up]).all() and (close[up - 1] <= lvl[up]).all()
    assert (close[down] < lvl[down]).all() and (close[down - 1] >= lvl[down]).all()
    both = np.concatenate([up, down])
    mean = np.array([volume[i - 20:i].mean() for i in both])
    assert (volume[both] >= 1.5 * mean * (1 - 1e-12)).all()
    assert np.isnan(lvl[out["breakout"] == 0]).all()


def test_supports_lie_below_and_resistances_above_the_close(btc_200k):
    (_, _, close, _), out = btc_200k
    s, r = out["support"], out["resistance"]
    assert (s[~np.isnan(s)] <= close[~np.isnan(s)]).all()
    assert (r[~np.isnan(r)] > close[~np.isnan(r)]).all()
    assert (out["support_dist"][~np.isnan(s)] >= 0).all() and (out["resistance_dist"][~np.isnan(r)] > 0).all()
    assert np.array_equal(np.isnan(s), np.isnan(out["support_touches"]))


@pytest.mark.parametrize("max_levels", [2, 16])
def test_live_levels_never_exceed_capacity(btc_1m, max_levels):
    out = new_sr(max_levels=max_levels).update_many(*btc(btc_1m, 200_000))
    assert out["n_levels"].max() == max_levels


def test_pivots_equal_brute_force_detection(btc_200k):
    (high, low, _, _), out = btc_200k
    n = 5
    win_h = np.lib.stride_tricks.sliding_window_view(high, 2 * n + 1)
    win_l = np.lib.stride_tricks.sliding_window_view(low, 2 * n + 1)
    mid = win_h[:, n]
    is_high = (mid > win_h[:, :n].max(axis=1)) & (mid > win_h[:, n + 1:].max(axis=1))
    mid_l = win_l[:, n]
    is_low = (mid_l < win_l[:, :n].min(axis=1)) & (mid_l < win_l[:, n + 1:].min(axis=1))
    np.testing.assert_array_equal(events(out["pivot_high"]), np.flatnonzero(is_high) + 2 * n)
    np.testing.assert_array_equal(events(out["pivot_low"]), np.flatnonzero(is_low) + 2 * n)
    np.testing.assert_array_equal(out["pivot_high"][np.flatnonzero(is_high) + 2 * n], high[is_high.nonzero()[0] + n])


@pytest.mark.parametrize("window", [2, 7, 30, 240])
def test_range_bounds_equal_rolling_max_and_min(btc_1m, window):
    pd = pytest.importorskip("pandas")
    h, l, c, v = btc(btc_1m, 100_000)
    out = new_sr(range_window=window).update_many(h, l, c, v)
    np.testing.assert_array_equal(out["range_high"], pd.Series(h).rolling(window).max().to_numpy())
    np.testing.assert_array_equal(out["range_low"], pd.Series(l).rolling(window).min().to_numpy())
    hh, ll = out["range_high"][window - 1:], out["range_low"][window - 1:]
    np.testing.assert_array_equal(out["in_range"][window - 1:], (hh - ll) <= 0.01 * c[window - 1:])


def test_double_patterns_have_a_neckline_beyond_depth(btc_200k):
    _, out = btc_200k
    tops, bottoms = np.flatnonzero(out["double_top"]), np.flatnonzero(out["double_bottom"])
    assert len(tops) > 0 and len(bottoms) > 0
    assert (out["top_neckline"][tops] <= out["pivot_high"][tops] * (1 - 0.01) * (1 + 1e-12)).all()
    assert (out["bottom_neckline"][bottoms] >= out["pivot_low"][bottoms] * (1 + 0.01) * (1 - 1e-12)).all()
    assert np.isnan(out["top_neckline"][out["double_top"] == 0]).all()


def test_two_runs_give_identical_output(btc_200k):
    data, first = btc_200k
    assert_same_outputs(new_sr().update_many(*data), first)


def test_full_btc_series_runs_and_stays_within_capacity(btc_1m):
    out = new_sr().update_many(*btc(btc_1m, len(btc_1m["close"])))
    assert out["n_levels"].max() <= 16 and (out["breakout"] != 0).sum() > 0


# ------------------------------------------------- streaming, revisions, reference

def test_streaming_update_equals_update_many(btc_1m_head):
    data = btc(btc_1m_head, 20_000)
    batch = new_sr().update_many(*data)
    sr = new_sr()
    rows = [sr.update(*map(float, bar)) for bar in zip(*data)]
    for f in FIELDS:
        one_by_one = np.array([getattr(r, f) for r in rows], dtype=batch[f].dtype)
        np.testing.assert_array_equal(one_by_one, batch[f], err_msg=f)


def test_streaming_and_batch_leave_identical_state(btc_1m_head):
    h, l, c, v = btc(btc_1m_head, 5_000)
    streamed, batched = new_sr(), new_sr()
    for bar in zip(h[:-1], l[:-1], c[:-1], v[:-1]):
        streamed.update(*map(float, bar))
    batched.update_many(h[:-1], l[:-1], c[:-1], v[:-1])
    last = (float(h[-1]), float(l[-1]), float(c[-1]), float(v[-1]))
    assert same(streamed.update(*last), batched.update(*last))
    assert same(streamed.update_last(*last), batched.update_last(*last))
    assert streamed.levels() == batched.levels()


@pytest.mark.parametrize(
    "params",
    [{}, {"pivot_bars": 3, "max_levels": 4, "half_life": 60, "merge_tol": 0.001, "min_separation": 5,
          "min_depth": 0.002, "volume_window": 7, "volume_mult": 1.2, "range_window": 12, "range_pct": 0.002}],
)
def test_streaming_matches_pure_python_reference(btc_1m_head, params):
    data = btc(btc_1m_head, 20_000)
    out = new_sr(**params).update_many(*data)
    ref = SupportResistanceRef(**levels(**params))
    rows = [ref.update(*map(float, bar)) for bar in zip(*data)]
    for f in FIELDS:
        np.testing.assert_array_equal(np.array([r[f] for r in rows], dtype=out[f].dtype), out[f], err_msg=f)


def test_update_last_equals_having_updated_with_the_revised_bar(btc_1m_head):
    h, l, c, v = btc(btc_1m_head, 3_000)
    revised, direct = new_sr(pivot_bars=3, range_window=7), new_sr(pivot_bars=3, range_window=7)
    for bar in zip(h, l, c, v):
        bar = tuple(map(float, bar))
        revised.update(bar[0] * 1.002, bar[1] * 0.998, bar[2], bar[3] * 3)
        revised.update_last(bar[0] * 1.001, bar[1] * 1.001, bar[2] * 1.001, bar[3])
        assert same(revised.update_last(*bar), direct.update(*bar))
    assert revised.levels() == direct.levels()


def test_reset_returns_to_fresh_state(btc_1m_head):
    data = btc(btc_1m_head, 3_000)
    sr = new_sr()
    first = sr.update_many(*data)
    assert sr.ready and sr.levels()
    sr.reset()
    assert not sr.ready and sr.levels() == []
    assert_same_outputs(sr.update_many(*data), first)


def test_ready_after_the_longest_warm_up():
    sr = new_sr(pivot_bars=5, range_window=30, volume_window=40)
    h, l, c, v = bars(np.full(41, 100.0))
    sr.update_many(h[:40], l[:40], c[:40], v[:40])
    assert not sr.ready
    sr.update(float(h[40]), float(l[40]), float(c[40]), float(v[40]))
    assert sr.ready


# -------------------------------------------------------------------- validation

def test_invalid_bars_are_rejected_and_state_kept(btc_1m_head):
    h, l, c, v = btc(btc_1m_head, 500)
    sr = new_sr()
    sr.update_many(h[:-1], l[:-1], c[:-1], v[:-1])
    with pytest.raises(InvalidInputError, match="close=nan"):
        sr.update(101.0, 99.0, float("nan"), 1.0)
    with pytest.raises(InvalidInputError, match=r"close=102\.0: must lie within"):
        sr.update(101.0, 99.0, 102.0, 1.0)
    with pytest.raises(InvalidInputError, match=r"high=98\.0: must be >= low"):
        sr.update(98.0, 99.0, 98.5, 1.0)
    with pytest.raises(InvalidInputError, match=r"low=0\.0: must be > 0"):
        sr.update(1.0, 0.0, 0.5, 1.0)
    with pytest.raises(InvalidInputError, match=r"volume=-1\.0"):
        sr.update_last(101.0, 99.0, 100.0, -1.0)
    with pytest.raises(InvalidInputError, match=r"volume\[1\]=inf"):
        sr.update_many([2.0, 2.0], [1.0, 1.0], [1.5, 1.5], [1.0, np.inf])
    with pytest.raises(InvalidInputError, match=r"close\[2\]=3\.0: must lie within"):
        sr.update_many([2.0] * 3, [1.0] * 3, [1.5, 1.5, 3.0], [1.0] * 3)
    with pytest.raises(InvalidInputError, match="low: length 2"):
        sr.update_many([2.0] * 3, [1.0] * 2, [1.5] * 3, [1.0] * 3)
    last = (float(h[-1]), float(l[-1]), float(c[-1]), float(v[-1]))
    fresh = new_sr()
    fresh.update_many(h[:-1], l[:-1], c[:-1], v[:-1])
    assert same(sr.update(*last), fresh.update(*last))
    assert sr.levels() == fresh.levels()


def test_update_last_before_any_bar_is_rejected():
    with pytest.raises(InvalidInputError, match="no bar to revise"):
        new_sr().update_last(2.0, 1.0, 1.5, 1.0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"pivot_bars": 0}, "pivot_bars=0"),
        ({"merge_tol": -0.1}, r"merge_tol=-0\.1"),
        ({"merge_tol": 1.0}, r"merge_tol=1\.0"),
        ({"half_life": 0}, r"half_life=0\.0"),
        ({"half_life": math.inf}, "half_life=inf"),
        ({"min_strength": 1.0}, r"min_strength=1\.0"),
        ({"min_strength": 0.0}, r"min_strength=0\.0"),
        ({"max_levels": 0}, "max_levels=0"),
        ({"max_levels": 33}, "max_levels=33"),
        ({"volume_mult": math.nan}, "volume_mult=nan"),
        ({"volume_window": 0}, "volume_window=0"),
        ({"min_separation": 0}, "min_separation=0"),
        ({"min_depth": 1.0}, r"min_depth=1\.0"),
        ({"range_window": 1}, "range_window=1"),
        ({"range_pct": -0.01}, r"range_pct=-0\.01"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        new_sr(**kwargs)
