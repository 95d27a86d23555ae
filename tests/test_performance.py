"""The metric formulas, pinned against results computed by hand on tiny series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from l2fast.evaluation import performance as metrics

MINUTE = 60_000


# ------------------------------------------------------------------ annualisation


def test_a_year_has_525600_minutes_and_365_days_because_crypto_never_closes():
    assert metrics.MINUTES_PER_YEAR == 365 * 24 * 60
    assert metrics.periods_per_year(1) == 525_600
    assert metrics.periods_per_year(1440) == 365
    assert metrics.periods_per_year(15) == 35_040


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan])
def test_periods_per_year_rejects_a_bar_length_that_is_not_positive(bad):
    with pytest.raises(ValueError, match="bar_minutes"):
        metrics.periods_per_year(bad)


def test_simple_returns_are_each_value_over_the_previous_minus_one():
    np.testing.assert_allclose(metrics.simple_returns([100.0, 110.0, 99.0, 108.9]), [0.1, -0.1, 0.1])


def test_simple_returns_reject_a_non_positive_equity():
    with pytest.raises(ValueError, match="positive"):
        metrics.simple_returns([100.0, 0.0, 50.0])


# ------------------------------------------------------------------ Sharpe, Sortino


# Equity 100 -> 110 -> 99 -> 108.9: returns +10 %, -10 %, +10 %.
# mean = 1/30; sample variance = (2 * (1/15)^2 + (2/15)^2) / 2 = 1/75; mean / std = sqrt(75) / 30
# = 1 / sqrt(12). Downside deviation = sqrt(0.1^2 / 3) = 0.1 / sqrt(3); mean / DD = 1 / sqrt(3).
KNOWN_CURVE = [100.0, 110.0, 99.0, 108.9]


def test_sharpe_of_a_known_curve_is_mean_over_sample_std_times_root_periods():
    r = metrics.simple_returns(KNOWN_CURVE)
    assert metrics.sharpe_ratio(r, 365) == pytest.approx(math.sqrt(365 / 12), rel=1e-12)
    assert metrics.sharpe_ratio(r, metrics.periods_per_year(1)) == pytest.approx(math.sqrt(525_600 / 12), rel=1e-12)


def test_sortino_of_a_known_curve_divides_by_the_downside_deviation_over_all_periods():
    r = metrics.simple_returns(KNOWN_CURVE)
    assert metrics.sortino_ratio(r, 365) == pytest.approx(math.sqrt(365 / 3), rel=1e-12)


def test_sharpe_is_undefined_for_flat_equity_or_a_single_return():
    assert metrics.sharpe_ratio([0.0, 0.0, 0.0], 365) is None
    assert metrics.sharpe_ratio([0.01], 365) is None
    assert metrics.sharpe_ratio([], 365) is None


def test_sortino_is_undefined_without_a_losing_period():
    assert metrics.sortino_ratio([0.01, 0.02, 0.0], 365) is None
    assert metrics.sortino_ratio([], 365) is None


def test_a_losing_curve_has_negative_sharpe_and_sortino():
    r = metrics.simple_returns([100.0, 99.0, 99.5, 98.0])
    assert metrics.sharpe_ratio(r, 365) < 0
    assert metrics.sortino_ratio(r, 365) < 0


# ------------------------------------------------------------------ drawdown, Calmar

# Peaks 120 then 130: drops to 90 (25 % of 120) and to 104 (20 % of 130).
DD_CURVE = [100.0, 120.0, 90.0, 130.0, 104.0, 140.0]


def test_max_drawdown_is_the_largest_drop_from_a_running_peak_as_a_fraction_of_it():
    assert metrics.max_drawdown(DD_CURVE) == pytest.approx(0.25, rel=1e-12)
    np.testing.assert_allclose(metrics.drawdown_series(DD_CURVE), [0, 0, 0.25, 0, 0.2, 0], atol=1e-15)


def test_a_rising_curve_has_no_drawdown():
    assert metrics.max_drawdown([1.0, 2.0, 3.0]) == 0.0
    assert metrics.max_drawdown([]) == 0.0


def test_annualised_return_compounds_the_period_return_to_a_year():
    # 5 periods are one year at 5 periods a year: +40 %; at 10 a year they are half a
    # year, so the year is 1.4 ** 2 - 1.
    assert metrics.annualised_return(DD_CURVE, 5) == pytest.approx(0.4, rel=1e-12)
    assert metrics.annualised_return(DD_CURVE, 10) == pytest.approx(0.96, rel=1e-12)
    # The docstring's example: +5 % over 90 days.
    ninety_days = np.linspace(100.0, 105.0, 91)
    assert metrics.annualised_return(ninety_days, 365) == pytest.approx(1.05 ** (365 / 90) - 1, rel=1e-12)
    assert metrics.annualised_return([100.0], 365) is None


def test_calmar_is_the_annualised_return_over_the_max_drawdown():
    assert metrics.calmar_ratio(DD_CURVE, 5) == pytest.approx(0.4 / 0.25, rel=1e-12)
    assert metrics.calmar_ratio(DD_CURVE, 10) == pytest.approx(0.96 / 0.25, rel=1e-12)
    assert metrics.calmar_ratio([1.0, 2.0], 5) is None


# ------------------------------------------------------------------ trades, exposure


def test_win_rate_counts_strictly_positive_trades():
    assert metrics.win_rate([10.0, -5.0, 20.0, -15.0, 0.0]) == pytest.approx(2 / 5)
    assert metrics.win_rate([]) is None


def test_profit_factor_is_gross_profit_over_gross_loss():
    assert metrics.profit_factor([10.0, -5.0, 20.0, -15.0, 0.0]) == pytest.approx(30 / 20)
    assert metrics.profit_factor([10.0, 0.0]) is None
    assert metrics.profit_factor([]) is None
    assert metrics.profit_factor([-1.0]) == 0.0


def test_exposure_is_the_mean_share_of_equity_in_positions_and_time_in_market_the_share_of_bars_held():
    gross, equity = [0.0, 50.0, 100.0], [100.0, 100.0, 200.0]
    assert metrics.exposure(gross, equity) == pytest.approx((0 + 0.5 + 0.5) / 3)
    assert metrics.time_in_market(gross) == pytest.approx(2 / 3)
    assert metrics.exposure([], []) is None
    with pytest.raises(ValueError, match="differ"):
        metrics.exposure([1.0], [1.0, 2.0])


def test_turnover_is_the_traded_notional_over_the_mean_equity():
    assert metrics.turnover(300.0, [100.0, 200.0]) == pytest.approx(2.0)


# ------------------------------------------------------------------ directional hits


def path(closes: list[float], missing: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Bars one minute apart, minutes in ``missing`` left out (a gap)."""
    keep = [i for i in range(len(closes)) if i not in missing]
    return np.array(keep, dtype=np.int64) * MINUTE, np.array([closes[i] for i in keep])


