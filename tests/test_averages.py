"""SMA and EMA: TA-Lib equality on the real data, streaming/batch identity, revisions."""

from __future__ import annotations

import numpy as np
import pytest

from l2fast.errors import InvalidInputError
from l2fast.technical.indicators import EMA, SMA

from reference.averages import EMARef, SMARef

talib = pytest.importorskip("talib")

CASES = [(SMA, "SMA", SMARef), (EMA, "EMA", EMARef)]


def assert_matches_talib(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(theirs)
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-9, atol=0)


@pytest.mark.parametrize("cls,name,_ref", CASES)
@pytest.mark.parametrize("period", [2, 14, 26, 200])
def test_update_many_matches_talib_on_btc_1m(cls, name, _ref, period, btc_1m):
    close = btc_1m["close"]
    assert_matches_talib(cls(period).update_many(close), getattr(talib, name)(close, timeperiod=period))


@pytest.mark.parametrize("cls,_name,ref_cls", CASES)
def test_streaming_matches_pure_python_reference(cls, _name, ref_cls, btc_1m_head):
    ours, ref = cls(20), ref_cls(20)
    for x in btc_1m_head["close"][:3000]:
        a, b = ours.update(float(x)), ref.update(float(x))
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("cls,_name,_ref", CASES)
def test_streaming_and_batch_leave_identical_state(cls, _name, _ref, btc_1m_head):
    close = btc_1m_head["close"]
    streamed, batched = cls(14), cls(14)
    for x in close[:-1]:
        streamed.update(float(x))
    batched.update_many(close[:-1])
    assert streamed.update(float(close[-1])) == batched.update(float(close[-1]))
    assert streamed.update_last(1.5) == batched.update_last(1.5)


@pytest.mark.parametrize("cls,_name,_ref", CASES)
def test_update_last_equals_having_updated_with_the_revised_value(cls, _name, _ref, btc_1m_head):
    close = btc_1m_head["close"][:500]
    revised, direct = cls(10), cls(10)
    for x in close:
        revised.update(float(x))
        revised.update_last(float(x) * 1.01)
        revised.update_last(float(x))
        direct.update(float(x))
    assert revised.update(1.0) == direct.update(1.0)


@pytest.mark.parametrize("cls,_name,_ref", CASES)
def test_reset_returns_to_fresh_state(cls, _name, _ref, btc_1m_head):
    close = btc_1m_head["close"][:300]
    ind = cls(14)
    first = ind.update_many(close)
    assert ind.ready
    ind.reset()
    assert not ind.ready
    np.testing.assert_array_equal(ind.update_many(close), first)


@pytest.mark.parametrize("cls,_name,_ref", CASES)
def test_flat_series_gives_the_flat_value(cls, _name, _ref):
    out = cls(5).update_many(np.full(50, 42.0))
    np.testing.assert_array_equal(out[4:], 42.0)


@pytest.mark.parametrize("cls,_name,_ref", CASES)
def test_non_finite_input_is_rejected_and_state_kept(cls, _name, _ref):
    ind = cls(3)
    ind.update_many(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(InvalidInputError, match="value=nan"):
        ind.update(float("nan"))
    with pytest.raises(InvalidInputError, match=r"values\[1\]=inf"):
        ind.update_many(np.array([1.0, np.inf]))
    assert ind.update(4.0) == cls(3).update_many(np.array([1.0, 2.0, 3.0, 4.0]))[-1]


@pytest.mark.parametrize("cls,_name,_ref", CASES)
def test_period_below_two_is_rejected(cls, _name, _ref):
    with pytest.raises(InvalidInputError, match="period=1"):
        cls(1)
