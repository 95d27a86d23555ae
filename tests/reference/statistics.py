"""Pure-Python twin of :mod:`l2fast.technical._statistics`, written from the definition."""

from __future__ import annotations

import math
from collections import deque


class RollingCorrelationRef:
    """Pearson r of the last ``period`` pairs (two-pass); 0.0 when either side is flat."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.pairs: deque[tuple[float, float]] = deque(maxlen=period)

    def update(self, x: float, y: float) -> float:
        self.pairs.append((x, y))
        if len(self.pairs) < self.period:
            return math.nan
        xs = [p[0] for p in self.pairs]
        ys = [p[1] for p in self.pairs]
        mx = math.fsum(xs) / self.period
        my = math.fsum(ys) / self.period
        sxx = math.fsum((a - mx) ** 2 for a in xs)
        syy = math.fsum((b - my) ** 2 for b in ys)
        if sxx == 0.0 or syy == 0.0:
            return 0.0
        sxy = math.fsum((a - mx) * (b - my) for a, b in zip(xs, ys))
        return sxy / math.sqrt(sxx * syy)
