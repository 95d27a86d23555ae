"""Trading and signal metrics: pure functions of equity curves, trades and signals.

Conventions (every function states its own):

- Crypto trades 24/7, every day of the year, so a year is ``525,600`` minutes
  (:data:`MINUTES_PER_YEAR`, 365 days of 1,440 minutes). A series sampled every
  ``bar_minutes`` minutes has ``periods_per_year(bar_minutes) = 525,600 / bar_minutes``
  periods a year: 525,600 for 1-minute bars, 365 for daily samples.
- Returns are simple per-period returns of the marked equity, ``E[t] / E[t-1] - 1``
  (:func:`simple_returns`), the first period starting from the initial equity.
- Sharpe and Sortino are annualised by ``sqrt(periods_per_year)`` (returns assumed
  independent across periods) with a zero risk-free rate and a zero target: on 1-minute
  returns ``mean / std * sqrt(525,600)``, on daily ones ``mean / std * sqrt(365)``.
- Undefined ratios (no returns, zero dispersion, no losing trade) are None, never NaN or
  infinity, so results stay JSON-safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "MINUTES_PER_YEAR",
    "CalibrationBin",
    "annualised_return",
    "calibration",
    "calmar_ratio",
    "directional_hits",
    "drawdown_series",
    "exposure",
    "hit_rate",
    "max_drawdown",
    "periods_per_year",
    "profit_factor",
    "sharpe_ratio",
    "simple_returns",
    "sortino_ratio",
    "time_in_market",
    "turnover",
    "wilson_interval",
    "win_rate",
]

#: Minutes in a 365-day year: the market never closes.
MINUTES_PER_YEAR = 525_600

_MINUTE_MS = 60_000


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d series, got shape {array.shape}")
    return array


def periods_per_year(bar_minutes: float) -> float:
    """Periods in a 24/7 year for a series sampled every ``bar_minutes`` minutes.

    Raises:
        ValueError: ``bar_minutes`` is not a positive finite number.
    """
    if not (math.isfinite(bar_minutes) and bar_minutes > 0):
        raise ValueError(f"bar_minutes={bar_minutes!r}: must be a positive number")
    return MINUTES_PER_YEAR / bar_minutes


def simple_returns(equity: ArrayLike) -> np.ndarray:
    """Per-period simple returns ``E[t] / E[t-1] - 1`` of an equity curve (one fewer value).

    Raises:
        ValueError: ``equity`` is not 1-d or holds a value that is not positive.
    """
    curve = _vector(equity, "equity")
    if np.any(~(curve > 0)):
        raise ValueError("equity: every value must be positive")
    return curve[1:] / curve[:-1] - 1.0


def sharpe_ratio(returns: ArrayLike, periods_per_year: float) -> float | None:
    """Annualised Sharpe ratio: ``mean(r) / std(r) * sqrt(periods_per_year)``.

    ``std`` is the sample standard deviation (``ddof=1``); the risk-free rate is zero.

    Returns:
        None with fewer than two returns or zero dispersion.
    """
    r = _vector(returns, "returns")
    if r.size < 2:
        return None
    sd = float(np.std(r, ddof=1))
    if sd == 0.0:
        return None
    return float(np.mean(r)) / sd * math.sqrt(periods_per_year)


def sortino_ratio(returns: ArrayLike, periods_per_year: float) -> float | None:
    """Annualised Sortino ratio: ``mean(r) / DD * sqrt(periods_per_year)``.

    ``DD = sqrt(mean(min(r, 0) ** 2))`` is the downside deviation below a zero target,
    averaged over ALL periods (Sortino and Price), not only the losing ones.

    Returns:
        None without returns or without a losing period.
    """
    r = _vector(returns, "returns")
    if r.size == 0:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside == 0.0:
        return None
    return float(np.mean(r)) / downside * math.sqrt(periods_per_year)


def drawdown_series(equity: ArrayLike) -> np.ndarray:
    """Drop of the equity below its running peak, as a fraction of that peak (>= 0)."""
    curve = _vector(equity, "equity")
    if curve.size == 0:
        return curve
    peak = np.maximum.accumulate(curve)
    return (peak - curve) / peak


def max_drawdown(equity: ArrayLike) -> float:
    """Largest drop of the equity from a running peak, as a fraction of the peak (0 if none)."""
    drawdown = drawdown_series(equity)
    return float(drawdown.max()) if drawdown.size else 0.0


def annualised_return(equity: ArrayLike, periods_per_year: float) -> float | None:
    """Compound annual growth: ``(E[-1] / E[0]) ** (periods_per_year / (len(E) - 1)) - 1``.

    A short run is extrapolated to a year as if it repeated (a 90-day +5 % is +21.9 %).

    Returns:
        None with fewer than two equity values.
    """
    curve = _vector(equity, "equity")
    if curve.size < 2:
        return None
    return float((curve[-1] / curve[0]) ** (periods_per_year / (curve.size - 1)) - 1.0)


def calmar_ratio(equity: ArrayLike, periods_per_year: float) -> float | None:
    """Calmar ratio: :func:`annualised_return` over :func:`max_drawdown` of the same curve.

    Returns:
        None without a drawdown or with fewer than two equity values.
    """
    growth = annualised_return(equity, periods_per_year)
    drawdown = max_drawdown(equity)
    if growth is None or drawdown == 0.0:
        return None
    return growth / drawdown


def win_rate(pnls: ArrayLike) -> float | None:
    """Share of closed trades with a positive PnL (None without trades)."""
    p = _vector(pnls, "pnls")
    return float(np.mean(p > 0.0)) if p.size else None


def profit_factor(pnls: ArrayLike) -> float | None:
    """Gross profit over gross loss of the closed trades: ``sum(p > 0) / -sum(p < 0)``.

    Returns:
        None without a losing trade (the ratio is undefined).
    """
    p = _vector(pnls, "pnls")
    loss = -float(p[p < 0.0].sum())
    if loss == 0.0:
        return None
    return float(p[p > 0.0].sum()) / loss


def exposure(gross_notional: ArrayLike, equity: ArrayLike) -> float | None:
    """Mean share of the equity held in open positions: ``mean(gross / equity)`` per bar.

    Args:
        gross_notional: Sum of ``|qty| * mark`` of the open positions after each bar.
        equity: Marked equity after the same bars.

    Returns:
        None without bars.
    """
    gross, curve = _vector(gross_notional, "gross_notional"), _vector(equity, "equity")
    if gross.shape != curve.shape:
        raise ValueError(f"gross_notional and equity differ in length ({gross.size} != {curve.size})")
    return float(np.mean(gross / curve)) if gross.size else None


def time_in_market(gross_notional: ArrayLike) -> float | None:
    """Share of bars that end with an open position (None without bars)."""
    gross = _vector(gross_notional, "gross_notional")
    return float(np.mean(gross > 0.0)) if gross.size else None


def turnover(traded_notional: float, equity: ArrayLike) -> float | None:
    """Traded notional over the mean equity: how many times the book was traded.

    Args:
        traded_notional: Sum of ``qty * price`` over every fill (entries and exits).
        equity: The marked equity curve.

    Returns:
        None without equity values.
    """
    curve = _vector(equity, "equity")
    return float(traded_notional / np.mean(curve)) if curve.size else None


def directional_hits(ts: ArrayLike, close: ArrayLike, index: ArrayLike, side: ArrayLike,
                     horizon_minutes: int) -> np.ndarray:
    """Whether each directional call was right ``horizon_minutes`` later.

    A call on bar ``i`` of one symbol (``side`` +1 up, -1 down) is a hit when
    ``side * (close[j] - close[i]) > 0`` for the bar ``j`` that opens exactly
    ``horizon_minutes`` after bar ``i``; an unchanged price is a miss. A call whose
    horizon bar is missing (a gap, or past the end of the data) has no outcome (NaN).

    Args:
        ts: The symbol's bar open times (epoch ms, increasing).
        close: Its closes.
        index: Bar index of each call.
        side: +1 or -1 per call.
        horizon_minutes: Look-ahead, > 0.

    Returns:
        Per call 1.0 (hit), 0.0 (miss) or NaN (no outcome).
    """
    if horizon_minutes <= 0:
        raise ValueError(f"horizon_minutes={horizon_minutes!r}: must be > 0")
    times = np.asarray(ts, dtype=np.int64)
    prices = _vector(close, "close")
    calls = np.asarray(index, dtype=np.int64)
    sides = _vector(side, "side")
    if calls.shape != sides.shape:
        raise ValueError(f"index and side differ in length ({calls.size} != {sides.size})")
    target = times[calls] + horizon_minutes * _MINUTE_MS
    j = np.minimum(np.searchsorted(times, target), times.size - 1)
    found = times[j] == target
    hits = np.full(calls.size, np.nan)
    move = prices[j[found]] - prices[calls[found]]
    hits[found] = (sides[found] * move > 0.0).astype(np.float64)
    return hits


def hit_rate(hits: ArrayLike) -> float | None:
    """Mean of the known outcomes of :func:`directional_hits` (None if none is known)."""
    h = _vector(hits, "hits")
    known = h[~np.isnan(h)]
    return float(known.mean()) if known.size else None


def wilson_interval(hits: int, calls: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a hit rate ``hits / calls`` (95 % for ``z = 1.96``).

    With ``p = hits / calls`` and ``n = calls``: centre ``(p + z^2 / 2n) / (1 + z^2 / n)``,
    half-width ``z * sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)``. Unlike
    ``p +- z sqrt(p (1 - p) / n)`` it stays inside [0, 1] and is honest for few calls.

    Returns:
        ``(low, high)``, or None without calls.
    """
    if not 0 <= hits <= calls:
        raise ValueError(f"hits={hits!r}, calls={calls!r}: need 0 <= hits <= calls")
    if calls == 0:
        return None
    p, n, z2 = hits / calls, calls, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    """One confidence decile of :func:`calibration`.

    Attributes:
        low, high: Smallest and largest confidence in the bin.
        mean_confidence: Mean confidence of its calls.
        count: Calls in the bin (with a known outcome).
        hit_rate: Share of hits among them.
    """

    low: float
    high: float
    mean_confidence: float
    count: int
    hit_rate: float


