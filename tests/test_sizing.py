"""Position sizing: every factor against hand-computed values, the pure-Python twin, and
the invariants over random inputs."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2fast.config import L2Config, RiskConfig
from l2fast.decision.sizing import LiveTradeStats, PositionSizer
from l2fast.errors import InvalidInputError

from reference import config_section
from reference.sizing import LiveTradeStatsRef, size_ref

DEFAULTS = RiskConfig()
BASE = {"equity": 10_000.0, "price": 100.0, "p": 0.55, "b": 1.5, "vol": 0.6,
        "lot_step": DEFAULTS.lot_step, "min_notional": DEFAULTS.min_notional}


def sizer(**kwargs) -> PositionSizer:
    """A sizer with the config's defaults and ``kwargs``."""
    return PositionSizer(config_section(RiskConfig, **kwargs))


def size(with_sizer: PositionSizer | None = None, **kwargs):
    args = {**BASE, **kwargs}
    return (with_sizer or sizer()).size(args.pop("equity"), args.pop("price"), args.pop("p"),
                                        args.pop("b"), args.pop("vol"), **args)


# ----------------------------------------------------------------- Kelly


def test_kelly_is_kelly_fraction_of_f_star():
    r = size(p=0.55, b=1.5)
    assert r["kelly_full"] == pytest.approx(0.55 - 0.45 / 1.5)  # 0.25
    assert r["kelly"] == pytest.approx(0.25 * 0.25)
    assert size(sizer(kelly_fraction=0.5), p=0.6, b=2.0)["kelly"] == pytest.approx(0.5 * 0.4)


def test_kelly_without_edge_is_zero_and_sizes_nothing():
    r = size(p=0.4, b=1.0)  # f* = 0.4 - 0.6 = -0.2 -> 0
    assert (r["kelly_full"], r["kelly"], r["qty"], r["code"]) == (0.0, 0.0, 0.0, "NO_EDGE")


def test_kelly_with_zero_payoff_is_zero():
    assert size(p=0.9, b=0.0)["code"] == "NO_EDGE"


def test_kelly_is_at_most_one():
    assert size(p=1.0, b=3.0)["kelly_full"] == 1.0


# ----------------------------------------------------------- live statistics


def test_live_stats_win_rate_and_payoff_hand_computed():
    stats = LiveTradeStats(10)
    for r in (0.02, -0.01, 0.03, 0.0, -0.02):
        stats.add(r)
    assert (stats.count, stats.wins, stats.losses) == (5, 2, 2)
    assert stats.p == pytest.approx(2 / 5)
    assert stats.b == pytest.approx((0.05 / 2) / (0.03 / 2))


def test_live_stats_keep_only_the_window():
    stats = LiveTradeStats(3)
    for r in (-0.5, 0.01, 0.02, 0.03):
        stats.add(r)
    assert (stats.count, stats.wins, stats.losses, stats.b) == (3, 3, 0, 0.0)
    assert stats.p == 1.0


def test_live_stats_replace_manifest_metrics_after_min_trades():
    stats = LiveTradeStats(100)
    for _ in range(29):
        stats.add(0.01)
        assert stats.kelly_inputs(30, 0.55, 1.2) == (0.55, 1.2, "manifest")
    stats.add(-0.02)
    assert stats.kelly_inputs(30, 0.55, 1.2) == pytest.approx((29 / 30, 0.01 / 0.02, "live"))


def test_live_stats_reset_and_rejects_non_finite():
    stats = LiveTradeStats(5)
    stats.add(0.1)
    with pytest.raises(InvalidInputError, match="trade_return=nan"):
        stats.add(math.nan)
    assert stats.count == 1
    stats.reset()
    assert (stats.count, stats.p, stats.b) == (0, 0.0, 0.0)


def test_live_stats_match_reference_on_random_returns():
    import random

    rng = random.Random(7)
    ours, ref = LiveTradeStats(25), LiveTradeStatsRef(25)
    for _ in range(400):
        r = rng.choice([0.0, rng.gauss(0, 0.02)])
        ours.add(r)
        ref.add(r)
        assert (ours.count, ours.p, ours.b) == (ref.count, ref.p, ref.b)


