"""OBV and VolumeZScore: TA-Lib/pandas equality on the real data, streaming/batch
identity, revisions, zero-volume windows, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from l2fast.errors import InvalidInputError
from l2fast.technical.indicators import OBV, VolumeZScore

from reference.volume import OBVRef, VolumeZScoreRef

talib = pytest.importorskip("talib")
pd = pytest.importorskip("pandas")


def exact_zscore(volume: np.ndarray, period: int) -> np.ndarray:
    """Two-pass z-score of each volume in its window; 0.0 on a flat window."""
    windows = sliding_window_view(volume, period)
    mean = windows.mean(axis=1)
    std = np.sqrt(((windows - mean[:, None]) ** 2).mean(axis=1))
    out = np.full(volume.shape[0], np.nan)
    flat = std == 0.0
    out[period - 1 :] = np.where(flat, 0.0, (volume[period - 1 :] - mean) / np.where(flat, 1.0, std))
    return out


# ------------------------------------------------------------------------ OBV


def test_obv_is_bit_identical_to_talib_on_btc_and_eth_1m(btc_1m, eth_1m):
    for bars in (btc_1m, eth_1m):
        np.testing.assert_array_equal(
            OBV().update_many(bars["close"], bars["volume"]), talib.OBV(bars["close"], bars["volume"])
        )


def test_obv_starts_at_the_first_volume_and_follows_the_close():
    close = np.array([10.0, 11.0, 11.0, 9.0, 12.0])
    volume = np.array([5.0, 2.0, 7.0, 3.0, 1.0])
    np.testing.assert_array_equal(OBV().update_many(close, volume), [5.0, 7.0, 7.0, 4.0, 5.0])


# ------------------------------------------------------------- volume z-score


@pytest.mark.parametrize("period", [5, 20, 100])
def test_zscore_matches_pandas_rolling_mean_and_std_on_btc_1m(period, btc_1m):
    volume = btc_1m["volume"]
    ours = VolumeZScore(period).update_many(volume)
    s = pd.Series(volume)
    std = s.rolling(period).std(ddof=0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        theirs = ((s - s.rolling(period).mean()).to_numpy()) / std
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(std))
    # pandas' running sums drift (up to ~1e-8 relative here) and leave a residue on a
    # flat window, so the tight check is against the exact two-pass z-score below.
    ok = std > 1e-6 * s.rolling(period).mean().to_numpy()
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("period", [5, 20, 100])
def test_zscore_matches_exact_two_pass_on_btc_and_eth_1m(period, btc_1m, eth_1m):
    for bars in (btc_1m, eth_1m):
        ours = VolumeZScore(period).update_many(bars["volume"])
        np.testing.assert_allclose(ours, exact_zscore(bars["volume"], period), rtol=0, atol=1e-9)


def test_zero_volume_windows_give_zero(btc_1m):
    volume = btc_1m["volume"]
    flat = np.flatnonzero(sliding_window_view(volume, 20).max(axis=1) == 0.0) + 19
    assert flat.size > 0, "the real data has a run of zero-volume bars"
    np.testing.assert_array_equal(VolumeZScore(20).update_many(volume)[flat], 0.0)


def test_flat_series_gives_zero():
    np.testing.assert_array_equal(VolumeZScore(5).update_many(np.full(50, 7.25))[4:], 0.0)
    np.testing.assert_array_equal(VolumeZScore(5).update_many(np.zeros(50))[4:], 0.0)


# ------------------------------------------------------- streaming behaviour

CASES = [
    (OBV, lambda: OBV(), lambda: OBVRef(), ("close", "volume")),
    (VolumeZScore, lambda: VolumeZScore(20), lambda: VolumeZScoreRef(20), ("volume",)),
]


def cols(fields: tuple[str, ...], bars: dict[str, np.ndarray], n: int | None = None) -> list[np.ndarray]:
    return [bars[f][:n] for f in fields]


@pytest.mark.parametrize("_cls,make,make_ref,fields", CASES)
def test_streaming_matches_pure_python_reference(_cls, make, make_ref, fields, btc_1m_head):
    data = cols(fields, btc_1m_head, 3000)
    ours, ref = make(), make_ref()
    for row in zip(*data):
        got, want = ours.update(*map(float, row)), ref.update(*map(float, row))
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("_cls,make,_ref,fields", CASES)
def test_streaming_and_batch_leave_identical_state(_cls, make, _ref, fields, btc_1m_head):
    data = cols(fields, btc_1m_head)
    streamed, batched = make(), make()
    for row in zip(*(c[:-1] for c in data)):
        streamed.update(*map(float, row))
    batched.update_many(*(c[:-1] for c in data))
    last = [float(c[-1]) for c in data]
    assert streamed.update(*last) == batched.update(*last)
    revised = [v * 1.5 for v in last]
    assert streamed.update_last(*revised) == batched.update_last(*revised)


@pytest.mark.parametrize("_cls,make,_ref,fields", CASES)
def test_batch_output_equals_streamed_outputs(_cls, make, _ref, fields, btc_1m_head):
    data = cols(fields, btc_1m_head, 3000)
    ind = make()
    streamed = np.array([ind.update(*map(float, row)) for row in zip(*data)])
    np.testing.assert_array_equal(make().update_many(*data), streamed)


@pytest.mark.parametrize("_cls,make,_ref,fields", CASES)
def test_update_last_equals_having_updated_with_the_revised_value(_cls, make, _ref, fields, btc_1m_head):
    data = cols(fields, btc_1m_head, 500)
    revised, direct = make(), make()
    for row in zip(*data):
        revised.update(*map(float, row))
        revised.update_last(*(float(v) * 1.01 + 1.0 for v in row))
        got, want = revised.update_last(*map(float, row)), direct.update(*map(float, row))
        assert got == want or (math.isnan(got) and math.isnan(want))


@pytest.mark.parametrize("_cls,make,_ref,fields", CASES)
def test_update_last_before_any_update_is_rejected(_cls, make, _ref, fields):
    with pytest.raises(InvalidInputError, match="update_last"):
        make().update_last(*([1.0] * len(fields)))


@pytest.mark.parametrize("_cls,make,_ref,fields", CASES)
def test_reset_returns_to_fresh_state(_cls, make, _ref, fields, btc_1m_head):
    data = cols(fields, btc_1m_head, 300)
    ind = make()
    first = ind.update_many(*data)
    assert ind.ready
    ind.reset()
    assert not ind.ready
    np.testing.assert_array_equal(ind.update_many(*data), first)


@pytest.mark.parametrize("_cls,make,_ref,fields", CASES)
def test_non_finite_input_is_rejected_and_state_kept(_cls, make, _ref, fields, btc_1m_head):
    data = cols(fields, btc_1m_head, 40)
    ind, twin = make(), make()
    ind.update_many(*(c[:-1] for c in data))
    twin.update_many(*(c[:-1] for c in data))
    good = [float(c[-1]) for c in data]
    for k, field in enumerate(fields):
        bad = list(good)
        bad[k] = math.nan
        with pytest.raises(InvalidInputError, match=f"{field}=nan"):
            ind.update(*bad)
        with pytest.raises(InvalidInputError, match=f"{field}=nan"):
            ind.update_last(*bad)
        arrays = [c[-5:].copy() for c in data]
        arrays[k][3] = -math.inf
        with pytest.raises(InvalidInputError, match=rf"{field}\[3\]=-inf"):
            ind.update_many(*arrays)
    assert ind.update(*good) == twin.update(*good)


def test_arrays_of_different_lengths_are_rejected():
    with pytest.raises(InvalidInputError, match="length 3"):
        OBV().update_many(np.ones(4), np.ones(3))


def test_zscore_period_below_two_is_rejected():
    with pytest.raises(InvalidInputError, match="period=1"):
        VolumeZScore(1)