def test_hits_compare_the_close_horizon_minutes_later_with_the_calls_bar_close():
    ts, close = path([100.0, 101.0, 102.0, 101.0, 100.0, 100.0, 99.0, 99.0, 98.0])
    # buy at 0: 102 > 100 hit; sell at 3: 100 < 101 hit; buy at 4: 99 < 100 miss;
    # sell at 5: 99 < 100 hit; buy at 6: 98 < 99 miss.
    hits = metrics.directional_hits(ts, close, [0, 3, 4, 5, 6], [1, -1, 1, -1, 1], 2)
    np.testing.assert_array_equal(hits, [1.0, 1.0, 0.0, 1.0, 0.0])


def test_an_unchanged_close_is_a_miss_for_both_sides():
    ts, close = path([100.0, 100.0, 100.0])
    np.testing.assert_array_equal(metrics.directional_hits(ts, close, [0, 0], [1, -1], 2), [0.0, 0.0])


def test_a_call_whose_horizon_bar_is_missing_or_past_the_end_has_no_outcome():
    ts, close = path([100.0, 101.0, 102.0, 103.0, 104.0, 105.0], missing=(3,))
    # Minute 3 is a gap: the call at minute 1 (index 1) has no bar 2 minutes later; the
    # call at minute 4 (index 3 of the series) looks past the end; minute 2 -> minute 4 exists.
    hits = metrics.directional_hits(ts, close, [1, 3, 2], [1, 1, 1], 2)
    assert math.isnan(hits[0]) and math.isnan(hits[1])
    assert hits[2] == 1.0
    assert metrics.hit_rate(hits) == 1.0


def test_hit_rate_ignores_calls_without_outcome_and_is_undefined_without_any():
    assert metrics.hit_rate([1.0, 0.0, math.nan, 1.0]) == pytest.approx(2 / 3)
    assert metrics.hit_rate([math.nan]) is None
    assert metrics.hit_rate([]) is None


def test_directional_hits_reject_a_non_positive_horizon():
    ts, close = path([1.0, 2.0])
    with pytest.raises(ValueError, match="horizon"):
        metrics.directional_hits(ts, close, [0], [1], 0)


# ------------------------------------------------------------------ calibration


def test_calibration_sorts_calls_by_confidence_into_equal_count_groups():
    conf = [0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.8, 0.6, 0.4, 1.0, 0.55, 0.65]
    hits = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    bins = metrics.calibration(conf, hits, bins=4)
    # Sorted: (0.1 0, 0.2 1, 0.3 0) (0.4 0, 0.5 1, 0.55 1) (0.6 0, 0.65 1, 0.7 1) (0.8 1, 0.9 1, 1.0 1)
    assert [(b.low, b.high, b.count) for b in bins] == [(0.1, 0.3, 3), (0.4, 0.55, 3), (0.6, 0.7, 3), (0.8, 1.0, 3)]
    assert [b.hit_rate for b in bins] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1.0])
    assert [b.mean_confidence for b in bins] == pytest.approx([0.2, 1.45 / 3, 1.95 / 3, 0.9])


def test_calibration_gives_the_extra_calls_to_the_first_groups_and_skips_unknown_outcomes():
    conf = np.arange(11) / 10.0
    hits = np.ones(11)
    hits[5] = math.nan  # confidence 0.5 has no outcome: 10 calls remain
    bins = metrics.calibration(conf, hits, bins=4)
    assert [b.count for b in bins] == [3, 3, 2, 2]
    assert [(b.low, b.high) for b in bins] == [(0.0, 0.2), (0.3, 0.6), (0.7, 0.8), (0.9, 1.0)]


def test_calibration_of_fewer_calls_than_bins_has_one_group_per_call():
    bins = metrics.calibration([0.7, 0.6], [1.0, 0.0], bins=10)
    assert [(b.mean_confidence, b.hit_rate) for b in bins] == [(0.6, 0.0), (0.7, 1.0)]
    assert metrics.calibration([], [], bins=10) == []


# ------------------------------------------------------------------ Wilson interval


def test_wilson_interval_matches_the_textbook_values():
    # 8 of 10, z = 1.96: centre (0.8 + 1.9208 / 10) / 1.38416 = 0.71674, half-width
    # 1.96 * sqrt(0.016 + 0.0096040) / 1.38416 = 0.22658. 0 of 10: upper 2 * 0.19208 / 1.38416.
    low, high = metrics.wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=5e-5)
    low, high = metrics.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=5e-5)
    assert metrics.wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        metrics.wilson_interval(3, 2)
