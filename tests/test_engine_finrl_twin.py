"""Issue 13's engine against its pure-Python twin (tests/reference/engine.py) on real BTC and ETH.

One ensemble uses every new part at once: the shipped members, a FinRL-style single-asset Box
member (account features, scales, a past value, the turbulence index, ``decision_timeframe``
1h, a ``finrl`` block) and a multi-asset Box member (``<feature>@<SYMBOL>`` names, other
symbols' past values, FinRL tickers BTC/ETH, 1h), with FinRL's turbulence index over BTC and
ETH gating entries and exiting positions. A third symbol (SOL, ETH's bars scaled) is one the
multi-asset member does not trade. Some hour-closing minutes are missing from one symbol or
the other, so the multi-asset member and the index wait for the bar both symbols share.

The compiled engine and the twin stream the same bars, a paper L1 fills both with their own
signals, and each signal must agree: side, code, quantity, stops, confidence and consensus,
the sizing and risk dicts, ``reasoning["finrl"]`` and ``reasoning["turbulence"]``, and each
member's status and target in the vote (the observations each member read). The twin computes
the index with its own arithmetic (tests/reference/turbulence.py), so the index's value is
compared to 1e-9 relative, as tests/test_turbulence.py does.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")

from test_engine import _EXACT, _PROBS, _Fills, _RefAdapter, _view
from test_observation import _box_member

from l2fast.config import L2Config
from l2fast.data import models_dir
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.signals import StrategicDecision

from reference.engine import EngineRef

BTC, ETH, SOL = "BTC/USDT", "ETH/USDT", "SOL/USDT"
HOUR = 3_600_000
MINUTE = 60_000

# FinRL-style single-asset member: account state scaled as env_stocktrading_np and the crypto
# env scale it, RSI now and two hours back, the index. action = tanh(w . obs + b) leans on
# RSI momentum; every column has a weight, so a wrong value moves the action.
SINGLE = ["cash", "close", "holdings", "position_fraction", "unrealized_pnl", "rsi_14", "rsi_14[-2]", "turbulence"]
SINGLE_W = [[1e-4, 1e-3, -0.2, -0.5, 1e-5, 0.06, -0.03, -0.05]]
SINGLE_SCALES = {"cash": 2.0 ** -12, "holdings": 2.0 ** -3, "close": 1e-3}
# Multi-asset member (FinRL's order: cash, then per-asset blocks): each dimension follows its
# symbol's last hour's move (close against close[-1]) and RSI.
PAIR = ["cash", "close@BTC/USDT", "close@ETH/USDT", "holdings@BTC/USDT", "holdings@ETH/USDT", "rsi_14@BTC/USDT",
        "rsi_14@ETH/USDT", "close[-1]@BTC/USDT", "close[-1]@ETH/USDT", "turbulence"]
PAIR_W = [[1e-6, 0.007, 0.0, -0.05, 0.0, 0.02, 0.0, -0.007, 0.0, -0.05],
          [1e-6, 0.0, 0.1, 0.0, -0.05, 0.0, 0.02, 0.0, -0.1, -0.05]]
# With a 2e5 account, FinRL's cash cap (cash // (price * (1 + cost))) binds buys of BTC, and of
# ETH at the pair member's 50 % cost: a member reading the wrong ticker's cost asks otherwise.
HMAX = {"finrl_agent": 20, "pair_agent": 60}


def _finrl(tickers: list[str], hmax: int, costs: list[float]) -> dict:
    return {"env": "stocktrading", "tickers": tickers, "hmax": hmax, "buy_cost_pct": costs, "sell_cost_pct": costs,
            "initial_amount": 1e6}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finrl_twin") / "models"
    shutil.copytree(models_dir(), out)
    _box_member(out, "finrl_agent", SINGLE, 1, seed=1, weights=np.array(SINGLE_W), bias=np.array([-1.3]),
                decision_timeframe="1h", feature_scales=SINGLE_SCALES,
                finrl=_finrl([BTC], HMAX["finrl_agent"], [0.001]))
    _box_member(out, "pair_agent", PAIR, 2, seed=2, weights=np.array(PAIR_W), bias=np.array([-1.0, -1.0]),
                decision_timeframe="1h", feature_scales={"cash": 2.0 ** -18},
                finrl=_finrl([BTC, ETH], HMAX["pair_agent"], [0.001, 0.5]))
    return out


def _config(folder: Path, inference: str) -> L2Config:
    weights = {**L2Config().model.weights, "finrl_agent": 2.0, "pair_agent": 2.0}
    return L2Config.from_dict({
        "model": {"models_dir": str(folder), "weights": weights, "inference": inference,
                  "consensus_threshold": 0.0, "alignment_threshold": 0.0, "confidence_threshold": 0.0},
        "engine": {"initial_equity": 2e5},
        "technical": {"turbulence_symbols": [BTC, ETH], "turbulence_timeframe": "1h", "turbulence_window": 12},
        "risk": {"kelly_win_rate": 0.55, "kelly_payoff_ratio": 1.5, "allow_short": True, "max_daily_trades": 50,
                 "atr_multiplier": 8.0, "turbulence_threshold": 6.0,
                 # Lots of 3 to 4 significant digits: the compiled forward's probabilities
                 # (within ~1e-6 of onnxruntime's) rarely round an entry to the next lot.
                 "symbols": {BTC: {"lot_step": 0.001}, ETH: {"lot_step": 0.01}, SOL: {"lot_step": 0.1}}},
    })


def _streams(btc_1m: dict, eth_1m: dict, n: int, offset: int) -> list[tuple[str, tuple]]:
    """``n`` minutes both series have, ``offset`` minutes before their end, in (symbol, bar)
    order: BTC, ETH, SOL per minute; a few hour-closing minutes left out of ETH or BTC."""
    ts = np.intersect1d(btc_1m["ts"], eth_1m["ts"])
    ts = ts[len(ts) - n - offset:len(ts) - offset]
    bars = {}
    for symbol, data in ((BTC, btc_1m), (ETH, eth_1m)):
        keep = np.isin(data["ts"], ts)
        cols = [data[k][keep].tolist() for k in ("ts", "open", "high", "low", "close", "volume")]
        bars[symbol] = {row[0]: row for row in zip(*cols)}
    # SOL: ETH's bars at a twentieth of the price (a symbol the multi-asset member does not trade).
    bars[SOL] = {t: (t, o / 20, h / 20, lo / 20, c / 20, v * 20) for t, (_, o, h, lo, c, v) in bars[ETH].items()}
    closes = [int(t) for t in ts[len(ts) // 2:] if (t + MINUTE) % HOUR == 0]
    for k, t in enumerate(closes[::6]):
        del bars[ETH if k % 2 else BTC][t]
    return [(s, bars[s][t]) for t in ts.tolist() for s in (BTC, ETH, SOL) if t in bars[s]]


def _close(got: Any, want: Any, tol: float, where: str) -> None:
    """``got`` equals ``want`` (the twin's), floats within ``tol`` relative; ``want``'s keys only."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {got!r} != {want!r}"
        for key, value in want.items():
            _close(got.get(key), value, tol, f"{where}.{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for k, (a, b) in enumerate(zip(got, want)):
            _close(a, b, tol, f"{where}[{k}]")
    elif isinstance(want, float) and isinstance(got, float):
        assert got == want or abs(got - want) <= tol * max(1.0, abs(want)), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _compare(got: dict, reasoning: dict, exp: dict, tol: float, where: str) -> None:
    assert (got["side"], got["code"]) == (exp["side"], exp["code"]), where
    for key in ("qty", "stop_loss", "take_profit"):
        _close(got[key], exp[key], _EXACT, f"{where}: {key}")
    for key in ("confidence", "consensus"):
        assert abs(got[key] - exp[key]) <= tol, f"{where}: {key} {got[key]} != {exp[key]}"
    # Quantities, prices and the index exact to 1e-9; what is made from confidence within tol.
    _close(reasoning.get("risk"), exp.get("risk"), _EXACT, f"{where}: risk")
    _close(reasoning.get("sizing"), exp.get("sizing"), max(tol, _EXACT), f"{where}: sizing")
    _close(reasoning.get("turbulence"), exp.get("turbulence"), _EXACT, f"{where}: turbulence")
    assert ("finrl" in reasoning) == (exp.get("finrl") is not None), f"{where}: finrl {reasoning.get('finrl')}"
    if exp.get("finrl") is not None:
        finrl = reasoning["finrl"]
        assert finrl["members"].keys() == exp["finrl"]["members"].keys(), where
        for name, member in exp["finrl"]["members"].items():
            assert finrl["members"][name]["shares"] == member["shares"], f"{where}: {name} {finrl} {exp['finrl']}"
            assert abs(finrl["members"][name]["action"] - member["action"]) <= tol, f"{where}: {name} action"
        _close(finrl["requested"], exp["finrl"]["requested"], _EXACT, f"{where}: finrl.requested")
    if "members" in exp:
        for name, member in exp["members"].items():
            mine = reasoning["vote"]["members"][name]
            assert mine["status"] == member["status"], f"{where}: {name} {mine} {member}"
            assert abs(mine["target"] - member["target"]) <= tol, f"{where}: {name} {mine} {member}"
            assert abs(mine["weight"] - member["weight"]) <= _EXACT, f"{where}: {name} {mine} {member}"


def _exercised(exp: dict, symbol: str) -> list[str]:
    seen = [exp["code"]]
    finrl = exp.get("finrl")
    if finrl is not None:
        if exp["code"] in ("ENTRY", "EXIT") and exp["qty"] == finrl["requested"]:
            seen.append(f"{exp['code']}:request")  # the request bound the quantity
        elif exp["code"] in ("ENTRY", "EXIT") and exp["qty"] < finrl["requested"]:
            seen.append(f"{exp['code']}:below_request")  # sizing or the gate lowered it
        for name, member in finrl["members"].items():
            asked = int(np.float32(member["action"]) * np.float32(HMAX[name]))
            if 0 < member["shares"] < asked:
                seen.append(f"cash_cap:{name}:{symbol}")  # FinRL's cash // (price * (1 + cost))
    if exp.get("turbulence") is not None:
        seen.append("EXIT:turbulence")
    for name, member in exp.get("members", {}).items():
        if member["status"] != "ok":
            seen.append(f"left_out:{name}:{symbol}")
    return seen


# The compiled forward gives the shipped members' probabilities within ~1e-6 of onnxruntime's
# (tests/test_engine.py), so a sizing near a lot boundary may round to the neighbouring lot and
# the two runs part ways: these spans are ones where that does not happen on either path.
SPANS = [(7_000, 0), (7_000, 60_000)]


@pytest.mark.parametrize("inference, tol", [("compiled", _PROBS), ("onnxruntime", _EXACT)])
@pytest.mark.parametrize("n, offset", SPANS, ids=[f"{n}m-{off}m-before-the-end" for n, off in SPANS])
def test_finrl_members_turbulence_and_cadence_equal_the_pure_python_twin(folder, btc_1m, eth_1m, inference, tol,
                                                                          n, offset) -> None:
    cfg = _config(folder, inference)
    gen = TacticalSignalGenerator(cfg)
    ref = EngineRef(cfg, list(gen.ensemble.members), gen.voting_params, gen.warmup_bars, [BTC, ETH, SOL])
    decision = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="aggressive",
                                 universe=[BTC, ETH, SOL])
    gen.on_strategic_decision(decision)
    ref.on_decision(decision)
    fills_gen, fills_ref = _Fills(), _Fills()
    seen: Counter[str] = Counter()
    for k, (symbol, bar) in enumerate(_streams(btc_1m, eth_1m, n, offset)):
        fills_gen.before_bar(symbol, bar, [gen])
        fills_ref.before_bar(symbol, bar, [_RefAdapter(ref)])
        signal = gen.on_bar(symbol, *bar)
        got = _view(signal)
        exp = ref.on_bar(symbol, *bar)
        _compare(got, signal.reasoning, exp, tol, f"{symbol} bar {k} ts {bar[0]}")
        fills_gen.after_signal(symbol, got)
        fills_ref.after_signal(symbol, exp)
        seen.update(_exercised(exp, symbol))
    assert math.isclose(gen.equity, ref.risk.equity, rel_tol=1e-12)
    index = gen.turbulence
    assert index is not None and index["dates"] == ref.turb.steps
    assert index["value"] == pytest.approx(ref.turbulence, rel=_EXACT, abs=1e-12)
    seen.update(ref.counts)
    # Every feature ran: FinRL's requests bound entries and exits and held NO_SHARES, sizing
    # lowered a request, FinRL's cash cap (with each ticker's cost) bound buys, the index
    # denied entries and exited positions, the multi-asset member sat out SOL always and BTC
    # before its first action, and acted late after a missing minute; both ran hourly.
    want = {"ENTRY", "EXIT", "NO_SHARES", "TURBULENCE", "ENTRY:request", "ENTRY:below_request", "EXIT:request",
            "EXIT:turbulence", f"cash_cap:pair_agent:{ETH}", f"cash_cap:finrl_agent:{BTC}",
            f"left_out:pair_agent:{SOL}", f"left_out:pair_agent:{BTC}", "late:pair_agent"}
    assert want <= set(seen), sorted(want - set(seen))
    assert seen["run:finrl_agent"] > 100 and seen["run:pair_agent"] > 50 and seen["turbulence_steps"] > 100
