"""Pure-Python twins of :mod:`l2fast.technical._volatility`, written from the definitions."""

from __future__ import annotations

import math
import statistics
from collections import deque


class BollingerBandsRef:
    """SMA middle band, +/- ``nbdev`` population standard deviations of the window."""

    def __init__(self, period: int, nbdev: float) -> None:
        self.period = period
        self.nbdev = nbdev
        self.values: deque[float] = deque(maxlen=period)

    def update(self, x: float) -> tuple[float, float, float]:
        self.values.append(x)
        if len(self.values) < self.period:
            return (math.nan, math.nan, math.nan)
        middle = math.fsum(self.values) / self.period
        std = statistics.pstdev(self.values)
        return (middle + self.nbdev * std, middle, middle - self.nbdev * std)


class ATRRef:
    """Wilder's ATR: mean of the first ``period`` true ranges, then (prev*(n-1) + tr)/n."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.prev_close: float | None = None
        self.first: list[float] = []
        self.value = math.nan

    def update(self, high: float, low: float, close: float) -> float:
        prev, self.prev_close = self.prev_close, close
        if prev is None:
            return math.nan
        tr = max(high - low, abs(high - prev), abs(low - prev))
        if len(self.first) < self.period:
            self.first.append(tr)
            if len(self.first) == self.period:
                self.value = math.fsum(self.first) / self.period
            return self.value
        self.value = (self.value * (self.period - 1) + tr) / self.period
        return self.value


class DonchianRef:
    """Highest high and lowest low of the last ``period`` bars, and their midpoint."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.highs: deque[float] = deque(maxlen=period)
        self.lows: deque[float] = deque(maxlen=period)

    def update(self, high: float, low: float) -> tuple[float, float, float]:
        self.highs.append(high)
        self.lows.append(low)
        if len(self.highs) < self.period:
            return (math.nan, math.nan, math.nan)
        upper, lower = max(self.highs), min(self.lows)
        return (upper, (upper + lower) / 2, lower)


class RealizedVolatilityRef:
    """Sample std of the last ``period`` log returns, times sqrt(525600 / bar_minutes)."""

    def __init__(self, period: int, bar_minutes: float) -> None:
        self.period = period
        self.scale = math.sqrt(365 * 24 * 60 / bar_minutes)
        self.prev_close: float | None = None
        self.returns: deque[float] = deque(maxlen=period)

    def update(self, close: float) -> float:
        prev, self.prev_close = self.prev_close, close
        if prev is not None:
            self.returns.append(math.log(close) - math.log(prev))
        if len(self.returns) < self.period:
            return math.nan
        return statistics.stdev(self.returns) * self.scale
