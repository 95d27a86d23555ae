"""Pure-Python twins of :mod:`l2fast.technical._stockstats`, written from the definitions.

Each follows stockstats 0.6.10's conventions for a series' first rows (partial windows,
the first row's change and directional moves counting as 0, its true range taking its
own close as the previous one, the zero-filled MAD, the 50 / 0 / NaN rules of the
divisions), stated in the docstrings, but none of the kernels' arithmetic: windows are
summed exactly (``math.fsum``) and the exponential means kept as a ratio of two decayed
sums. The tests stream the same bars through both.
"""

from __future__ import annotations

import math
from collections import deque

NAN = math.nan


class SMARef:
    """Mean of the last ``period`` values, or of all values while fewer exist."""

    def __init__(self, period: int) -> None:
        self.window: deque[float] = deque(maxlen=period)

    def update(self, x: float) -> float:
        self.window.append(x)
        return math.fsum(self.window) / len(self.window)


class EWMRef:
    """``sum(w_i x_i) / sum(w_i)`` over every value so far, ``w_i = (1 - alpha) ** age``."""

    def __init__(self, alpha: float) -> None:
        self.decay = 1.0 - alpha
        self.num = 0.0
        self.den = 0.0

    @classmethod
    def span(cls, period: int) -> EWMRef:
        """stockstats' ``ema``: alpha = 2 / (period + 1)."""
        return cls(2.0 / (period + 1))

    @classmethod
    def wilder(cls, period: int) -> EWMRef:
        """stockstats' ``smma``: alpha = 1 / period."""
        return cls(1.0 / period)

    def update(self, x: float) -> float:
        self.num = self.num * self.decay + x
        self.den = self.den * self.decay + 1.0
        return self.num / self.den


class BollRef:
    """``(mid, mid + 2 sd, mid - 2 sd)``: partial-window SMA and sample sd (NaN for one value)."""

    def __init__(self, period: int) -> None:
        self.window: deque[float] = deque(maxlen=period)

    def update(self, x: float) -> tuple[float, float, float]:
        self.window.append(x)
        n = len(self.window)
        mid = math.fsum(self.window) / n
        if n < 2:
            return mid, NAN, NAN
        mean = mid
        sd = math.sqrt(math.fsum((v - mean) ** 2 for v in self.window) / (n - 1))
        return mid, mid + 2.0 * sd, mid - 2.0 * sd


class MACDRef:
    """``macd = ema(fast) - ema(slow)``, ``macds = ema(signal)`` of macd, ``macdh`` their difference."""

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        self.fast, self.slow, self.signal = EWMRef.span(fast), EWMRef.span(slow), EWMRef.span(signal)

    def update(self, close: float) -> tuple[float, float, float]:
        macd = self.fast.update(close) - self.slow.update(close)
        macds = self.signal.update(macd)
        return macd, macds, macd - macds


class RSIRef:
    """``100 * up / (up + down)``, Wilder means of rises and falls (first change 0); 50 if undefined."""

    def __init__(self, period: int) -> None:
        self.up, self.down = EWMRef.wilder(period), EWMRef.wilder(period)
        self.prev: float | None = None

    def update(self, close: float) -> float:
        change = 0.0 if self.prev is None else close - self.prev
        first = self.prev is None
        self.prev = close
        up = self.up.update(max(change, 0.0))
        down = self.down.update(max(-change, 0.0))
        if first or up + down == 0.0:
            return 50.0
        return 100.0 * up / (up + down)


class ATRRef:
    """Wilder mean of the true range; the first bar's previous close is its own close."""

    def __init__(self, period: int) -> None:
        self.mean = EWMRef.wilder(period)
        self.prev_close: float | None = None

    def update(self, high: float, low: float, close: float) -> float:
        pc = close if self.prev_close is None else self.prev_close
        self.prev_close = close
        return self.mean.update(max(high - low, abs(high - pc), abs(low - pc)))


class DXRef:
    """``(dx, pdi, ndi)``: DI = 100 * Wilder mean of DM / ATR (NaN if ATR is 0), DX 0 if pdi + ndi is 0."""

    def __init__(self, period: int) -> None:
        self.atr = ATRRef(period)
        self.pdm, self.ndm = EWMRef.wilder(period), EWMRef.wilder(period)
        self.prev: tuple[float, float] | None = None

    def update(self, high: float, low: float, close: float) -> tuple[float, float, float]:
        up, down = (0.0, 0.0) if self.prev is None else (high - self.prev[0], self.prev[1] - low)
        self.prev = (high, low)
        pdm = self.pdm.update(up if up > 0.0 and up > down else 0.0)
        ndm = self.ndm.update(down if down > 0.0 and down > up else 0.0)
        atr = self.atr.update(high, low, close)
        if atr == 0.0:
            return NAN, NAN, NAN
        pdi, ndi = 100.0 * pdm / atr, 100.0 * ndm / atr
        total = pdi + ndi
        return (100.0 * abs(pdi - ndi) / total if total != 0.0 else 0.0), pdi, ndi


class CCIRef:
    """``(tp - sma(tp)) / (0.015 * MAD)``: 0 while the window is partial or the MAD is 0."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.sma = SMARef(period)
        self.window: deque[float] = deque(maxlen=period)

    def update(self, high: float, low: float, close: float) -> float:
        tp = (close + high + low) / 3.0
        ma = self.sma.update(tp)
        self.window.append(tp)
        if len(self.window) < self.period:
            return 0.0
        mean = math.fsum(self.window) / self.period
        mad = math.fsum(abs(v - mean) for v in self.window) / self.period
        return (tp - ma) / (0.015 * mad) if mad != 0.0 else 0.0
