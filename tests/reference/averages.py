"""Pure-Python twins of :mod:`l2fast.technical._averages` (TA-Lib's SMA and EMA definitions)."""

from __future__ import annotations

import math
from collections import deque


class SMARef:
    """Simple moving average: mean of the last ``period`` values, NaN before that."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.values: deque[float] = deque(maxlen=period)

    def update(self, x: float) -> float:
        self.values.append(x)
        if len(self.values) < self.period:
            return math.nan
        return math.fsum(self.values) / self.period


class EMARef:
    """EMA with factor 2/(period+1), seeded by the mean of the first ``period`` values."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.k = 2.0 / (period + 1)
        self.seed: list[float] = []
        self.value = math.nan

    def update(self, x: float) -> float:
        if len(self.seed) < self.period:
            self.seed.append(x)
            if len(self.seed) == self.period:
                self.value = math.fsum(self.seed) / self.period
            return self.value
        self.value = self.value + self.k * (x - self.value)
        return self.value