# -------------------------------------------------------- volatility targeting


def test_volatility_targeting_scales_by_target_over_vol():
    r = size(vol=0.6)
    assert (r["vol_used"], r["vol_scale"]) == (0.6, pytest.approx(0.25))


def test_volatility_scale_is_capped_and_zero_vol_guarded():
    for vol in (0.0, 0.05, 0.15):
        r = size(vol=vol)
        assert (r["vol_used"], r["vol_scale"]) == (0.15, 1.0)
    r = size(sizer(max_vol_scale=2.0), vol=0.0)
    assert (r["vol_used"], r["vol_scale"]) == (0.075, 2.0)


def test_unknown_volatility_sizes_nothing():
    r = size(vol=None)
    assert (r["code"], r["qty"], r["vol"], r["vol_scale"]) == ("VOL_UNKNOWN", 0.0, None, 0.0)


# ----------------------------------------------------------------- risk parity


def test_risk_parity_is_n_times_the_inverse_volatility_weight():
    r = size(vol=0.5, other_vols=[1.0, None])  # weights 2 : 1 -> w = 2/3, N = 2
    assert r["n_universe"] == 2
    assert r["risk_parity"] == pytest.approx(4 / 3)
    assert size(vol=1.0, other_vols=[0.5])["risk_parity"] == pytest.approx(2 / 3)


def test_risk_parity_is_one_alone_or_with_equal_vols():
    assert size(vol=0.7)["risk_parity"] == 1.0
    assert size(vol=0.7, other_vols=[0.7, 0.7])["risk_parity"] == pytest.approx(1.0)


def test_risk_parity_floors_zero_vols():
    r = size(vol=0.0, other_vols=[0.0])  # both floored at 0.15
    assert r["risk_parity"] == pytest.approx(1.0)


# ----------------------------------------------------------------- correlation

OPEN = {"open_notional": [3000.0, -2000.0, 1000.0, 500.0], "open_rho": [0.5, 0.8, -0.4, None]}


def test_correlation_adjustment_counts_same_direction_exposure():
    # buy: long rho .5 -> 1500; short rho .8 hedges; long rho -.4 hedges; unknown -> 500
    r = size(direction=1, **OPEN)
    assert r["correlated_exposure"] == pytest.approx(0.2)
    assert r["correlation"] == pytest.approx(0.8)
    # sell: short rho .8 -> 1600; long rho -.4 -> 400; unknown -> 500
    r = size(direction=-1, **OPEN)
    assert r["correlated_exposure"] == pytest.approx(0.25)
    assert r["correlation"] == pytest.approx(0.75)


def test_correlation_adjustment_is_bounded_at_zero():
    r = size(open_notional=[25_000.0], open_rho=[1.0])
    assert (r["correlation"], r["qty"], r["code"]) == (0.0, 0.0, "ZERO_SCALE")


@given(rho=st.floats(-1, 1), drho=st.floats(0, 1), notional=st.floats(-20_000, 20_000), grow=st.floats(1, 3),
       direction=st.sampled_from([1, -1]))
def test_correlation_adjustment_is_monotone_and_bounded(rho, drho, notional, grow, direction):
    def factor(r, n):
        return size(direction=direction, open_notional=[n, 1000.0], open_rho=[r, 0.3])["correlation"]

    base = factor(rho, notional)
    assert 0.0 <= base <= 1.0
    aligned = direction * (1 if notional > 0 else -1)
    # More aligned correlation, or more of the same notional, never raises the factor.
    assert factor(max(-1.0, min(1.0, rho + aligned * drho)), notional) <= base
    assert factor(rho, notional * grow) <= base + 1e-15


# --------------------------------------------------- multipliers, cap, rounding


def test_multipliers_and_confidence_compose_hand_computed():
    r = size(target_exposure=0.8, risk_appetite=1.5, confidence=0.9, lot_step=0.001)
    raw = 0.0625 * 0.25 * 1.0 * 1.0 * 0.8 * 1.5 * 0.9  # 0.016875
    assert r["fraction_raw"] == pytest.approx(raw)
    assert r["notional_target"] == pytest.approx(168.75)
    assert r["qty"] == pytest.approx(1.687)  # 1.6875 rounded down to 0.001
    assert (r["target_exposure"], r["risk_appetite"], r["confidence"], r["code"]) == (0.8, 1.5, 0.9, "OK")


