"""Pure-Python twin of the engine's per-bar flow (:mod:`l2fast.engine.generator`), built from the
other twins: every member run alone on its own onnxruntime session, :class:`VoterRef`,
:func:`size_ref`, :class:`RiskGateRef`, :class:`LiveTradeStatsRef` and
:class:`RollingCorrelationRef`. The technical features come from the compiled
:class:`~l2fast.technical.state.TechnicalState`, whose every value is checked against TA-Lib and
pandas elsewhere.

:meth:`EngineRef.on_bar` returns the signal as a plain dict of the fields that matter to
L1 (side, qty, stop_loss, take_profit, confidence, consensus, code) plus the sizing and
risk dicts when they ran, so the compiled engine can be streamed beside it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from l2fast.config import L2Config
from l2fast.decision._voting import GATE_CODES
from l2fast.decision.voting import VotingParams
from l2fast.models.loading import LoadedModel
from l2fast.signals import StrategicDecision
from l2fast.technical.state import TechnicalState

from reference.risk import RiskGateRef
from reference.sizing import LiveTradeStatsRef, size_ref
from reference.statistics import RollingCorrelationRef
from reference.voting import VoterRef

# The gate names are the kernel's (names, not behaviour: VoterRef computes the gate itself).
GATES = {0: None, **dict(GATE_CODES)}
SIDES = {1: "buy", -1: "sell", 0: "hold"}


def _known(x: float) -> float | None:
    return x if math.isfinite(x) else None


class EngineRef:
    """The engine over a fixed universe ``symbols`` (in the order the engine first sees them)."""

    def __init__(self, config: L2Config, members: list[LoadedModel], params: VotingParams,
                 warmup: int, symbols: list[str]) -> None:
        self.config = config
        self.members = {m.name: m for m in members}
        self.params = params
        self.warmup = warmup
        self.symbols = list(symbols)
        risk = config.risk
        self.risk = RiskGateRef(symbols, config.engine.initial_equity, risk)
        self.stats = LiveTradeStatsRef(config.engine.live_stats_window)
        self.states = {s: TechnicalState(config.technical) for s in symbols}
        self.voters = {s: VoterRef(params) for s in symbols}
        self.bars = dict.fromkeys(symbols, 0)
        self.last: dict[str, tuple[int, float]] = {}
        self.corr = {(a, b): RollingCorrelationRef(risk.correlation_window)
                     for i, a in enumerate(symbols) for b in symbols[i + 1:]}
        self.rho: dict[tuple[str, str], float] = {}
        self.decision: StrategicDecision | None = None

    def _pair(self, a: str, b: str) -> tuple[str, str]:
        return (a, b) if self.symbols.index(a) < self.symbols.index(b) else (b, a)

    def on_decision(self, decision: StrategicDecision) -> None:
        self.decision = decision

    def _kelly(self) -> tuple[float, float]:
        risk = self.config.risk
        if risk.kelly_win_rate is not None:
            return risk.kelly_win_rate, risk.kelly_payoff_ratio
        weights = self.config.model.effective_weights(self.decision.regime)
        p = sum(w * self.members[n].manifest["performance_metrics"]["win_rate"] for n, w in weights.items())
        b = sum(w * self.members[n].manifest["performance_metrics"]["payoff_ratio"] for n, w in weights.items())
        return min(max(p, 0.0), 1.0), max(b, 0.0)

    def on_fill(self, symbol: str, side: str, qty: float, price: float, ts: int, fee: float) -> None:
        out = self.risk.on_fill(symbol, side, qty, price, ts, fee)
        if out["closed"]:
            self.stats.add(out["trade_return"])

    def on_bar(self, symbol: str, ts: int, o: float, h: float, l: float, c: float, v: float) -> dict[str, Any]:
        state = self.states[symbol]
        updated = state.update(ts, o, h, l, c, v)
        f = state.values
        self.bars[symbol] += 1
        ret = state.get("ret_1_1m")
        for other, (other_ts, other_ret) in self.last.items():
            if other != symbol and other_ts == ts and math.isfinite(ret) and math.isfinite(other_ret):
                a, b = self._pair(symbol, other)
                x, y = (ret, other_ret) if a == symbol else (other_ret, ret)
                self.rho[(a, b)] = self.corr[(a, b)].update(x, y)
        self.last[symbol] = (ts, ret)
        atr = state.get(f"atr_{self.config.technical.atr_period}_1m")
        upd = self.risk.on_bar(symbol, ts, h, l, c, _known(atr))
        voter = self.voters[symbol]
        voter.technical(list(f), updated)
        position = self.risk.positions.get(symbol)

        def hold(code: str, vote: dict | None = None, **extra: Any) -> dict[str, Any]:
            out = {"side": "hold", "qty": 0.0, "code": code,
                   "confidence": vote["confidence"] if vote else 0.0,
                   "consensus": vote["consensus"] if vote else 0.0,
                   "stop_loss": upd["stop_loss"], "take_profit": upd["take_profit"]}
            out.update(extra)
            return out

        d = self.decision
        max_age = self.config.engine.max_decision_age_ms
        if d is None:
            return hold("NO_DECISION")
        if max_age > 0 and d.ts_ms is not None and ts - d.ts_ms > max_age:
            return hold("STALE_DECISION")
        if self.bars[symbol] < self.warmup:
            return hold("WARM_UP")

        failed, actions, values, scores = [], [], [], []
        for spec in self.params.members:
            model = self.members[spec.name]
            obs = np.array([f[state.index[n]] for n in model.feature_names], dtype=np.float32)[None, :]
            out = model.run(obs)
            failed.append(False)
            if model.discrete:
                actions.append(int(out["action"][0]))
                values.append(0.0)
                scores.append([float(x) for x in out[model.output_names[1]][0]])
            else:
                actions.append(0)
                values.append(float(out["action"][0][0]))
                scores.append([])
        row = self.config.model.regime_multipliers[d.regime]
        vote = voter.vote(failed, actions, values, scores, [row[m.name] for m in self.params.members])
        if vote["side"] == 0:
            return hold(GATES[vote["gate"]], vote)
        side = vote["side"]
        name = SIDES[side]
        sizing = None
        if position is not None:
            check = self.risk.check(symbol, name, 0.0, c, _known(atr), ts)
        else:
            if symbol not in d.universe:
                return hold("NOT_IN_UNIVERSE", vote)
            p, b, source = self.stats.kelly_inputs(self.config.risk.min_trades_for_live_stats, *self._kelly())
            others = [_known(self.states[s].get(f"rvol_{self.config.technical.realized_vol_period}_1m"))
                      for s in self.symbols if s != symbol and s in d.universe]
            notional, rho = [], []
            for s in self.symbols:
                pos = self.risk.positions.get(s)
                if s != symbol and pos is not None:
                    notional.append(pos.side * pos.qty * self.risk.mark[s])
                    rho.append(_known(self.rho.get(self._pair(symbol, s), math.nan)))
            risk = self.config.risk
            sizing = size_ref(
                risk, self.risk.equity, c, p, b,
                _known(state.get(f"rvol_{self.config.technical.realized_vol_period}_1m")),
                direction=side, other_vols=others,
                open_notional=notional, open_rho=rho, target_exposure=d.target_exposure,
                risk_appetite=risk.risk_appetite_multipliers[d.risk_appetite],
                confidence=vote["confidence"], lot_step=risk.lot_step_for(symbol),
                min_notional=risk.min_notional_for(symbol),
                kelly_source="config" if source == "manifest" and risk.kelly_win_rate is not None else source)
            if sizing["code"] != "OK":
                return hold(sizing["code"], vote, sizing=sizing)
            check = self.risk.check(symbol, name, sizing["qty"], c, _known(atr), ts)
        if check["action"] == "hold":
            return hold(check["denial"]["code"], vote, sizing=sizing, risk=check)
        entry = check["action"] == "entry"
        return {"side": name, "qty": check["qty"], "code": "ENTRY" if entry else "EXIT",
                "confidence": vote["confidence"], "consensus": vote["consensus"],
                "stop_loss": check["stop_loss"], "take_profit": check["take_profit"],
                "sizing": sizing, "risk": check}
