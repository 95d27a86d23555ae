"""FinRL's turbulence index (``l2fast.technical.indicators.Turbulence``, issue 13 item 3).

Three references: a transcription of FinRL 0.3.7's ``FeatureEngineer.calculate_turbulence``
into the literal pandas/numpy operations it performs (``pct_change``, the window's
``isna``/``iloc``/``dropna``, ``DataFrame.cov``, ``np.mean``, ``np.linalg.pinv``), the
recordings FinRL itself made (the ``finrl_reference`` fixture of tests/conftest.py:
``build/finrl-reference``, tests/finrl/README.md; skipped when absent, except in CI), and the
pure-Python twin (tests/reference/turbulence.py).

Tolerance: 1e-9 relative. The kernel keeps running sums rebuilt exactly every window and
inverts by a Jacobi eigen-decomposition; pandas sums with Welford's updates and numpy by
LAPACK's SVD: they differ by rounding, a few ulps of each covariance entry, amplified by the
covariance's condition number (hourly BTC/ETH returns correlate at ~0.8-0.9: a 2 x 2
condition number of 10-20) and by the cancellation in ``r - mean`` (the mean is ~1e-5 of
returns ~1e-3). Measured on the real data: about 1e-13 relative.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from l2fast.errors import InvalidInputError
from l2fast.technical._turbulence import pinv_quadratic
from l2fast.technical.indicators import Turbulence

from reference.turbulence import TurbulenceRef, quadratic_form

pd = pytest.importorskip("pandas")

REL = 1e-9
HOURS = 3000  # of 2022: the transcription is O(rows) pandas calls, ~1 ms each


def finrl_turbulence(closes: np.ndarray, window: int = 252) -> np.ndarray:
    """FinRL 0.3.7's turbulence of a [dates, tickers] close table, op for op in pandas.

    FinRL selects the current row and the window by comparing dates; the dates here are the
    row numbers (unique and sorted), so positional selection picks the same rows.
    """
    returns = pd.DataFrame(closes).pct_change()
    out = [0.0] * min(window, len(returns))
    count = 0
    for i in range(window, len(returns)):
        current = returns.iloc[[i]]
        hist = returns.iloc[i - window : i]
        filtered = hist.iloc[hist.isna().sum().min() :].dropna(axis=1)
        cov = filtered.cov()
        dev = current[list(filtered)] - np.mean(filtered, axis=0)
        temp = dev.values.dot(np.linalg.pinv(cov)).dot(dev.values.T)
        if temp > 0:
            count += 1
            out.append(float(temp[0][0]) if count > 2 else 0.0)
        else:
            out.append(0.0)
    return np.asarray(out)


def hourly_closes(bars: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(hour open ts, last 1m close of the hour) of a 1m series (an hour without bars: no row)."""
    hour = bars["ts"] // 3_600_000
    last = np.r_[hour[1:] != hour[:-1], True]
    return hour[last] * 3_600_000, bars["close"][last]


@pytest.fixture(scope="module")
def btc_eth_1h(btc_1m: dict[str, np.ndarray], eth_1m: dict[str, np.ndarray]) -> np.ndarray:
    """[HOURS, 2] closes of BTC and ETH (FinRL's ticker order) on the hours both have, from 2022-01-01."""
    ts_b, close_b = hourly_closes(btc_1m)
    ts_e, close_e = hourly_closes(eth_1m)
    ts, ib, ie = np.intersect1d(ts_b, ts_e, return_indices=True)
    start = np.searchsorted(ts, 1_640_995_200_000)  # 2022-01-01 00:00 UTC
    closes = np.stack([close_b[ib], close_e[ie]], axis=1)[start : start + HOURS]
    assert len(closes) == HOURS
    return closes


def assert_turbulence_close(got: np.ndarray, want: np.ndarray, rel: float = REL) -> float:
    """Same zeros, non-zeros within ``rel``; returns the largest relative difference."""
    assert got.shape == want.shape
    np.testing.assert_array_equal(got == 0.0, want == 0.0)
    nz = want != 0.0
    worst = float(np.max(np.abs(got[nz] / want[nz] - 1.0))) if nz.any() else 0.0
    assert worst <= rel, worst
    return worst


