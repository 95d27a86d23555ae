"""Pure-Python twin of the engine's per-bar flow (:mod:`l2fast.engine.generator`), built from the
other twins: every member run alone on its own onnxruntime session, :class:`VoterRef`,
:func:`size_ref`, :func:`finrl_shares_ref`, :class:`RiskGateRef`, :class:`LiveTradeStatsRef`,
:class:`RollingCorrelationRef` and :class:`TurbulenceRef`. The technical features come from the
compiled :class:`~l2fast.technical.state.TechnicalState`, whose every value is checked against
TA-Lib, pandas and stockstats elsewhere.

Written from the documented rules (README "The engine" and "Running your FinRL agents",
:mod:`l2fast.models.observation`, ``csrc/l2fast/engine/_engine.pxd``), not from the kernel:

- a member's observation is its row names (:attr:`LoadedModel.vector_names`), each read here
  from its documented grammar: a technical name of the bar's symbol; ``cash``, ``holdings``,
  ``position_fraction``, ``unrealized_pnl`` from :meth:`RiskGateRef.account`; ``<name>*<factor>``
  the value times the factor (float64, then float32); ``<name>@<SYMBOL>`` another symbol's
  (NaN before that symbol's first bar); ``turbulence_<tf>`` the index; ``<feature>[-k]`` the
  feature's value k closed bars of its timeframe back, from a history kept here at each close;
- cadence: a member with a ``decision_timeframe`` acts on the bars closing it and on its first
  bar after warm-up, its last input standing in between; a multi-asset member acts on the
  first bar all its (warm) symbols share after one of them closed its timeframe, each symbol's vote
  reading its own action dimension, and is left out (failed) on symbols it does not trade and
  before its first action;
- FinRL members: the weight-averaged shares of those voting the side request a quantity an
  entry (after sizing) and an exit (whole lots) may not exceed; only a decision at a close not
  yet read by the symbol's decision requests shares (a standing vote, or the first action
  after warm-up, requests none); zero holds ``NO_SHARES``;
- the turbulence index over ``technical.turbulence_symbols``, stepped on the first bar all of
  them share after each closed a bar of ``turbulence_timeframe``; at or above
  ``risk.turbulence_threshold`` an open position exits whatever the vote, entries are denied.

:meth:`EngineRef.on_bar` returns the signal as a plain dict of the fields that matter to
L1 (side, qty, stop_loss, take_profit, confidence, consensus, code) plus the sizing, risk,
finrl and turbulence dicts when they ran and the vote's members, so the compiled engine can
be streamed beside it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from l2fast.config import L2Config
from l2fast.decision._voting import GATE_CODES
from l2fast.decision.voting import VotingParams
from l2fast.models.ensemble import member_extras
from l2fast.models.loading import LoadedModel
from l2fast.signals import StrategicDecision
from l2fast.technical.bars import parse_timeframe, timeframe_name
from l2fast.technical.state import TechnicalState

from reference.risk import RiskGateRef
from reference.sizing import LiveTradeStatsRef, finrl_shares_ref, round_down_to_lots, size_ref
from reference.statistics import RollingCorrelationRef
from reference.turbulence import TurbulenceRef
from reference.voting import MEMBER_STATUSES, VoterRef

# The gate names are the kernel's (names, not behaviour: VoterRef computes the gate itself).
GATES = {0: None, **dict(GATE_CODES)}
SIDES = {1: "buy", -1: "sell", 0: "hold"}
ACCOUNT = ("cash", "holdings", "position_fraction", "unrealized_pnl")
_LAG = re.compile(r"(.+)\[-(\d+)\]")
_TIMEFRAME = re.compile(r".+_(\d+[mhd])")
_TURBULENCE = re.compile(r"turbulence_\d+[mhd]")


def _known(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Column:
    """One observation value: ``kind`` technical, account, turbulence or lag; ``name`` the
    technical or account name; ``symbol`` whose (None: the bar's); ``k`` bars back."""

    kind: str
    name: str
    symbol: str | None = None
    scale: float = 1.0
    k: int = 0
    timeframe: str | None = None


def parse_column(name: str, technical: dict[str, int]) -> Column:
    """A row name read by its grammar: ``<feature>[-k]@<SYMBOL>*<factor>`` (each part optional)."""
    if name in technical:
        return Column("technical", name)
    scale = 1.0
    base, mark, factor = name.rpartition("*")
    if mark:
        name, scale = base, float(factor)
    name, mark, symbol = name.partition("@")
    sym = symbol if mark else None
    lag = _LAG.fullmatch(name)
    if lag:
        feature = lag.group(1)
        tf = _TIMEFRAME.fullmatch(feature)
        assert feature in technical and tf is not None, name
        return Column("lag", feature, sym, scale, int(lag.group(2)), tf.group(1))
    if _TURBULENCE.fullmatch(name):
        return Column("turbulence", name, None, scale)
    if name in ACCOUNT:
        return Column("account", name, sym, scale)
    assert name in technical, name
    return Column("technical", name, sym, scale)


class _Member:
    """A member's manifest as the engine reads it."""

    def __init__(self, model: LoadedModel, timeframes: tuple[str, ...], technical: dict[str, int]) -> None:
        m = model.manifest
        self.model = model
        self.columns = [parse_column(n, technical) for n in model.vector_names]
        # The technical update bit of its decision timeframe (without one: the 1m bar's, every bar).
        tf = m.get("decision_timeframe")
        self.bit = 1 << timeframes.index("1m" if tf is None else timeframe_name(parse_timeframe(tf)))
        # Action dimensions: finrl.tickers, else the symbols in the order the names first give them.
        named = list(dict.fromkeys(c.symbol for c in self.columns if c.symbol is not None))
        finrl = m.get("finrl")
        self.symbols = (list(finrl["tickers"]) if finrl and named else named)
        self.finrl = finrl

    def buy_cost(self, symbol: str) -> float:
        tickers, costs = self.finrl["tickers"], self.finrl["buy_cost_pct"]
        return float(costs[tickers.index(symbol) if symbol in tickers else 0])


@dataclass
class _Input:
    failed: bool
    action: int = 0
    value: float = 0.0
    scores: tuple[float, ...] = ()


_LEFT_OUT = _Input(True)


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
        technical = config.technical
        self.risk = RiskGateRef(symbols, config.engine.initial_equity, risk)
        self.stats = LiveTradeStatsRef(config.engine.live_stats_window)
        extras = member_extras(members)
        self.states = {s: TechnicalState(technical, extras) for s in symbols}
        index = self.states[self.symbols[0]].index
        self.voters = {s: VoterRef(params) for s in symbols}
        self.bars = dict.fromkeys(symbols, 0)
        self.last: dict[str, tuple[int, float]] = {}
        self.corr = {(a, b): RollingCorrelationRef(risk.correlation_window)
                     for i, a in enumerate(symbols) for b in symbols[i + 1:]}
        self.rho: dict[tuple[str, str], float] = {}
        self.decision: StrategicDecision | None = None
        # The vote's members, in its order, as the engine reads their manifests.
        self.specs = [_Member(self.members[spec.name], technical.timeframes, index) for spec in params.members]
        self.standing: dict[str, dict[str, _Input]] = {s: {} for s in symbols}
        self.pending: set[str] = set()
        # Per symbol, the members whose standing input is a decision at a close not yet read
        # by that symbol's decision: only those request FinRL shares.
        self.fresh: dict[str, set[str]] = {s: set() for s in symbols}
        # Each lagged technical name's values at its timeframe's closes, per symbol.
        self.lagged = {(c.name, c.timeframe) for m in self.specs for c in m.columns if c.kind == "lag"}
        self.history: dict[tuple[str, str, str], list[float]] = {}
        self.turb_symbols = list(technical.turbulence_symbols)
        self.turb = TurbulenceRef(len(self.turb_symbols), technical.turbulence_window) if self.turb_symbols else None
        self.turb_bit = 1 << technical.timeframes.index(technical.turbulence_timeframe) if self.turb else 0
        self.turb_closed: set[str] = set()
        self.turbulence = 0.0
        self.threshold = math.inf if risk.turbulence_threshold is None else risk.turbulence_threshold
        # What the run exercised: each member's runs, a multi-asset member's runs on a bar that
        # did not close its timeframe (a symbol's close came late), the index's steps.
        self.counts: Counter[str] = Counter()

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

    # ------------------------------------------------------------------ observation

    def _value(self, c: Column, symbol: str) -> float:
        s = c.symbol or symbol
        if c.kind == "turbulence":
            return self.turbulence
        if self.bars.get(s, 0) == 0:
            return math.nan  # before that symbol's first bar
        if c.kind == "account":
            return self.risk.account(s)[c.name]
        if c.kind == "lag":
            past = self.history.get((s, c.name, c.timeframe), [])
            return past[-1 - c.k] if len(past) > c.k else math.nan
        state = self.states[s]
        return float(state.values[state.index[c.name]])

    def observation(self, member: str, symbol: str) -> np.ndarray:
        """What ``member`` observes on ``symbol``'s bar (float64 products, float32 once)."""
        spec = next(m for m in self.specs if m.model.name == member)
        return np.array([self._value(c, symbol) * c.scale for c in spec.columns], dtype=np.float32)

    def _run(self, spec: _Member, symbol: str) -> _Input | list[float]:
        """The member's input to the vote (discrete) or its Box action, one value per dimension."""
        self.counts[f"run:{spec.model.name}"] += 1
        out = spec.model.run(self.observation(spec.model.name, symbol)[None, :])
        if spec.model.discrete:
            return _Input(False, int(out["action"][0]), 0.0,
                          tuple(float(x) for x in out[spec.model.output_names[1]][0]))
        return [float(x) for x in out["action"][0]]

    def _inputs(self, symbol: str, ts: int, updated: int) -> list[_Input]:
        standing = self.standing[symbol]
        inputs = []
        for spec in self.specs:
            name = spec.model.name
            if spec.symbols:
                # Multi-asset: once all its symbols reached this bar after one closed its timeframe.
                together = symbol in spec.symbols and all(
                    self.last.get(s, (None,))[0] == ts and self.bars[s] >= self.warmup for s in spec.symbols)
                if together and (name in self.pending or name not in standing):
                    if not updated & spec.bit:
                        self.counts[f"late:{name}"] += 1
                    action = self._run(spec, symbol)
                    assert isinstance(action, list)
                    for s in spec.symbols:
                        self.standing[s][name] = _Input(False, 0, action[spec.symbols.index(s)])
                        if name in self.pending:
                            self.fresh[s].add(name)
                    self.pending.discard(name)
                inputs.append(standing.get(name, _LEFT_OUT))
                continue
            if updated & spec.bit or name not in standing:
                out = self._run(spec, symbol)
                standing[name] = out if isinstance(out, _Input) else _Input(False, 0, out[0])
                if updated & spec.bit:
                    self.fresh[symbol].add(name)
            inputs.append(standing[name])
        return inputs

    # ------------------------------------------------------------------ turbulence

    def _turbulence(self, symbol: str, ts: int, updated: int) -> None:
        if symbol not in self.turb_symbols:
            return
        if updated & self.turb_bit:
            self.turb_closed.add(symbol)
        if len(self.turb_closed) < len(self.turb_symbols):
            return
        tf = self.config.technical.turbulence_timeframe
        closes = []
        for s in self.turb_symbols:
            if self.last.get(s, (None,))[0] != ts:
                return  # the step waits for the bar all of them share
            closes.append(self.states[s].get(f"close_{tf}"))
        if not all(math.isfinite(x) and x > 0 for x in closes):
            return
        self.turbulence = self.turb.update(closes)
        self.counts["turbulence_steps"] += 1
        self.risk.set_turbulence(self.turbulence)
        self.turb_closed.clear()

    # ------------------------------------------------------------------ per bar

    def on_bar(self, symbol: str, ts: int, o: float, h: float, l: float, c: float, v: float) -> dict[str, Any]:
        state = self.states[symbol]
        updated = state.update(ts, o, h, l, c, v)
        f = state.values
        self.bars[symbol] += 1
        for name, tf in self.lagged:
            if updated & (1 << self.config.technical.timeframes.index(tf)):
                self.history.setdefault((symbol, name, tf), []).append(float(f[state.index[name]]))
        for spec in self.specs:
            if symbol in spec.symbols and updated & spec.bit:
                self.pending.add(spec.model.name)
        ret = state.get("ret_1_1m")
        for other, (other_ts, other_ret) in self.last.items():
            if other != symbol and other_ts == ts and math.isfinite(ret) and math.isfinite(other_ret):
                a, b = self._pair(symbol, other)
                x, y = (ret, other_ret) if a == symbol else (other_ret, ret)
                self.rho[(a, b)] = self.corr[(a, b)].update(x, y)
        self.last[symbol] = (ts, ret)
        self._turbulence(symbol, ts, updated)
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
            if vote:
                out["members"] = members
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

        inputs = self._inputs(symbol, ts, updated)
        fresh, self.fresh[symbol] = self.fresh[symbol], set()
        row = self.config.model.regime_multipliers[d.regime]
        vote = voter.vote([x.failed for x in inputs], [x.action for x in inputs], [x.value for x in inputs],
                          [list(x.scores) for x in inputs], [row[m.name] for m in self.params.members])
        members = {spec.name: {"status": MEMBER_STATUSES[m["status"]], "target": m["target"], "weight": m["weight"]}
                   for spec, m in zip(self.params.members, vote["members"])}
        if position is not None and self.turbulence >= self.threshold:
            # FinRL's gate: the position is sold whatever the vote.
            check = self.risk.check(symbol, SIDES[-position.side], 0.0, c, _known(atr), ts)
            return {"side": SIDES[-position.side], "qty": check["qty"], "code": "EXIT",
                    "confidence": vote["confidence"], "consensus": vote["consensus"],
                    "stop_loss": None, "take_profit": None, "risk": check, "members": members,
                    "turbulence": {"value": self.turbulence, "threshold": self.threshold}}
        if vote["side"] == 0:
            return hold(GATES[vote["gate"]], vote)
        side = vote["side"]
        name = SIDES[side]
        request, finrl = math.inf, None
        voting = [(spec, m, x) for spec, m, x in zip(self.specs, vote["members"], inputs)
                  if spec.finrl is not None and m["status"] == 0 and m["side"] == side]
        if voting:
            held = position.qty if position is not None and position.side > 0 else 0.0
            # FinRL trades at its decisions: a standing vote requests nothing.
            shares = {spec.model.name: finrl_shares_ref(x.value, int(spec.finrl["hmax"]), c, self.risk.cash, held,
                                                        spec.buy_cost(symbol)) if spec.model.name in fresh else 0.0
                      for spec, _, x in voting}
            weights = sum(m["weight"] for _, m, _ in voting)
            total = sum(m["weight"] * abs(shares[spec.model.name]) for spec, m, _ in voting)
            request = total / weights if weights > 0 else 0.0
            finrl = {"requested": request, "members": {spec.model.name: {"action": x.value,
                                                                        "shares": shares[spec.model.name]}
                                                       for spec, _, x in voting}}
            if request == 0.0:
                return hold("NO_SHARES", vote, finrl=finrl)
        sizing = None
        if position is not None:
            check = self.risk.check(symbol, name, 0.0, c, _known(atr), ts)
            if check["action"] == "exit" and request < check["qty"]:
                qty = round_down_to_lots(request, self.config.risk.lot_step_for(symbol), lambda q: True)
                if qty == 0.0:
                    return hold("NO_SHARES", vote, finrl=finrl)
                check.update(qty=qty, notional=qty * check["price"])
        else:
            if symbol not in d.universe:
                return hold("NOT_IN_UNIVERSE", vote, finrl=finrl)
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
                return hold(sizing["code"], vote, sizing=sizing, finrl=finrl)
            check = self.risk.check(symbol, name, min(sizing["qty"], request), c, _known(atr), ts)
        if check["action"] == "hold":
            return hold(check["denial"]["code"], vote, sizing=sizing, risk=check, finrl=finrl)
        entry = check["action"] == "entry"
        return {"side": name, "qty": check["qty"], "code": "ENTRY" if entry else "EXIT",
                "confidence": vote["confidence"], "consensus": vote["consensus"],
                "stop_loss": check["stop_loss"], "take_profit": check["take_profit"],
                "sizing": sizing, "risk": check, "finrl": finrl, "members": members}
