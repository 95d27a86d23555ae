"""Pure-Python twins of :mod:`l2fast.technical._oscillators`, written from the definitions.

Each follows TA-Lib's conventions (seeds, warm-up lengths, zero-range rules), which
are stated in the docstrings, but none of its arithmetic shortcuts: the test streams
the same bars through both and compares them to a tight tolerance.
"""

from __future__ import annotations

import math
from collections import deque

NAN = math.nan


class RSIRef:
    """Wilder's RSI.

    The first average gain/loss is the mean of the first ``period`` changes; after
    that ``avg = (avg * (period - 1) + change) / period``. RSI is
    ``100 * avg_gain / (avg_gain + avg_loss)``, and 0 when both averages are 0.
    """

    def __init__(self, period: int) -> None:
        self.period = period
        self.prev: float | None = None
        self.changes: list[float] = []
        self.avg_gain = NAN
        self.avg_loss = NAN

    def update(self, close: float) -> float:
        if self.prev is None:
            self.prev = close
            return NAN
        change, self.prev = close - self.prev, close
        gain, loss = max(change, 0.0), max(-change, 0.0)
        if len(self.changes) < self.period:
            self.changes.append(change)
            if len(self.changes) < self.period:
                return NAN
            self.avg_gain = math.fsum(max(c, 0.0) for c in self.changes) / self.period
            self.avg_loss = math.fsum(max(-c, 0.0) for c in self.changes) / self.period
        else:
            self.avg_gain = (self.avg_gain * (self.period - 1) + gain) / self.period
            self.avg_loss = (self.avg_loss * (self.period - 1) + loss) / self.period
        total = self.avg_gain + self.avg_loss
        return 100.0 * self.avg_gain / total if total != 0.0 else 0.0


class _SeededEMA:
    """EMA with factor ``2 / (period + 1)`` seeded by the mean of its first inputs."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.k = 2.0 / (period + 1)
        self.seed: list[float] = []
        self.value = NAN

    def update(self, x: float) -> float:
        if len(self.seed) < self.period:
            self.seed.append(x)
            if len(self.seed) == self.period:
                self.value = math.fsum(self.seed) / self.period
            return self.value
        self.value += self.k * (x - self.value)
        return self.value


class MACDRef:
    """MACD as TA-Lib computes it.

    Both price EMAs start on the bar ``slow - 1``: the slow EMA is seeded by the mean
    of the first ``slow`` closes, the fast EMA by the mean of the ``fast`` closes
    ending on that same bar (earlier closes never reach it). The signal line is an EMA
    of the MACD line seeded by the mean of its first ``signal`` values; all three
    outputs are NaN until it exists.
    """

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        self.fast = _SeededEMA(fast)
        self.slow = _SeededEMA(slow)
        self.signal = _SeededEMA(signal)
        self.skip = slow - fast
        self.n = 0

    def update(self, close: float) -> tuple[float, float, float]:
        self.n += 1
        fast = self.fast.update(close) if self.n > self.skip else NAN
        slow = self.slow.update(close)
        if math.isnan(slow):
            return NAN, NAN, NAN
        line = fast - slow
        signal = self.signal.update(line)
        if math.isnan(signal):
            return NAN, NAN, NAN
        return line, signal, line - signal


class StochasticRef:
    """Slow stochastic with SMA smoothing.

    Fast %K is ``100 * (close - lowest low) / (highest high - lowest low)`` over the
    last ``fastk_period`` bars, 0 when the range is 0. Slow %K is the mean of the last
    ``slowk_period`` fast %K, slow %D the mean of the last ``slowd_period`` slow %K;
    both are NaN until slow %D exists.
    """

    def __init__(self, fastk_period: int, slowk_period: int, slowd_period: int) -> None:
        self.highs: deque[float] = deque(maxlen=fastk_period)
        self.lows: deque[float] = deque(maxlen=fastk_period)
        self.fastk: deque[float] = deque(maxlen=slowk_period)
        self.slowk: deque[float] = deque(maxlen=slowd_period)

    def update(self, high: float, low: float, close: float) -> tuple[float, float]:
        self.highs.append(high)
        self.lows.append(low)
        if len(self.highs) < self.highs.maxlen:
            return NAN, NAN
        highest, lowest = max(self.highs), min(self.lows)
        rng = highest - lowest
        self.fastk.append(100.0 * (close - lowest) / rng if rng != 0.0 else 0.0)
        if len(self.fastk) < self.fastk.maxlen:
            return NAN, NAN
        self.slowk.append(math.fsum(self.fastk) / len(self.fastk))
        if len(self.slowk) < self.slowk.maxlen:
            return NAN, NAN
        return self.slowk[-1], math.fsum(self.slowk) / len(self.slowk)


class ADXRef:
    """Wilder's ADX, +DI and -DI.

    From the second bar on: true range ``max(high - low, |high - prev close|,
    |low - prev close|)``; +DM is the rise of the high when it beats the fall of the
    low (and is positive), -DM the reverse. The first ``period - 1`` values are summed;
    each later bar applies ``S = S - S / period + value``. ``DI = 100 * DM / TR`` (0 when
    TR is 0), ``DX = 100 * |+DI - -DI| / (+DI + -DI)`` (undefined when TR or the DI sum
    is 0). The first ADX, on bar ``2 * period - 1``, is the sum of the defined DX of
    the last ``period`` bars divided by ``period``; later ones are
    ``(ADX * (period - 1) + DX) / period``, unchanged on bars without a DX.
    """

    def __init__(self, period: int) -> None:
        self.period = period
        self.prev: tuple[float, float, float] | None = None
        self.bars = 0
        self.tr = self.plus_dm = self.minus_dm = 0.0
        self.dx_seed: list[float] = []
        self.adx = NAN

    def update(self, high: float, low: float, close: float) -> tuple[float, float, float]:
        self.bars += 1
        if self.prev is None:
            self.prev = (high, low, close)
            return NAN, NAN, NAN
        prev_high, prev_low, prev_close = self.prev
        self.prev = (high, low, close)
        up, down = high - prev_high, prev_low - low
        plus_dm = up if up > 0.0 and up > down else 0.0
        minus_dm = down if down > 0.0 and down > up else 0.0
        tr = max(high - low, abs(high - prev_close), abs(low - prev_close))
        p = self.period
        if self.bars <= p:
            self.tr += tr
            self.plus_dm += plus_dm
            self.minus_dm += minus_dm
            return NAN, NAN, NAN
        self.tr = self.tr - self.tr / p + tr
        self.plus_dm = self.plus_dm - self.plus_dm / p + plus_dm
        self.minus_dm = self.minus_dm - self.minus_dm / p + minus_dm
        plus_di = 100.0 * self.plus_dm / self.tr if self.tr != 0.0 else 0.0
        minus_di = 100.0 * self.minus_dm / self.tr if self.tr != 0.0 else 0.0
        di_sum = plus_di + minus_di
        dx = 100.0 * abs(plus_di - minus_di) / di_sum if self.tr != 0.0 and di_sum != 0.0 else None
        if self.bars <= 2 * p:
            if dx is not None:
                self.dx_seed.append(dx)
            if self.bars == 2 * p:
                self.adx = math.fsum(self.dx_seed) / p
        elif dx is not None:
            self.adx = (self.adx * (p - 1) + dx) / p
        return self.adx, plus_di, minus_di