# --------------------------------------------------------------- against FinRL


def test_btc_eth_hourly_equals_finrl_transcription(btc_eth_1h: np.ndarray) -> None:
    got = Turbulence(2).update_many(btc_eth_1h)
    want = finrl_turbulence(btc_eth_1h)
    assert_turbulence_close(got, want)
    assert (got[:254] == 0.0).all() and (got[254:] > 0.0).mean() > 0.99


def test_single_asset_btc_equals_finrl_transcription(btc_eth_1h: np.ndarray) -> None:
    btc = btc_eth_1h[:, :1]
    got = Turbulence(1).update_many(btc)
    assert_turbulence_close(got, finrl_turbulence(btc))


def test_a_short_window_equals_finrl_transcription(btc_eth_1h: np.ndarray) -> None:
    closes = btc_eth_1h[:800]
    assert_turbulence_close(Turbulence(2, window=20).update_many(closes), finrl_turbulence(closes, window=20))


@pytest.mark.parametrize("name, n_assets", [("btc_eth_turb", 2), ("btc_turb", 1)])
def test_equals_finrls_own_recording(name: str, n_assets: int, finrl_reference) -> None:
    rec = finrl_reference.scenario(name)
    columns = list(rec["frame_columns"])
    values, tics = rec["frame_values"], rec["frame_tic"]
    names = sorted(set(tics.tolist()))
    assert len(names) == n_assets
    # FinRL's frame is in (date, tic) order: one row per ticker per date.
    closes = np.stack([values[tics == t, columns.index("close")] for t in names], axis=1)
    want = values[tics == names[0], columns.index("turbulence")]
    # The recorded span: 6 months by default (~4,300 hours, the sums rebuilt ~17 times), two years
    # (17,519 hours) with reference.py --turbulence-end 2024-01-01.
    assert_turbulence_close(Turbulence(n_assets).update_many(closes), want)


# ------------------------------------------------------------------- the twin


def test_twin_agrees_on_real_hours(btc_eth_1h: np.ndarray) -> None:
    closes = btc_eth_1h[:700]
    for cols in ([0, 1], [0], [1]):
        kernel = Turbulence(len(cols))
        twin = TurbulenceRef(len(cols))
        got = np.array([kernel.update(row) for row in closes[:, cols]])
        want = np.array([twin.update(row.tolist()) for row in closes[:, cols]])
        assert_turbulence_close(got, want)


def test_five_assets_agree_with_transcription_and_twin() -> None:
    # Correlated geometric random walks: exercises Jacobi sweeps beyond the single 2 x 2 rotation.
    rng = np.random.default_rng(13)
    mix = rng.standard_normal((5, 5))
    closes = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((400, 5)) @ mix, axis=0))
    got = Turbulence(5, window=60).update_many(closes)
    assert_turbulence_close(got, finrl_turbulence(closes, window=60))
    twin = TurbulenceRef(5, window=60)
    assert_turbulence_close(got, np.array([twin.update(row.tolist()) for row in closes]))


def test_an_outlier_leaving_the_window_leaves_no_residue(btc_eth_1h: np.ndarray) -> None:
    # A 10x jump and its reversal dominate the running sums for a window; once they have
    # left, the rounding at their scale must not stay in the sums (the kernel rebuilds them
    # as the outlier leaves: 7e-14 measured; without that rebuild 7e-11, hence the 1e-12).
    closes = btc_eth_1h[:900].copy()
    closes[300:302] *= [[10.0, 1.0], [10.0, 0.2]]
    assert_turbulence_close(Turbulence(2).update_many(closes), finrl_turbulence(closes), rel=1e-12)