def test_confidence_scaling_is_optional():
    r = size(sizer(confidence_scaling=False), confidence=0.5)
    assert r["confidence"] == 1.0
    assert r["fraction_raw"] == pytest.approx(2 * size(confidence=0.5)["fraction_raw"])


def test_zero_target_exposure_sizes_nothing():
    assert size(target_exposure=0.0)["code"] == "ZERO_SCALE"


def test_fraction_is_capped_at_max_position_size():
    r = size(p=1.0, b=10.0, vol=0.1)  # kelly 0.25 x vol_scale 1
    assert (r["fraction_raw"], r["fraction"], r["capped"]) == (0.25, 0.10, True)
    assert r["notional"] <= 0.10 * 10_000.0
    assert r["qty"] == pytest.approx(10.0)


def test_qty_is_rounded_down_to_the_lot_step():
    r = size(p=1.0, b=10.0, vol=0.1, price=3.0, lot_step=0.1)  # 1000 / 3 = 333.33...
    assert r["qty"] == pytest.approx(333.3)
    assert r["qty"] * 3.0 <= 1000.0
    # 0.3 / 0.1 is 2.9999999999999996 in floating point: still three lots.
    r = size(p=1.0, b=10.0, vol=0.1, equity=3.0, price=1.0, lot_step=0.1, min_notional=0.0)
    assert r["qty"] == pytest.approx(0.3)
    assert r["qty"] * 1.0 <= r["notional_target"]


def test_below_min_notional_sizes_nothing():
    r = size(equity=500.0)  # notional target ~3.9 USDT
    assert (r["code"], r["qty"], r["notional"]) == ("BELOW_MIN_NOTIONAL", 0.0, 0.0)
    assert size(equity=500.0, min_notional=1.0)["code"] == "OK"
    assert size(lot_step=1000.0)["code"] == "BELOW_MIN_NOTIONAL"  # not one whole lot


def test_result_is_json_safe_and_reports_every_factor():
    r = size(other_vols=[0.4], **OPEN)
    json.dumps(r, allow_nan=False)
    for key in ("p", "b", "kelly_source", "kelly_full", "kelly", "vol", "vol_used", "vol_scale",
                "risk_parity", "correlated_exposure", "correlation", "target_exposure", "risk_appetite",
                "confidence", "fraction_raw", "fraction", "capped", "qty", "notional", "lot_step",
                "min_notional", "code"):
        assert key in r


def test_sizer_takes_every_field_of_the_config_risk_section():
    cfg = L2Config.from_dict({"risk": {"kelly_fraction": 0.5, "max_position_size": 0.2, "max_vol_scale": 2.0,
                                       "confidence_scaling": False}})
    assert PositionSizer(cfg.risk).params == {"kelly_fraction": 0.5, "volatility_target": cfg.risk.volatility_target,
                                              "max_position_size": 0.2, "max_vol_scale": 2.0,
                                              "confidence_scaling": False}
    assert LiveTradeStats(cfg.engine.live_stats_window).window == cfg.engine.live_stats_window


# ------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("kwargs,field", [
    ({"equity": -1.0}, "equity"), ({"equity": math.nan}, "equity"), ({"equity": 0.0}, "equity"),
    ({"price": 0.0}, "price"), ({"price": math.inf}, "price"), ({"p": 1.2}, "p"), ({"b": -0.1}, "b"),
    ({"vol": -0.1}, "vol"), ({"vol": math.nan}, "vol"), ({"direction": 0}, "direction"),
    ({"other_vols": [0.2, math.inf]}, r"other_vols\[1\]"),
    ({"open_notional": [math.nan], "open_rho": [0.1]}, r"open_notional\[0\]"),
    ({"open_notional": [1.0], "open_rho": [1.5]}, r"open_rho\[0\]"),
    ({"open_notional": [1.0], "open_rho": []}, "open_rho"),
    ({"target_exposure": 1.1}, "target_exposure"), ({"risk_appetite": -1.0}, "risk_appetite"),
    ({"confidence": 2.0}, "confidence"), ({"lot_step": 0.0}, "lot_step"),
    ({"min_notional": -1.0}, "min_notional"), ({"kelly_source": "oracle"}, "kelly_source"),
    ({"p": "high"}, "p"),
])
def test_invalid_inputs_are_rejected_naming_the_field(kwargs, field):
    with pytest.raises(InvalidInputError, match=rf"^{field}"):
        size(**kwargs)


