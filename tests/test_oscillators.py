"""RSI, MACD, Stochastic and ADX: TA-Lib equality on the real data, streaming/batch
identity, revisions, warm-up, validation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from l2fast.errors import InvalidInputError
from l2fast.technical.indicators import ADX, MACD, RSI, Stochastic

from reference.oscillators import ADXRef, MACDRef, RSIRef, StochasticRef

talib = pytest.importorskip("talib")


def assert_matches_talib(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(theirs)
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-9, atol=0)


def as_tuple(out: object) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def assert_same(a: object, b: object) -> None:
    """Equal outputs, bit for bit, NaN equal to NaN."""
    np.testing.assert_array_equal(np.array(as_tuple(a)), np.array(as_tuple(b)))


@dataclass(frozen=True)
class Case:
    """One indicator: how to build it, which bar fields it takes, its reference twin."""

    name: str
    make: Callable[[], object]
    fields: tuple[str, ...]
    make_ref: Callable[[], object]

    def bars(self, data: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [data[f] for f in self.fields]


CASES = [
    Case("rsi", lambda: RSI(14), ("close",), lambda: RSIRef(14)),
    Case("macd", lambda: MACD(12, 26, 9), ("close",), lambda: MACDRef(12, 26, 9)),
    Case(
        "stoch",
        lambda: Stochastic(14, 3, 3),
        ("high", "low", "close"),
        lambda: StochasticRef(14, 3, 3),
    ),
    Case("adx", lambda: ADX(14), ("high", "low", "close"), lambda: ADXRef(14)),
]
IDS = [c.name for c in CASES]


def stream(ind: object, cols: list[np.ndarray], method: str = "update") -> list[tuple]:
    step = getattr(ind, method)
    return [as_tuple(step(*(float(c[i]) for c in cols))) for i in range(len(cols[0]))]


# --------------------------------------------------------------- TA-Lib equality


@pytest.mark.parametrize("period", [14, 21, 2])
def test_rsi_matches_talib_on_btc_1m(period, btc_1m):
    close = btc_1m["close"]
    assert_matches_talib(RSI(period).update_many(close), talib.RSI(close, timeperiod=period))


@pytest.mark.parametrize("fast,slow,signal", [(12, 26, 9), (5, 35, 5), (3, 10, 1)])
def test_macd_matches_talib_on_btc_1m(fast, slow, signal, btc_1m):
    close = btc_1m["close"]
    ours = MACD(fast, slow, signal).update_many(close)
    theirs = talib.MACD(close, fastperiod=fast, slowperiod=slow, signalperiod=signal)
    for a, b in zip(ours, theirs):
        assert_matches_talib(a, b)


@pytest.mark.parametrize("fastk,slowk,slowd", [(14, 3, 3), (5, 3, 3), (1, 1, 1), (9, 1, 4)])
def test_stochastic_matches_talib_on_btc_1m(fastk, slowk, slowd, btc_1m):
    h, l, c = btc_1m["high"], btc_1m["low"], btc_1m["close"]
    ours = Stochastic(fastk, slowk, slowd).update_many(h, l, c)
    theirs = talib.STOCH(h, l, c, fastk_period=fastk, slowk_period=slowk, slowk_matype=0,
                         slowd_period=slowd, slowd_matype=0)
    for a, b in zip(ours, theirs):
        assert_matches_talib(a, b)


@pytest.mark.parametrize("period", [14, 7, 2])
def test_adx_and_directional_indices_match_talib_on_btc_1m(period, btc_1m):
    h, l, c = btc_1m["high"], btc_1m["low"], btc_1m["close"]
    adx, plus_di, minus_di = ADX(period).update_many(h, l, c)
    assert_matches_talib(adx, talib.ADX(h, l, c, timeperiod=period))
    assert_matches_talib(plus_di, talib.PLUS_DI(h, l, c, timeperiod=period))
    assert_matches_talib(minus_di, talib.MINUS_DI(h, l, c, timeperiod=period))


def test_macd_fast_ema_is_seeded_on_the_closes_ending_at_slow_minus_one():
    # TA-Lib's quirk: the fast EMA ignores closes before index slow - fast.
    x = np.array([5.0, 1.0, 9.0, 2.0, 4.0, 8.0, 3.0, 7.0])
    macd, signal, hist = MACD(3, 6, 1).update_many(x)
    assert np.isnan(macd[:5]).all()
    assert macd[5] == pytest.approx(x[3:6].mean() - x[0:6].mean(), rel=1e-12)
    assert signal[5] == macd[5] and hist[5] == 0.0


# ----------------------------------------------------- streaming and revisions


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_streaming_matches_pure_python_reference(case, btc_1m_head):
    cols = [c[:3000] for c in case.bars(btc_1m_head)]
    ours, ref = case.make(), case.make_ref()
    for i in range(len(cols[0])):
        bar = [float(c[i]) for c in cols]
        for a, b in zip(as_tuple(ours.update(*bar)), as_tuple(ref.update(*bar))):
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_streaming_equals_batch_bar_for_bar(case, btc_1m_head):
    cols = [c[:2000] for c in case.bars(btc_1m_head)]
    streamed = np.array(stream(case.make(), cols)).T
    batched = np.array(as_tuple(case.make().update_many(*cols)))
    np.testing.assert_array_equal(streamed, batched)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_streaming_and_batch_leave_identical_state(case, btc_1m_head):
    cols = case.bars(btc_1m_head)
    streamed, batched = case.make(), case.make()
    stream(streamed, [c[:-1] for c in cols])
    batched.update_many(*(c[:-1] for c in cols))
    last = [float(c[-1]) for c in cols]
    assert_same(streamed.update(*last), batched.update(*last))
    revised = [v * 1.001 for v in last]
    assert_same(streamed.update_last(*revised), batched.update_last(*revised))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_update_last_after_update_many_revises_its_last_bar(case, btc_1m_head):
    cols = [c[:500] for c in case.bars(btc_1m_head)]
    batched = case.make()
    batched.update_many(*cols)
    out = batched.update_last(*(float(c[-1]) * 0.999 for c in cols))
    direct = case.make()
    direct.update_many(*(c[:-1] for c in cols))
    assert_same(out, direct.update(*(float(c[-1]) * 0.999 for c in cols)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_update_last_equals_having_updated_with_the_revised_value(case, btc_1m_head):
    cols = [c[:500] for c in case.bars(btc_1m_head)]
    revised, direct = case.make(), case.make()
    for i in range(len(cols[0])):
        bar = [float(c[i]) for c in cols]
        revised.update(*(v * 1.01 for v in bar))
        revised.update_last(*(v * 0.98 for v in bar))
        assert_same(revised.update_last(*bar), direct.update(*bar))
    assert_same(revised.update(*bar), direct.update(*bar))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_update_last_before_any_update_is_rejected(case):
    ind = case.make()
    with pytest.raises(InvalidInputError, match="update_last"):
        ind.update_last(*([1.0] * len(case.fields)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reset_returns_to_fresh_state(case, btc_1m_head):
    cols = [c[:300] for c in case.bars(btc_1m_head)]
    ind = case.make()
    first = ind.update_many(*cols)
    assert ind.ready
    ind.reset()
    assert not ind.ready
    assert_same(ind.update_many(*cols), first)


# ------------------------------------------------------------------- warm-up


@pytest.mark.parametrize(
    "make,fields,warmup",
    [
        (lambda: RSI(14), 1, 14),
        (lambda: MACD(12, 26, 9), 1, 33),
        (lambda: Stochastic(14, 3, 3), 3, 17),
        (lambda: ADX(14), 3, 27),
    ],
    ids=IDS,
)
def test_ready_turns_true_with_the_first_complete_output(make, fields, warmup, btc_1m_head):
    ind = make()
    cols = [btc_1m_head[f][:60] for f in ("high", "low", "close")[-fields:]]
    for i in range(warmup):
        out = as_tuple(ind.update(*(float(c[i]) for c in cols)))
        assert not ind.ready
        assert np.isnan(out[0])
    out = as_tuple(ind.update(*(float(c[warmup]) for c in cols)))
    assert ind.ready and not np.isnan(out).any()


def test_adx_directional_indices_are_defined_before_adx(btc_1m_head):
    h, l, c = (btc_1m_head[f][:40] for f in ("high", "low", "close"))
    adx, plus_di, minus_di = ADX(14).update_many(h, l, c)
    assert np.isnan(plus_di[:14]).all() and not np.isnan(plus_di[14:]).any()
    assert np.isnan(minus_di[:14]).all() and not np.isnan(minus_di[14:]).any()
    assert np.isnan(adx[:27]).all() and not np.isnan(adx[27:]).any()


# ------------------------------------------------------------- flat and edges


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_flat_series_gives_zero_like_talib(case):
    flat = np.full(100, 42.0)
    outs = as_tuple(case.make().update_many(*([flat] * len(case.fields))))
    for out in outs:
        first = int(np.argmax(~np.isnan(out)))
        np.testing.assert_array_equal(out[first:], 0.0)
    theirs = {
        "rsi": lambda: (talib.RSI(flat, 14),),
        "macd": lambda: talib.MACD(flat, 12, 26, 9),
        "stoch": lambda: talib.STOCH(flat, flat, flat, 14, 3, 0, 3, 0),
        "adx": lambda: (talib.ADX(flat, flat, flat, 14), talib.PLUS_DI(flat, flat, flat, 14),
                        talib.MINUS_DI(flat, flat, flat, 14)),
    }[case.name]()
    for a, b in zip(outs, theirs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_empty_update_many_returns_empty_arrays(case):
    ind = case.make()
    for out in as_tuple(ind.update_many(*([[]] * len(case.fields)))):
        assert out.shape == (0,) and out.dtype == np.float64
    assert not ind.ready


def test_all_indicators_match_talib_on_eth_1m(eth_1m):
    h, l, c = eth_1m["high"], eth_1m["low"], eth_1m["close"]
    assert_matches_talib(RSI(14).update_many(c), talib.RSI(c))
    for a, b in zip(MACD(12, 26, 9).update_many(c), talib.MACD(c)):
        assert_matches_talib(a, b)
    for a, b in zip(Stochastic(14, 3, 3).update_many(h, l, c), talib.STOCH(h, l, c, 14, 3, 0, 3, 0)):
        assert_matches_talib(a, b)
    theirs = (talib.ADX(h, l, c), talib.PLUS_DI(h, l, c), talib.MINUS_DI(h, l, c))
    for a, b in zip(ADX(14).update_many(h, l, c), theirs):
        assert_matches_talib(a, b)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_non_finite_input_is_rejected_and_state_kept(case, btc_1m_head):
    cols = [c[:100] for c in case.bars(btc_1m_head)]
    ind, ref = case.make(), case.make()
    ind.update_many(*(c[:-1] for c in cols))
    ref.update_many(*(c[:-1] for c in cols))
    good = [float(c[-1]) for c in cols]
    for pos, field in enumerate(case.fields):
        bad = list(good)
        bad[pos] = float("nan")
        with pytest.raises(InvalidInputError, match=f"{field}=nan"):
            ind.update(*bad)
        with pytest.raises(InvalidInputError, match=f"{field}=nan"):
            ind.update_last(*bad)
        arrays = [np.array([g, g]) for g in good]
        arrays[pos][1] = np.inf
        with pytest.raises(InvalidInputError, match=rf"{field}s\[1\]=inf"):
            ind.update_many(*arrays)
    assert_same(ind.update(*good), ref.update(*good))


@pytest.mark.parametrize("make", [lambda: Stochastic(14, 3, 3), lambda: ADX(14)], ids=["Stochastic", "ADX"])
def test_update_many_rejects_arrays_of_different_lengths(make):
    with pytest.raises(InvalidInputError, match="lows: length 2"):
        make().update_many([1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: RSI(1), "period=1"),
        (lambda: MACD(1, 26, 9), "fast=1"),
        (lambda: MACD(12, 1, 9), "slow=1"),
        (lambda: MACD(12, 26, 0), "signal=0"),
        (lambda: MACD(26, 12, 9), "slow=12: must be greater than fast=26"),
        (lambda: MACD(12, 12, 9), "slow=12"),
        (lambda: Stochastic(0, 3, 3), "fastk_period=0"),
        (lambda: Stochastic(14, 0, 3), "slowk_period=0"),
        (lambda: Stochastic(14, 3, 0), "slowd_period=0"),
        (lambda: ADX(1), "period=1"),
    ],
)
def test_invalid_parameters_are_rejected(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make()