@pytest.mark.parametrize("n", range(1, 9))
def test_pinv_quadratic_equals_numpy_pinv(n: int) -> None:
    rng = np.random.default_rng(n)
    for rank in {n, max(n - 1, 1)}:
        a = rng.standard_normal((n, rank))
        cov = a @ a.T
        d = cov @ rng.standard_normal(n)  # in cov's range: pinv's form is then well defined
        want = float(d @ np.linalg.pinv(cov) @ d)
        assert pinv_quadratic(cov, d) == pytest.approx(want, rel=1e-9)
        assert quadratic_form(cov.tolist(), d.tolist()) == pytest.approx(want, rel=1e-9)
    assert pinv_quadratic(np.zeros((n, n)), np.ones(n)) == 0.0


# ------------------------------------------------------------------ edge cases


def test_constant_prices_give_zero() -> None:
    closes = np.full((300, 2), 50.0)
    assert (Turbulence(2).update_many(closes) == 0.0).all()
    assert (finrl_turbulence(closes) == 0.0).all()


def test_one_constant_asset_is_left_out_as_pinv_does(btc_eth_1h: np.ndarray) -> None:
    # The flat asset's returns are exactly 0: a singular covariance whose zero eigenvalue
    # pinv drops, leaving the moving asset's (r - m)^2 / var.
    closes = btc_eth_1h[:400].copy()
    closes[:, 1] = 7.0
    got = Turbulence(2).update_many(closes)
    assert_turbulence_close(got, finrl_turbulence(closes))
    assert_turbulence_close(got, Turbulence(1).update_many(closes[:, :1]))


@pytest.mark.parametrize(
    "bad",
    [[1.0, float("nan")], [float("inf"), 1.0], [0.0, 1.0], [1.0, -2.0], [1.0], [1.0, 2.0, 3.0], [[1.0, 2.0]]],
)
def test_invalid_closes_are_refused_and_change_nothing(btc_eth_1h: np.ndarray, bad: list) -> None:
    closes = btc_eth_1h[:300]
    clean = Turbulence(2).update_many(closes)
    k = Turbulence(2)
    k.update_many(closes[:280])
    with pytest.raises(InvalidInputError):
        k.update(bad)
    if np.shape(bad) == (2,):
        # A bad row among good ones: nothing of the batch is consumed.
        with pytest.raises(InvalidInputError):
            k.update_many(np.vstack([closes[280:285], [bad], closes[285:290]]))
    assert k.steps == 280
    np.testing.assert_array_equal(k.update_many(closes[280:]), clean[280:])


def test_update_many_refuses_a_wrong_shape() -> None:
    k = Turbulence(2)
    for bad in (np.ones(2), np.ones((3, 3)), np.ones((2, 2, 2))):
        with pytest.raises(InvalidInputError):
            k.update_many(bad)
    assert k.steps == 0


@pytest.mark.parametrize("kwargs", [{"n_assets": 0}, {"n_assets": 9}, {"n_assets": 2, "window": 2}])
def test_bad_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        Turbulence(**kwargs)


def test_update_equals_update_many_and_reset_restarts(btc_eth_1h: np.ndarray) -> None:
    closes = btc_eth_1h[:600]
    k = Turbulence(2)
    many = k.update_many(closes)
    assert k.ready and k.steps == 600 and k.value == many[-1]
    k.reset()
    assert not k.ready and k.steps == 0 and k.value == 0.0
    one = np.array([k.update(row) for row in closes])
    np.testing.assert_array_equal(one, many)
    k2 = Turbulence(2)
    k2.update_many(closes[:252])
    assert not k2.ready
    k2.update(closes[252])
    assert k2.ready


def test_cost_per_step_is_small(btc_eth_1h: np.ndarray) -> None:
    # Loose bound (a noisy shared machine): the kernel is O(N^2) per date, ~100 ns for N = 2.
    k = Turbulence(2)
    closes = np.tile(btc_eth_1h, (10, 1))
    start = time.perf_counter()
    k.update_many(closes)
    per_step = (time.perf_counter() - start) / len(closes)
    assert per_step < 20e-6, per_step
