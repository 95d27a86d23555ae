"""Pure-Python twins of a few :mod:`l2fast.technical._candles` patterns, from their definitions.

TA-Lib's default candle settings, stated plainly: a real body is "long" / "short" against
the mean real body of the 10 candles before it, "doji" when at most 10% of the mean
high-low range of those 10 candles, a shadow is "very short" under 10% of that mean
range and "long" when longer than the candle's own real body, and "near" means within
20% of the mean high-low range of the 5 candles before the reference candle. Means are
computed afresh from the window here, whereas TA-Lib rolls running totals; the two can
round differently when a candle sits exactly on a threshold.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple


class Bar(NamedTuple):
    open: float
    high: float
    low: float
    close: float

    @property
    def body(self) -> float:
        return abs(self.close - self.open)

    @property
    def range(self) -> float:
        return self.high - self.low

    @property
    def top(self) -> float:
        return max(self.open, self.close)

    @property
    def bottom(self) -> float:
        return min(self.open, self.close)

    @property
    def upper_shadow(self) -> float:
        return self.high - self.top

    @property
    def lower_shadow(self) -> float:
        return self.bottom - self.low

    @property
    def white(self) -> bool:
        return self.close >= self.open


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


class CandlesRef:
    """Doji, engulfing, hammer and morning star (penetration 0.3) over a bar stream.

    ``update`` returns ``{"CDLDOJI": v, "CDLENGULFING": v, "CDLHAMMER": v,
    "CDLMORNINGSTAR": v}``, 0 while TA-Lib's lookback (10, 2, 11, 12 bars) lasts.
    """

    LOOKBACK = {"CDLDOJI": 10, "CDLENGULFING": 2, "CDLHAMMER": 11, "CDLMORNINGSTAR": 12}

    def __init__(self) -> None:
        self.bars: deque[Bar] = deque(maxlen=16)
        self.count = 0

    def _before(self, lag: int, n: int) -> list[Bar]:
        """The ``n`` bars preceding the bar ``lag`` steps back (lag 0 = current)."""
        end = len(self.bars) - 1 - lag
        return list(self.bars)[end - n : end]

    def update(self, open: float, high: float, low: float, close: float) -> dict[str, int]:
        self.bars.append(Bar(open, high, low, close))
        self.count += 1
        out = {}
        for name, fn in (
            ("CDLDOJI", self._doji),
            ("CDLENGULFING", self._engulfing),
            ("CDLHAMMER", self._hammer),
            ("CDLMORNINGSTAR", self._morningstar),
        ):
            out[name] = fn() if self.count > self.LOOKBACK[name] else 0
        return out

    def _doji(self) -> int:
        cur = self.bars[-1]
        doji = 0.1 * _mean([b.range for b in self._before(0, 10)])
        return 100 if cur.body <= doji else 0

    def _engulfing(self) -> int:
        prev, cur = self.bars[-2], self.bars[-1]
        if cur.white and not prev.white:
            engulfs = (cur.close >= prev.open and cur.open < prev.close) or (
                cur.close > prev.open and cur.open <= prev.close
            )
        elif not cur.white and prev.white:
            engulfs = (cur.open >= prev.close and cur.close < prev.open) or (
                cur.open > prev.close and cur.close <= prev.open
            )
        else:
            engulfs = False
        if not engulfs:
            return 0
        sign = 1 if cur.white else -1
        one_end_matches = cur.open == prev.close or cur.close == prev.open
        return sign * (80 if one_end_matches else 100)

    def _hammer(self) -> int:
        prev, cur = self.bars[-2], self.bars[-1]
        short_body = _mean([b.body for b in self._before(0, 10)])
        very_short_shadow = 0.1 * _mean([b.range for b in self._before(0, 10)])
        near = 0.2 * _mean([b.range for b in self._before(1, 5)])
        hammer = (
            cur.body < short_body
            and cur.lower_shadow > cur.body
            and cur.upper_shadow < very_short_shadow
            and cur.bottom <= prev.low + near
        )
        return 100 if hammer else 0

    def _morningstar(self) -> int:
        first, star, third = self.bars[-3], self.bars[-2], self.bars[-1]
        pattern = (
            not first.white
            and third.white
            and star.top < first.bottom
            and third.close > first.close + first.body * 0.3
            and first.body > _mean([b.body for b in self._before(2, 10)])
            and star.body <= _mean([b.body for b in self._before(1, 10)])
            and third.body > _mean([b.body for b in self._before(0, 10)])
        )
        return 100 if pattern else 0
