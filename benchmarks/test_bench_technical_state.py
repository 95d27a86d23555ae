"""The whole technical state per new 1-minute bar: ``TechnicalState.update`` against the
alternatives of ``alternatives.py``.

Each implementation is warmed on the first ``WARM`` real BTC bars, then timed one
``update`` per round on the consecutive bars that follow (so rounds that close a 5m, 15m
or 1h bar are included at their natural rate and show in p99). Before and after timing,
every implementation's outputs are checked against TA-Lib's batch functions on the
same bars (ours too, by feature name), so the comparison is between implementations
computing the same numbers.

``TechnicalState`` computes far more per bar (Stochastic, ADX, Donchian, volume, realized
volatility, candlesticks, levels) and validates each bar; the alternatives compute only
RSI14/21, MACD, BB and ATR, and trust their input.

Gates (alternative median / l2fast median) sit at roughly half the ratio measured on the
2-core development machine; ``target`` is the aspirational ratio.
"""

from __future__ import annotations

import math

import alternatives as alt
import numpy as np
import pytest

from l2fast.technical.state import TechnicalConfig, TechnicalState

WARM = 50_000
OURS_TARGET_S = 3e-6
COLUMNS = ("ts", "open", "high", "low", "close", "volume")

# impl: (rounds, warm-up rounds, gate, target)
CASES: dict[str, tuple[int, int, float | None, float | None]] = {
    "l2fast.TechnicalState": (20_000, 500, None, None),
    "talib.stream": (4_000, 100, 1.4, 10.0),
    "talipp": (1_000, 20, 10.0, 50.0),
    "pandas+ta": (20, 1, 2400.0, 3000.0),
}
ALTERNATIVES = {
    "talib.stream": alt.TalibStreamState,
    "talipp": alt.TalippState,
    "pandas+ta": alt.PandasTaState,
}


@pytest.fixture(scope="module")
def history(btc_1m) -> list[list]:
    """The warm-up bars as Python lists, one per column."""
    return [btc_1m[k][:WARM].tolist() for k in COLUMNS]


@pytest.fixture(scope="module")
def live_bars(btc_1m) -> list[tuple]:
    """The bars after the warm-up, as the ``(ts, o, h, l, c, v)`` tuples a feed delivers."""
    n = max(rounds + warm for rounds, warm, _, _ in CASES.values())
    return list(zip(*(btc_1m[k][WARM : WARM + n].tolist() for k in COLUMNS)))


@pytest.fixture(scope="module")
def expected(btc_1m) -> dict[tuple[str, str], float]:
    """Every alternative's outputs after the warm-up, from TA-Lib's batch functions."""
    pytest.importorskip("talib")
    return alt.expected_values(btc_1m, WARM)


def _technical_state(btc_1m: dict[str, np.ndarray]) -> TechnicalState:
    state = TechnicalState(TechnicalConfig())
    state.update_many(*(btc_1m[k][:WARM] for k in COLUMNS))
    return state


@pytest.mark.parametrize("impl", list(CASES))
def test_technical_state_per_1m_bar(bench, btc_1m, history, live_bars, expected, impl: str) -> None:
    rounds, warmup_rounds, gate, target = CASES[impl]
    if impl.startswith("l2fast"):
        state = _technical_state(btc_1m)

        def value(name: str, tf: str) -> float:
            return state.get(f"{name}_{tf}")

        b = bench("state per 1m bar", impl, ours_target_s=OURS_TARGET_S, percentiles=True)
    else:
        state = ALTERNATIVES[impl]()
        state.warm_up(*history)
        value = state.value
        b = bench("state per 1m bar", impl, gate=gate, target=target, percentiles=True)
    _check_outputs(impl, value, expected)

    bars = iter(live_bars)

    def next_bar() -> tuple[tuple, dict]:
        return next(bars), {}

    b.pedantic(state.update, setup=next_bar, rounds=rounds, warmup_rounds=warmup_rounds)
    # The timed streaming path must have kept computing the same numbers.
    _check_outputs(impl, value, alt.expected_values(btc_1m, WARM + warmup_rounds + rounds))


def _check_outputs(impl: str, value, expected: dict[tuple[str, str], float]) -> None:
    wrong = {
        key: (value(*key), want)
        for key, want in expected.items()
        if not math.isclose(value(*key), want, rel_tol=1e-6, abs_tol=1e-12)
    }
    assert not wrong, f"{impl} does not compute the compared indicators as TA-Lib does: {wrong}"
