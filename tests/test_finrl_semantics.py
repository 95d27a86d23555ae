"""A member with a manifest ``finrl`` block requests FinRL's shares; sizing and the gate only lower them.

The request is checked against the pure-Python twin of FinRL's rule (tests/reference/sizing.py)
on the member's own action, the engine's cash and holdings; the signal's quantity against the
request and the sizing result, with a paper L1 filling every signal at the bar's close.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from test_engine import _rows
from test_observation import _box_member

from l2fast.config import L2Config
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.signals import StrategicDecision

from reference.sizing import finrl_shares_ref

BTC = "BTC/USDT"
# action = tanh(0.08 * (rsi - 50)): with hmax 2, one share bought above RSI 57, sold below 43.
FEATURES = ["cash", "close", "holdings", "rsi_14_1m"]
FINRL = {"env": "stocktrading", "tickers": [BTC], "hmax": 2, "buy_cost_pct": [0.001], "sell_cost_pct": [0.001],
         "initial_amount": 1e6}


def _alone(models_copy: Path, features: list[str], weights: np.ndarray, bias: np.ndarray, engine: dict,
           risk: dict, **manifest: object) -> TacticalSignalGenerator:
    """An engine whose only member is a one-layer FinRL agent, with the vote's gates open."""
    _box_member(models_copy, "finrl_agent", features, 1, seed=11, weights=weights, bias=bias, **manifest)
    config = L2Config.from_dict({
        "model": {"models_dir": str(models_copy), "weights": {"finrl_agent": 1.0}, "consensus_threshold": 0.0,
                  "confidence_threshold": 0.0, "alignment_threshold": 0.0, "technical_weight": 0.0},
        "engine": {"initial_equity": 1e6, **engine},
        "risk": {"kelly_win_rate": 0.7, "kelly_payoff_ratio": 2.0, "max_position_size": 0.5, "kelly_fraction": 1.0,
                 **risk},
    })
    gen = TacticalSignalGenerator(config)
    gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=1.0, risk_appetite="aggressive",
                                                universe=[BTC]))
    return gen


@pytest.fixture
def gen(models_copy: Path) -> TacticalSignalGenerator:
    return _alone(models_copy, FEATURES, np.array([[0.0, 0.0, 0.0, 0.08]]), np.array([-4.0]),
                  {"live_stats_window": 10_000}, {"min_trades_for_live_stats": 10_000}, finrl=FINRL)


def test_signals_request_finrls_shares_and_never_exceed_them(gen, btc_1m) -> None:
    seen = {"ENTRY": 0, "EXIT": 0, "NO_SHARES": 0, "bound": 0}
    for row in _rows(btc_1m, 0, 30_000):
        held = (gen.position(BTC) or {"qty": 0.0, "side": "long"})
        cash = gen.cash
        signal = gen.on_bar(BTC, *row)
        reasoning = signal.reasoning
        if "finrl" not in reasoning:
            assert reasoning["code"] not in ("NO_SHARES",)
            continue
        member = reasoning["finrl"]["members"]["finrl_agent"]
        want = finrl_shares_ref(member["action"], FINRL["hmax"], row[4], cash,
                                held["qty"] if held["side"] == "long" else 0.0, 0.001)
        assert member["shares"] == want
        requested = reasoning["finrl"]["requested"]
        assert requested == abs(want)
        code = reasoning["code"]
        seen[code] = seen.get(code, 0) + 1
        if code == "NO_SHARES":
            assert requested == 0 and signal.qty == 0
        elif code == "ENTRY":
            assert 0 < signal.qty <= min(requested, reasoning["sizing"]["qty"])
            seen["bound"] += signal.qty == requested < reasoning["sizing"]["qty"]
        elif code == "EXIT":
            assert 0 < signal.qty <= min(requested, held["qty"])
        if signal.side != "hold":
            # A paper L1: the signal fills at the bar's close.
            gen.on_fill(BTC, str(signal.side), signal.qty, row[4], row[0] + 60_000, fee=signal.qty * row[4] * 0.001)
    assert seen["ENTRY"] > 0 and seen["EXIT"] > 0 and seen["NO_SHARES"] > 0 and seen["bound"] > 0, seen


def test_an_hourly_finrl_member_trades_only_at_its_decisions(models_copy: Path, btc_1m) -> None:
    # Flat: buy 3; holding 3: sell 1 (action = tanh(1.5 - 0.633 * holdings), hmax 4). FinRL
    # sells one share per hour; the standing vote between the hours must not sell again.
    gen = _alone(models_copy, ["holdings"], np.array([[-0.633]]), np.array([1.5]), {}, {"exposure_limit": 1.0},
                 decision_timeframe="1h", finrl={**FINRL, "hmax": 4})
    trades: list[tuple[str, float]] = []
    for row in _rows(btc_1m, 0, 3_000):
        signal = gen.on_bar(BTC, *row)
        if signal.side == "hold":
            continue
        assert (row[0] + 60_000) % 3_600_000 == 0, f"{row[0]}: traded off the hour: {signal.reasoning}"
        assert signal.qty <= signal.reasoning["finrl"]["requested"]
        gen.on_fill(BTC, str(signal.side), signal.qty, row[4], row[0] + 60_000)
        trades.append((str(signal.side), signal.qty))
    # Then holding 2 the action truncates to 0 shares: no trade, as in FinRL.
    assert trades == [("buy", 3.0), ("sell", 1.0)] and gen.position(BTC)["qty"] == 2.0
