"""Pure-Python twins of :mod:`l2fast.technical._aggregate`: bar validation and bucketing.

Written from the definitions: a bar is valid when its prices are positive finite numbers
with ``low <= min(open, close)`` and ``high >= max(open, close)``, its volume is a
non-negative finite number and its open time is a whole minute after the previous one's.
A timeframe's bar is the first open, highest high, lowest low, last close and summed volume
of the 1-minute bars whose open time falls in the bucket ``[k * tf, (k + 1) * tf)``; it is
known complete once the bucket's last minute has been seen or a later bucket has begun.
"""

from __future__ import annotations

import math

MINUTE_MS = 60_000


def bar_problem(prev_ts: int | None, ts: int, o: float, h: float, l: float, c: float, v: float) -> str | None:
    """The field of the first rule the bar breaks, or None if it is valid."""
    if ts < 0 or ts % MINUTE_MS != 0:
        return "ts"
    if prev_ts is not None and ts <= prev_ts:
        return "ts"
    for name, price in (("open", o), ("high", h), ("low", l), ("close", c)):
        if not math.isfinite(price):
            return name
    for name, price in (("open", o), ("high", h), ("low", l), ("close", c)):
        if price <= 0:
            return name
    if not math.isfinite(v) or v < 0:
        return "volume"
    if h < max(o, c):
        return "high"
    if l > min(o, c):
        return "low"
    return None


class BarValidatorRef:
    """Accepts valid bars in time order and counts the missing minutes between them."""

    def __init__(self) -> None:
        self.last_ts: int | None = None
        self.gaps = 0
        self.missing_bars = 0

    def check(self, ts: int, o: float, h: float, l: float, c: float, v: float) -> int:
        problem = bar_problem(self.last_ts, ts, o, h, l, c, v)
        if problem is not None:
            raise ValueError(problem)
        missing = 0 if self.last_ts is None else (ts - self.last_ts) // MINUTE_MS - 1
        if missing:
            self.gaps += 1
            self.missing_bars += missing
        self.last_ts = ts
        return missing


def combine(bucket_start: int, bars: list[tuple[int, float, float, float, float, float]]) -> tuple:
    """The bar of one bucket from its 1-minute bars, in time order."""
    return (
        bucket_start,
        bars[0][1],
        max(b[2] for b in bars),
        min(b[3] for b in bars),
        bars[-1][4],
        math.fsum(b[5] for b in bars),
    )


class TimeframeAggregatorRef:
    """Collects the 1-minute bars of the current bucket and emits its bar once complete."""

    def __init__(self, minutes: int) -> None:
        self.tf_ms = minutes * MINUTE_MS
        self.bucket: int | None = None
        self.bars: list[tuple[int, float, float, float, float, float]] = []

    def update(self, ts: int, o: float, h: float, l: float, c: float, v: float) -> list[tuple]:
        emitted = []
        bucket = ts // self.tf_ms
        if self.bars and bucket != self.bucket:
            emitted.append(combine(self.bucket * self.tf_ms, self.bars))
            self.bars = []
        self.bucket = bucket
        self.bars.append((ts, o, h, l, c, v))
        if ts + MINUTE_MS == (bucket + 1) * self.tf_ms:
            emitted.append(combine(bucket * self.tf_ms, self.bars))
            self.bars = []
        return emitted

    def forming(self) -> tuple | None:
        return combine(self.bucket * self.tf_ms, self.bars) if self.bars else None
