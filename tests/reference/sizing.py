"""Pure-Python twin of :mod:`l2fast.decision._sizing`, written from the formulas in
:mod:`l2fast.decision.sizing` (same results, same dict)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any


class LiveTradeStatsRef:
    """Win rate and payoff ratio of the last ``window`` trade returns."""

    def __init__(self, window: int) -> None:
        self.returns: deque[float] = deque(maxlen=window)

    def add(self, trade_return: float) -> None:
        self.returns.append(trade_return)

    @property
    def count(self) -> int:
        return len(self.returns)

    @property
    def p(self) -> float:
        if not self.returns:
            return 0.0
        return sum(1 for r in self.returns if r > 0) / len(self.returns)

    @property
    def b(self) -> float:
        wins = [r for r in self.returns if r > 0]
        losses = [-r for r in self.returns if r < 0]
        if not wins or not losses:
            return 0.0
        return (sum(wins) / len(wins)) / (sum(losses) / len(losses))

    def kelly_inputs(self, min_trades: int, manifest_p: float, manifest_b: float) -> tuple[float, float, str]:
        if self.count >= min_trades:
            return self.p, self.b, "live"
        return manifest_p, manifest_b, "manifest"


def kelly_full(p: float, b: float) -> float:
    """The Kelly bet f* = p - (1 - p) / b, kept within [0, 1]; 0 without a payoff."""
    if b <= 0:
        return 0.0
    return min(1.0, max(0.0, p - (1 - p) / b))


def lot_quantity(n: int, lot: float) -> float:
    """``n`` lots: ``n / m`` when the step is ``1 / m`` for a whole ``m`` (the double
    nearest the decimal multiple), else ``n * lot``."""
    m = round(1.0 / lot)
    if m >= 1 and abs(m * lot - 1.0) <= 1e-12:
        return n / m
    return n * lot


def round_down_to_lots(qty_max: float, lot: float, fits: Callable[[float], bool]) -> float:
    """The largest whole number of lots not above ``qty_max`` for which ``fits`` holds."""
    if qty_max <= 0:
        return 0.0
    m = round(1.0 / lot)
    exact = m >= 1 and abs(m * lot - 1.0) <= 1e-12
    n = math.floor(qty_max * m) if exact else math.floor(qty_max / lot)
    if lot_quantity(n + 1, lot) <= qty_max:
        n += 1
    for _ in range(4):
        if n <= 0:
            return 0.0
        q = lot_quantity(n, lot)
        if q <= qty_max and fits(q):
            return q
        n -= 1
    return 0.0


def size_ref(risk: Any, equity: float, price: float, p: float, b: float, vol: float | None, *,
             direction: int = 1, other_vols: Sequence[float | None] = (),
             open_notional: Sequence[float] = (), open_rho: Sequence[float | None] = (),
             target_exposure: float = 1.0, risk_appetite: float = 1.0, confidence: float = 1.0,
             lot_step: float, min_notional: float, kelly_source: str = "manifest") -> dict:
    """The sizing decision of one entry, every factor included.

    ``risk`` gives the parameters by attribute, as PositionSizer reads them (a RiskConfig).
    """
    kelly_fraction, volatility_target = risk.kelly_fraction, risk.volatility_target
    max_position_size, max_vol_scale = risk.max_position_size, risk.max_vol_scale
    confidence_scaling = risk.confidence_scaling
    f = kelly_full(p, b)
    kelly = kelly_fraction * f
    floor_vol = volatility_target / max_vol_scale
    code = "OK"
    if vol is None:
        code = "VOL_UNKNOWN"
        vol_used = vol_scale = risk_parity = 0.0
        n_universe = 0
    else:
        vol_used = max(vol, floor_vol)
        vol_scale = volatility_target / vol_used
        inverse = [1.0 / vol_used] + [1.0 / max(v, floor_vol) for v in other_vols if v is not None]
        n_universe = len(inverse)
        risk_parity = (inverse[0] / sum(inverse)) * n_universe

    aligned = 0.0
    for notional, rho in zip(open_notional, open_rho, strict=True):
        if notional == 0:
            continue
        sign = 1 if notional > 0 else -1
        a = 1.0 if rho is None else direction * sign * rho
        if a > 0:
            aligned += a * abs(notional)
    correlated_exposure = aligned / equity
    correlation = max(0.0, 1.0 - correlated_exposure)

    conf = confidence if confidence_scaling else 1.0
    raw = kelly * vol_scale * risk_parity * correlation * target_exposure * risk_appetite * conf
    fraction = min(raw, max_position_size)
    notional_target = fraction * equity
    qty = round_down_to_lots(notional_target / price, lot_step, lambda q: q * price <= notional_target)
    if code == "OK":
        if f == 0:
            code = "NO_EDGE"
        elif raw == 0:
            code = "ZERO_SCALE"
        elif qty == 0 or qty * price < min_notional:
            code = "BELOW_MIN_NOTIONAL"
    if code != "OK":
        qty = 0.0
    return {
        "code": code, "qty": qty, "notional": qty * price, "kelly_source": kelly_source,
        "p": p, "b": b, "kelly_full": f, "kelly": kelly, "vol": vol, "vol_used": vol_used,
        "vol_scale": vol_scale, "risk_parity": risk_parity, "n_universe": n_universe,
        "correlated_exposure": correlated_exposure, "correlation": correlation,
        "target_exposure": target_exposure, "risk_appetite": risk_appetite, "confidence": conf,
        "fraction_raw": raw, "fraction": fraction, "capped": raw > max_position_size,
        "notional_target": notional_target, "lot_step": lot_step, "min_notional": min_notional,
    }


def finrl_shares_ref(action: float, hmax: int, price: float, cash: float, held: float, buy_cost: float) -> float:
    """FinRL 0.3.7 StockTradingEnv's trade for one asset, written from its step():
    ``(actions * hmax).astype(int)`` on a float32 array, sells capped by the holdings,
    buys by ``cash // (price * (1 + buy_cost))``."""
    import numpy as np

    shares = int((np.array([action], dtype=np.float32) * hmax).astype(int)[0])
    if shares < 0:
        return -float(min(-shares, max(held, 0.0)))
    if shares > 0:
        return float(min(shares, max(cash // (price * (1 + buy_cost)), 0.0)))
    return 0.0
