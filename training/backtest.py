"""Backtest metrics of a sequence of target positions, fees included."""

from __future__ import annotations

import math

import numpy as np

MINUTES_PER_YEAR = 365 * 24 * 60


def _trades(position: np.ndarray, gross: np.ndarray, fee: float) -> np.ndarray:
    """Net return of each trade: a maximal run of decisions holding a position of one sign.

    A trade's return is the sum of its steps' ``position * simple return``, minus the fees
    of opening it, of resizing it, and of closing it (a flip from long to short closes one
    trade and opens the next; each is charged its own leg).
    """
    trades: list[float] = []
    current = 0.0
    prev = 0.0
    for p, g in zip(position, gross, strict=True):
        if p != 0.0 and np.sign(p) == np.sign(prev):
            current += g - fee * abs(p - prev)
        else:
            if prev != 0.0:
                trades.append(current - fee * abs(prev))
            current = g - fee * abs(p) if p != 0.0 else 0.0
        prev = p
    if prev != 0.0:
        trades.append(current - fee * abs(prev))
    return np.asarray(trades)


def backtest(position: np.ndarray, log_ret: np.ndarray, fee: float, decision_minutes: int) -> dict:
    """Metrics of holding ``position[t]`` over each decision interval, fees included.

    Args:
        position: Target position (fraction of equity in [-1, 1]) decided at each point.
        log_ret: Log return of the instrument over each decision interval.
        fee: Cost per unit of position traded.
        decision_minutes: Minutes between decisions (for annualising).

    Returns:
        ``total_return`` (compounded), ``sharpe`` (mean / std of the per-decision net
        returns times sqrt(decisions per 365-day 24/7 year)), ``max_drawdown`` (largest
        fall of equity from a running peak, a positive fraction), ``win_rate``,
        ``avg_win``, ``avg_loss`` (magnitude), ``payoff_ratio`` (avg_win / avg_loss: the
        Kelly ``b``), ``n_trades``, ``exposure`` (fraction of decisions holding a
        position), ``avg_abs_position``, ``turnover`` (sum of |position change|).
        The position left open at the end is closed (and charged) on the last decision.
        Per-trade statistics are 0 when there is no winning or losing trade.
    """
    position = np.asarray(position, dtype=np.float64)
    simple = np.expm1(np.asarray(log_ret, dtype=np.float64))
    change = np.abs(np.diff(position, prepend=0.0))
    gross = position * simple
    net = gross - fee * change
    if len(net):
        # The period ends flat: the last position is closed and pays its fee.
        net[-1] -= fee * abs(position[-1])
    equity = np.cumprod(1.0 + net)
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    drawdown = float(np.max(1.0 - equity / peak)) if len(equity) else 0.0
    std = float(np.std(net))
    per_year = MINUTES_PER_YEAR / decision_minutes
    sharpe = float(np.mean(net) / std * math.sqrt(per_year)) if std > 0 else 0.0
    trades = _trades(position, gross, fee)
    wins, losses = trades[trades > 0], -trades[trades < 0]
    avg_win = float(wins.mean()) if len(wins) else 0.0
    avg_loss = float(losses.mean()) if len(losses) else 0.0
    return {
        "total_return": float(equity[-1] - 1.0) if len(equity) else 0.0,
        "sharpe": sharpe,
        "max_drawdown": drawdown,
        "win_rate": float(len(wins) / len(trades)) if len(trades) else 0.0,
        "avg_win": avg_win,
        "avg_loss": avg_loss,
        "payoff_ratio": avg_win / avg_loss if avg_loss > 0 else 0.0,
        "n_trades": int(len(trades)),
        "exposure": float(np.mean(position != 0.0)) if len(position) else 0.0,
        "avg_abs_position": float(np.mean(np.abs(position))) if len(position) else 0.0,
        "turnover": float(change.sum()),
    }