def calibration(confidence: ArrayLike, hits: ArrayLike, bins: int = 10) -> list[CalibrationBin]:
    """Hit rate by confidence decile: is a more confident call more often right?

    The calls with a known outcome are sorted by confidence (ties keep their order) and
    cut into ``bins`` groups of equal count (sizes differ by at most one; the first
    ``n % bins`` groups take the extra call), so every decile carries the same weight of
    evidence. Fewer calls than ``bins`` give one group per call.

    Args:
        confidence: Confidence of each call.
        hits: Outcome of each call as :func:`directional_hits` returns it.
        bins: Number of groups, >= 1.

    Returns:
        The groups, by increasing confidence.
    """
    if bins < 1:
        raise ValueError(f"bins={bins!r}: must be >= 1")
    conf, h = _vector(confidence, "confidence"), _vector(hits, "hits")
    if conf.shape != h.shape:
        raise ValueError(f"confidence and hits differ in length ({conf.size} != {h.size})")
    known = ~np.isnan(h)
    conf, h = conf[known], h[known]
    if not conf.size:
        return []
    order = np.argsort(conf, kind="stable")
    out = []
    for group in np.array_split(order, min(bins, conf.size)):
        c = conf[group]
        out.append(CalibrationBin(float(c.min()), float(c.max()), float(c.mean()), int(group.size),
                                  float(h[group].mean())))
    return out