@pytest.mark.parametrize("kwargs,field", [
    ({"kelly_fraction": 0.0}, "kelly_fraction"), ({"kelly_fraction": 1.5}, "kelly_fraction"),
    ({"volatility_target": -0.1}, "volatility_target"), ({"max_position_size": 2.0}, "max_position_size"),
    ({"max_vol_scale": math.inf}, "max_vol_scale"),
])
def test_invalid_parameters_are_rejected(kwargs, field):
    with pytest.raises(InvalidInputError, match=rf"^{field}"):
        sizer(**kwargs)


# --------------------------------------------------- twin and invariants

finite_vol = st.one_of(st.none(), st.floats(0, 5))
inputs = st.fixed_dictionaries({
    "equity": st.floats(1.0, 1e8), "price": st.floats(1e-4, 1e6), "p": st.floats(0, 1),
    "b": st.floats(0, 10), "vol": finite_vol,
    "direction": st.sampled_from([1, -1]),
    "other_vols": st.lists(finite_vol, max_size=5),
    "open": st.lists(st.tuples(st.floats(-1e6, 1e6), st.one_of(st.none(), st.floats(-1, 1))), max_size=4),
    "target_exposure": st.floats(0, 1), "risk_appetite": st.sampled_from([0.0, 0.5, 1.0, 1.5, 3.0]),
    "confidence": st.floats(0, 1), "lot_step": st.sampled_from([1e-5, 1e-3, 0.01, 0.1, 1.0]),
    "min_notional": st.sampled_from([0.0, 5.0, 10.0]),
})
params = st.fixed_dictionaries({
    "kelly_fraction": st.floats(0.01, 1), "volatility_target": st.floats(0.01, 1),
    "max_position_size": st.floats(0.01, 1), "max_vol_scale": st.floats(0.5, 4),
    "confidence_scaling": st.booleans(),
})


def _split(case: dict) -> tuple[tuple, dict]:
    kw = dict(case)
    pos = tuple(kw.pop(k) for k in ("equity", "price", "p", "b", "vol"))
    opened = kw.pop("open")
    kw["open_notional"] = [n for n, _ in opened]
    kw["open_rho"] = [r for _, r in opened]
    return pos, kw


@settings(max_examples=400, deadline=None)
@given(case=inputs, prm=params)
def test_sizing_matches_the_reference(case, prm):
    pos, kw = _split(case)
    section = config_section(RiskConfig, **prm)
    assert PositionSizer(section).size(*pos, **kw) == size_ref(section, *pos, **kw)


@settings(max_examples=400, deadline=None)
@given(case=inputs, prm=params)
def test_sizing_invariants(case, prm):
    pos, kw = _split(case)
    equity, price = pos[0], pos[1]
    r = sizer(**prm).size(*pos, **kw)
    json.dumps(r, allow_nan=False)  # finite numbers only (vol may be None)
    assert all(math.isfinite(v) for v in r.values() if isinstance(v, float))
    assert r["qty"] >= 0.0
    assert r["qty"] * price <= prm["max_position_size"] * equity
    assert r["qty"] * price <= r["notional_target"]
    assert 0.0 <= r["correlation"] <= 1.0
    assert 0.0 <= r["vol_scale"] <= prm["max_vol_scale"] * (1 + 1e-12)
    if r["qty"] > 0:
        assert r["code"] == "OK"
        assert r["notional"] >= kw["min_notional"]
        lots = r["qty"] / kw["lot_step"]
        assert abs(lots - round(lots)) < 1e-6 * max(1.0, lots)
    else:
        assert r["code"] != "OK"
