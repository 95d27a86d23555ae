"""Pure-Python twins of :mod:`l2fast.technical._volume`, written from the definitions."""

from __future__ import annotations

import math
import statistics
from collections import deque


class OBVRef:
    """Running sum of volume signed by the direction of the close (first bar: +volume)."""

    def __init__(self) -> None:
        self.prev_close: float | None = None
        self.obv = 0.0

    def update(self, close: float, volume: float) -> float:
        if self.prev_close is None or close > self.prev_close:
            self.obv += volume
        elif close < self.prev_close:
            self.obv -= volume
        self.prev_close = close
        return self.obv


class VolumeZScoreRef:
    """(v - mean) / pstdev over the last ``period`` volumes, 0.0 when they are all equal."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.values: deque[float] = deque(maxlen=period)

    def update(self, volume: float) -> float:
        self.values.append(volume)
        if len(self.values) < self.period:
            return math.nan
        std = statistics.pstdev(self.values)
        if std == 0.0:
            return 0.0
        return (volume - statistics.fmean(self.values)) / std
