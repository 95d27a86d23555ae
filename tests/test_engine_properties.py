"""Invariants of every signal over random bar streams, configurations and fills (hypothesis).

Whatever the market, the limits and L1's behaviour (fills that come late, never, or with
slippage; stops and take-profits hit inside bars), the engine never emits a non-finite
number, never sizes above the limits, places stops on the right side of the entry, and
keeps the per-day, concurrency and exposure rules.
"""

from __future__ import annotations

import json
import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2fast import L2Config, StrategicDecision, TacticalSignalGenerator
from l2fast.evaluation.synthetic import generate_bars

SYMBOLS = ("BTC/USDT", "ETH/USDT")
DAY_MS = 86_400_000
EPS = 1e-9


@st.composite
def scenarios(draw) -> dict:
    exposure = draw(st.floats(0.05, 0.8))
    return {
        "risk": {
            "kelly_win_rate": draw(st.floats(0.3, 0.9)), "kelly_payoff_ratio": draw(st.floats(0.5, 3.0)),
            "kelly_fraction": draw(st.floats(0.1, 1.0)), "volatility_target": draw(st.floats(0.05, 2.0)),
            "max_position_size": draw(st.floats(0.01, 1.0)) * exposure, "exposure_limit": exposure,
            "max_loss_per_trade": draw(st.floats(0.001, 0.05)), "atr_multiplier": draw(st.floats(0.5, 12.0)),
            "take_profit_r": draw(st.floats(0.5, 4.0)), "breakeven_threshold": draw(st.floats(0.2, 3.0)),
            "max_daily_trades": draw(st.integers(1, 30)), "daily_loss_limit": draw(st.floats(0.0005, 0.05)),
            "max_concurrent_positions": draw(st.integers(1, 2)), "allow_short": draw(st.booleans()),
            "min_trades_for_live_stats": draw(st.integers(5, 60)),
        },
        "model": {"consensus_threshold": draw(st.floats(0.0, 0.6)), "alignment_threshold": 0.0,
                  "confidence_threshold": draw(st.floats(0.0, 0.6))},
        "seed": draw(st.integers(0, 2**31 - 1)),
        "vol": draw(st.floats(0.2, 3.0)),
        "bars": draw(st.integers(300, 1500)),
        "fill_probability": draw(st.floats(0.5, 1.0)),
        "slippage": draw(st.floats(0.0, 0.003)),
        "fee": draw(st.sampled_from([0.0, 0.0004, 0.001])),
        "regime": draw(st.sampled_from(["trending", "ranging", "volatile"])),
        "appetite": draw(st.sampled_from(["conservative", "moderate", "aggressive"])),
        "target_exposure": draw(st.floats(0.0, 1.0)),
    }


class _L1:
    """Fills orders at the next bar's open (or never), with slippage and fees, and executes
    stops and take-profits inside the bar's range."""

    def __init__(self, gen: TacticalSignalGenerator, rng: random.Random, sc: dict) -> None:
        self.gen, self.rng, self.sc = gen, rng, sc
        self.orders: dict[str, tuple[str, float]] = {}
        self.stops: dict[str, tuple[float | None, float | None]] = {}

    def _fill(self, symbol: str, side: str, qty: float, price: float, ts: int) -> None:
        self.gen.on_fill(symbol, side, qty, price, ts, qty * price * self.sc["fee"])

    def before_bar(self, symbol: str, ts: int, o: float, h: float, lo: float) -> None:
        order = self.orders.pop(symbol, None)
        if order is not None and self.rng.random() < self.sc["fill_probability"]:
            side, qty = order
            slip = 1 + self.sc["slippage"] if side == "buy" else 1 - self.sc["slippage"]
            self._fill(symbol, side, qty, o * slip, ts)
        pos = self.gen.position(symbol)
        if pos is None:
            self.stops.pop(symbol, None)
            return
        stop, tp = self.stops.get(symbol, (pos["stop_loss"], pos["take_profit"]))
        long = pos["side"] == "long"
        price = None
        if stop is not None and (lo <= stop if long else h >= stop):
            price = min(stop, o) if long else max(stop, o)
        elif tp is not None and (h >= tp if long else lo <= tp):
            price = max(tp, o) if long else min(tp, o)
        if price is not None:
            self._fill(symbol, "sell" if long else "buy", pos["qty"], price, ts)
            self.stops.pop(symbol, None)

    def after_signal(self, sig) -> None:
        if sig.qty > 0:
            self.orders[sig.symbol] = (sig.side.value, sig.qty)
        elif sig.stop_loss is not None:
            self.stops[sig.symbol] = (sig.stop_loss, sig.take_profit)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_every_signal_respects_the_risk_invariants(sc: dict) -> None:
    cfg = L2Config.from_dict({"risk": sc["risk"], "model": sc["model"]})
    risk = cfg.risk
    gen = TacticalSignalGenerator(cfg)
    gen.on_strategic_decision(StrategicDecision(sc["regime"], sc["target_exposure"], sc["appetite"], list(SYMBOLS)))
    n = gen.warmup_bars + sc["bars"]
    streams = [generate_bars(n, seed=sc["seed"] + k, annual_vol=sc["vol"], start_price=p)
               for k, p in enumerate((40_000.0, 2_500.0))]
    l1 = _L1(gen, random.Random(sc["seed"]), sc)
    entries_per_day: dict[int, int] = {}
    for k in range(n):
        for symbol, bars in zip(SYMBOLS, streams):
            ts = int(bars["ts"][k])
            o, h, lo, c = (float(bars[f][k]) for f in ("open", "high", "low", "close"))
            l1.before_bar(symbol, ts, o, h, lo)
            sig = gen.on_bar(symbol, ts, o, h, lo, c, float(bars["volume"][k]))
            json.dumps(sig.to_dict(), allow_nan=False)
            assert all(math.isfinite(x) for x in (sig.qty, sig.confidence, sig.consensus))
            assert 0.0 <= sig.confidence <= 1.0 and 0.0 <= sig.consensus <= 1.0
            assert sig.qty >= 0.0 and (sig.qty == 0.0) == (sig.side == "hold")
            code = sig.reasoning["code"]
            if code == "ENTRY":
                equity = gen.equity
                notional = sig.qty * c
                assert notional <= risk.max_position_size * equity * (1 + EPS)
                assert sig.qty * abs(c - sig.stop_loss) <= risk.max_loss_per_trade * equity * (1 + EPS)
                if sig.side == "buy":
                    assert sig.stop_loss < c < sig.take_profit
                else:
                    assert risk.allow_short and sig.take_profit < c < sig.stop_loss
                assert not gen.halted, "an entry after the daily loss limit"
                day = ts // DAY_MS
                entries_per_day[day] = entries_per_day.get(day, 0) + 1
                assert entries_per_day[day] <= risk.max_daily_trades
                others = [s for s in SYMBOLS if s != symbol and gen.position(s) is not None]
                assert len(others) + 1 <= risk.max_concurrent_positions
                assert gen.gross_exposure + notional <= risk.exposure_limit * equity * (1 + EPS)
            elif code == "EXIT":
                pos = gen.position(symbol)
                assert pos is not None and sig.qty == pos["qty"]
                assert sig.side == ("sell" if pos["side"] == "long" else "buy")
            l1.after_signal(sig)
