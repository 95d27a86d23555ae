"""Engine inputs that look valid but used to break it (issue 16, bounded inputs): each
refusal is a typed error and leaves the engine's state exactly as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2fast import L2Config, StrategicDecision, TacticalSignalGenerator
from l2fast.errors import ConfigError, InvalidBarError, InvalidInputError, L2FastError
from l2fast.evaluation.synthetic import generate_bars

BTC, ETH = "BTC/USDT", "ETH/USDT"
MIN = 60_000
DAY = 86_400_000
T0 = 1_700_000_040_000 - 1_700_000_040_000 % DAY


def _engine(engine: dict | None = None, risk: dict | None = None) -> TacticalSignalGenerator:
    return TacticalSignalGenerator(L2Config.from_dict({
        "model": {"consensus_threshold": 0.0, "alignment_threshold": 0.0, "confidence_threshold": 0.0},
        "risk": {"kelly_win_rate": 0.55, "kelly_payoff_ratio": 1.5, **(risk or {})},
        "engine": engine or {}}))


def _decision(universe=(BTC,)) -> StrategicDecision:
    return StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="aggressive",
                             universe=list(universe))


def _bar(gen: TacticalSignalGenerator, symbol, ts: int, price: float = 100.0):
    return gen.on_bar(symbol, ts, price, price * 1.001, price * 0.999, price, 1.0)


def _state(gen: TacticalSignalGenerator):
    s = gen.export_state()
    return (s.symbols, s.decision, s.core, gen.equity, gen.cash)


def _refused(gen: TacticalSignalGenerator, error: type[Exception], match: str, call) -> None:
    before = _state(gen)
    with pytest.raises(error, match=match):
        call()
    assert _state(gen) == before


# ---------------------------------------------------------------------------------------
# symbols


def test_a_str_subclass_symbol_is_the_same_symbol() -> None:
    gen = _engine()
    gen.on_strategic_decision(_decision())
    _bar(gen, BTC, T0)
    gen.on_fill(np.str_(BTC), "buy", 1.0, 100.0, T0 + MIN)
    sig = _bar(gen, np.str_(BTC), T0 + MIN)
    assert gen.symbols == (BTC,)
    assert type(gen.symbols[0]) is str and type(sig.symbol) is str
    assert gen.position(np.str_(BTC))["qty"] == 1.0

    class Sneaky(str):
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            return False

    _bar(gen, Sneaky(BTC), T0 + 2 * MIN)
    assert gen.symbols == (BTC,)
    assert gen.position(BTC)["qty"] == 1.0


def test_a_str_subclass_symbol_keeps_the_snapshot_restorable(tmp_path) -> None:
    gen = _engine()
    _bar(gen, BTC, T0)
    _bar(gen, np.str_(BTC), T0 + MIN)
    path = gen.snapshot(tmp_path / "s.l2s")
    assert TacticalSignalGenerator.restore(path).symbols == (BTC,)


def test_symbols_outside_the_allow_list_take_no_slot() -> None:
    gen = _engine({"symbols": [BTC, ETH]})
    for k in range(14):
        _refused(gen, InvalidInputError, r"engine\.symbols", lambda k=k: _bar(gen, f"FAKE{k}/USDT", T0))
    assert gen.symbols == ()
    _bar(gen, BTC, T0)
    # L3's universe is always allowed, within the slots.
    universe = [BTC, ETH] + [f"ALT{k}/USDT" for k in range(14)]
    gen.on_strategic_decision(_decision(universe))
    assert len(gen.symbols) == 16
    _bar(gen, "ALT3/USDT", T0)


def test_without_an_allow_list_any_symbol_is_followed_until_the_slots_are_full() -> None:
    gen = _engine()
    for k in range(16):
        _bar(gen, f"C{k}/USDT", T0)
    _refused(gen, InvalidInputError, "at most 16", lambda: _bar(gen, "C99/USDT", T0))


def test_the_allow_list_is_checked_in_the_config() -> None:
    assert L2Config().engine.symbols == ()
    assert L2Config.from_dict({"engine": {"symbols": [BTC]}}).engine.symbols == (BTC,)
    for bad in (["btc/usdt"], "BTC/USDT", [BTC, BTC], [1]):
        with pytest.raises(ConfigError, match=r"engine\.symbols"):
            L2Config.from_dict({"engine": {"symbols": bad}})


# ---------------------------------------------------------------------------------------
# bar time


def test_a_far_future_bar_is_refused_and_real_bars_go_on() -> None:
    gen = _engine()
    _bar(gen, BTC, T0)
    year_9999 = 253_402_300_740_000
    _refused(gen, InvalidBarError, "after the symbol's previous bar", lambda: _bar(gen, BTC, year_9999))
    _bar(gen, BTC, T0 + MIN)
    # A new symbol is held to the engine's latest bar.
    _refused(gen, InvalidBarError, "after the engine's latest bar", lambda: _bar(gen, ETH, year_9999))
    _bar(gen, ETH, T0 + MIN)
    # The span is a setting; gaps within it pass.
    gen = _engine({"max_bar_gap_ms": DAY})
    _bar(gen, BTC, T0)
    _bar(gen, BTC, T0 + DAY)
    _refused(gen, InvalidBarError, "after the symbol's previous bar", lambda: _bar(gen, BTC, T0 + 2 * DAY + MIN))


def test_bars_ahead_of_the_wall_clock_are_refused_when_live() -> None:
    import time

    now = time.time_ns() // 1_000_000
    now -= now % MIN
    gen = _engine({"max_clock_lead_ms": 5 * MIN})
    _bar(gen, BTC, now - MIN)
    _refused(gen, InvalidBarError, "wall clock", lambda: _bar(gen, BTC, now + 10 * MIN))
    _refused(gen, InvalidBarError, "wall clock", lambda: _bar(gen, ETH, now + 10 * MIN))
    _bar(gen, BTC, now)
    # Off by default: a backtest replays any time.
    _bar(_engine(), BTC, now + 10 * DAY)


# ---------------------------------------------------------------------------------------
# fills


@pytest.fixture
def traded() -> TacticalSignalGenerator:
    gen = _engine()
    gen.on_strategic_decision(_decision([BTC, ETH]))
    _bar(gen, BTC, T0)
    _bar(gen, ETH, T0)
    gen.on_fill(BTC, "buy", 2.0, 100.0, T0 + MIN)
    return gen


@pytest.mark.parametrize("qty", [True, False, "1", None, 10**400, math.inf, -1.0, 0],
                         ids=["True", "False", "str", "None", "10**400", "inf", "-1", "0"])
def test_a_fill_qty_must_be_a_real_number_above_zero(traded, qty) -> None:
    _refused(traded, InvalidInputError, "qty", lambda: traded.on_fill(BTC, "buy", qty, 100.0, T0 + MIN))


@pytest.mark.parametrize("price, fee", [(10**400, 0.0), (1e300, 0.0), (100.0, 1e300), (100.0, 10**400)],
                         ids=["price-10**400", "price-1e300", "fee-1e300", "fee-10**400"])
def test_a_fill_notional_and_fee_are_bounded(traded, price, fee) -> None:
    _refused(traded, InvalidInputError, "notional|fee|price",
             lambda: traded.on_fill(ETH, "buy", 1.0, price, T0 + MIN, fee=fee))


def test_a_fill_far_ahead_of_the_last_bar_is_refused_and_keeps_the_halt() -> None:
    gen = _engine(risk={"daily_loss_limit": 0.01})
    gen.on_strategic_decision(_decision())
    _bar(gen, BTC, T0)
    gen.on_fill(BTC, "buy", 10.0, 100.0, T0 + MIN)
    gen.on_fill(BTC, "sell", 10.0, 80.0, T0 + MIN)
    assert gen.halted
    _refused(gen, InvalidInputError, "ts_ms", lambda: gen.on_fill(BTC, "buy", 1.0, 80.0, 253_402_300_740_000))
    assert gen.halted
    # Within the tolerance (default one day) a fill is booked.
    gen.on_fill(BTC, "buy", 1.0, 80.0, T0 + 2 * MIN)


def test_selling_more_than_the_position_is_refused_without_shorting(traded) -> None:
    _refused(traded, InvalidInputError, "position", lambda: traded.on_fill(BTC, "sell", 3.0, 100.0, T0 + MIN))
    _refused(traded, InvalidInputError, "position", lambda: traded.on_fill(ETH, "sell", 1.0, 100.0, T0 + MIN))
    # Rounding noise of L1's arithmetic closes the position exactly.
    closed = traded.on_fill(BTC, "sell", 2.0 * (1 + 1e-12), 100.0, T0 + MIN)
    assert closed["closed"] and traded.position(BTC) is None


def test_selling_past_the_position_turns_short_when_allowed() -> None:
    gen = _engine(risk={"allow_short": True})
    gen.on_strategic_decision(_decision())
    _bar(gen, BTC, T0)
    gen.on_fill(BTC, "buy", 2.0, 100.0, T0 + MIN)
    assert gen.on_fill(BTC, "sell", 3.0, 100.0, T0 + MIN)["position"] == "short"


# ---------------------------------------------------------------------------------------
# decisions


def _timed(ts_ms: int | None, exposure: float) -> StrategicDecision:
    return StrategicDecision(regime="trending", target_exposure=exposure, risk_appetite="aggressive",
                             universe=[BTC], ts_ms=ts_ms)


def test_an_older_decision_is_refused_and_the_one_in_force_stays() -> None:
    # A captured signed decision added to the bus again once L3 has moved on.
    gen = _engine()
    gen.on_strategic_decision(_timed(T0, 0.2))
    gen.on_strategic_decision(_timed(T0 + MIN, 0.9))
    _refused(gen, InvalidInputError, rf"ts_ms={T0}: older than the decision in force \(ts_ms={T0 + MIN}\)",
             lambda: gen.on_strategic_decision(_timed(T0, 0.2)))
    assert gen.decision is not None and gen.decision.target_exposure == 0.9


def test_decisions_of_the_same_time_or_without_one_are_installed() -> None:
    gen = _engine()
    gen.on_strategic_decision(_timed(T0, 0.2))
    gen.on_strategic_decision(_timed(T0, 0.4))
    assert gen.decision is not None and gen.decision.target_exposure == 0.4
    gen.on_strategic_decision(_timed(None, 0.5))
    gen.on_strategic_decision(_timed(T0 - DAY, 0.6))
    assert gen.decision.target_exposure == 0.6


# ---------------------------------------------------------------------------------------
# fuzz: only typed errors, and nothing changes on one

_SYMBOLS = st.one_of(st.sampled_from([BTC, ETH, "DOGE/USDT", "btc/usdt", "", "BTC/USDT "]),
                     st.builds(np.str_, st.sampled_from([BTC, ETH])), st.integers(), st.none(),
                     st.binary(max_size=8), st.text(max_size=12))
_NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**500, 10**500),
                     st.booleans(), st.none(), st.text(max_size=4), st.builds(np.float32, st.floats(width=32)),
                     st.builds(np.int64, st.integers(-2**63, 2**63 - 1)), st.just(100.0), st.just(1.0))
_TIMES = st.one_of(st.integers(-2**70, 2**70), st.sampled_from([T0 + k * MIN for k in range(-2, 4)]),
                   st.floats(), st.booleans(), st.none(), st.builds(np.int64, st.integers(0, 2**62)))


@pytest.fixture(scope="module")
def fuzzed() -> TacticalSignalGenerator:
    gen = _engine()
    gen.on_strategic_decision(_decision([BTC, ETH]))
    bars = generate_bars(80, seed=3, start_ts=T0 - 80 * MIN)
    for ts, o, h, lo, c, v in zip(*(bars[k].tolist() for k in ("ts", "open", "high", "low", "close", "volume"))):
        gen.on_bar(BTC, ts, o, h, lo, c, v)
    gen.on_fill(BTC, "buy", 1.0, 100.0, T0)
    return gen


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=st.one_of(
    st.tuples(st.just("bar"), _SYMBOLS, _TIMES, _NUMBERS, _NUMBERS, _NUMBERS, _NUMBERS, _NUMBERS),
    st.tuples(st.just("fill"), _SYMBOLS, st.sampled_from(["buy", "sell", "BUY", 1, None]), _NUMBERS,
              _NUMBERS, _TIMES, _NUMBERS)))
def test_fuzzed_inputs_raise_only_typed_errors_and_change_nothing_on_error(fuzzed, call) -> None:
    kind, *args = call
    before = _state(fuzzed)
    try:
        if kind == "bar":
            fuzzed.on_bar(*args)
        else:
            fuzzed.on_fill(*args[:5], fee=args[5])
    except L2FastError:
        assert _state(fuzzed) == before
