"""Faithful plain-library alternatives to ``TechnicalState`` for the per-bar benchmark.

Each class consumes one 1-minute bar per ``update(ts, open, high, low, close, volume)``,
aggregates it into 5m/15m/1h itself (UTC-aligned buckets; a bar closes as soon as its
last minute arrives, or when a gap skips past it -- the rules of
``l2fast.technical.bars.MultiTimeframeAggregator``) and refreshes RSI14, RSI21, MACD 12/26/9,
Bollinger Bands 20/2 (plus %B) and ATR14 (plus ATR/close) of every timeframe whose bar
closed, writing into one preallocated list. This is the indicator subset the brief
compares; ``TechnicalState`` computes many more per bar, so the comparison favours the
alternatives. No alternative validates bars (ours does), which favours them too.

The three are what a Python user would write with each library:

* :class:`TalibStreamState` -- TA-Lib 0.8 streaming handles (``talib.stream``), opened on
  the first bars of each timeframe and then advanced one closed bar at a time.
* :class:`TalippState` -- talipp incremental indicators fed with ``add``.
* :class:`PandasTaState` -- the last 500 bars of each timeframe in deques, recomputed with
  pandas + ``ta`` whenever that timeframe closes a bar.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np

NAN = math.nan
MINUTE_MS = 60_000

# Per timeframe, in this order; index = tf_index * len(FIELDS) + field_index.
FIELDS = (
    "rsi_14",
    "rsi_21",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "bb_pctb",
    "atr_14",
    "atr_pct",
)
NF = len(FIELDS)
TIMEFRAMES = ((1, "1m"), (5, "5m"), (15, "15m"), (60, "1h"))


class BucketAggregator:
    """One higher timeframe built from 1-minute bars, closing a bar as early as it is known.

    ``step`` returns the bars it closed (0, 1 or 2 of them: a gap can close the forming
    bar and the new minute can itself be the last of its bucket) as ``(o, h, l, c, v)``.
    """

    __slots__ = ("tf_ms", "last_offset", "start", "o", "h", "l", "c", "v")

    def __init__(self, minutes: int) -> None:
        self.tf_ms = minutes * MINUTE_MS
        self.last_offset = self.tf_ms - MINUTE_MS
        self.start = -1  # -1: nothing forming

    def step(self, ts: int, o: float, h: float, l: float, c: float, v: float) -> list[tuple]:
        offset = ts % self.tf_ms
        start = ts - offset
        closed = []
        if self.start >= 0 and self.start != start:
            closed.append((self.o, self.h, self.l, self.c, self.v))
            self.start = -1
        if self.start >= 0:
            if h > self.h:
                self.h = h
            if l < self.l:
                self.l = l
            self.c = c
            self.v += v
        else:
            self.start, self.o, self.h, self.l, self.c, self.v = start, o, h, l, c, v
        if offset == self.last_offset:
            closed.append((self.o, self.h, self.l, self.c, self.v))
            self.start = -1
        return closed


class _MultiTimeframe:
    """Shared driver: 1m bars go straight to slot 0, higher timeframes through aggregators."""

    def __init__(self) -> None:
        self.values = [NAN] * (NF * len(TIMEFRAMES))
        self._aggs = [(i, BucketAggregator(m)) for i, (m, _) in enumerate(TIMEFRAMES) if m > 1]

    def update(self, ts: int, o: float, h: float, l: float, c: float, v: float) -> int:
        """Consume one 1-minute bar; returns how many timeframe bars it closed."""
        self._on_bar(0, o, h, l, c, v)
        n = 1
        for i, agg in self._aggs:
            for bar in agg.step(ts, o, h, l, c, v):
                self._on_bar(i, *bar)
                n += 1
        return n

    def warm_up(self, ts: Iterable, o: Iterable, h: Iterable, l: Iterable, c: Iterable, v: Iterable) -> None:
        """Feed a history bar by bar (the state then equals streaming it)."""
        upd = self.update
        for row in zip(ts, o, h, l, c, v):
            upd(*row)

    def value(self, name: str, tf: str) -> float:
        """One output by field name and timeframe name, e.g. ``("rsi_14", "5m")``."""
        return self.values[[t for _, t in TIMEFRAMES].index(tf) * NF + FIELDS.index(name)]

    def _on_bar(self, i: int, o: float, h: float, l: float, c: float, v: float) -> None:
        raise NotImplementedError

    def _store(self, i: int, rsi14, rsi21, macd, sig, hist, upper, middle, lower, atr, close) -> None:
        width = upper - lower
        k = i * NF
        self.values[k : k + NF] = (
            rsi14,
            rsi21,
            macd,
            sig,
            hist,
            upper,
            middle,
            lower,
            (close - lower) / width if width > 0.0 else NAN,
            atr,
            atr / close,
        )


class TalibStreamState(_MultiTimeframe):
    """TA-Lib 0.8 streaming handles per timeframe.

    A handle opens on history (``lookback + 1`` bars at least), so each timeframe keeps its
    first ``OPEN_AFTER`` bars and then opens all its handles at once.
    """

    OPEN_AFTER = 64  # > MACD 12/26/9's lookback of 33, the longest here

    def __init__(self) -> None:
        super().__init__()
        import talib.stream

        self._stream = talib.stream
        self._handles: list[tuple | None] = [None] * len(TIMEFRAMES)
        self._history: list[list[list[float]]] = [[[], [], []] for _ in TIMEFRAMES]

    def _open(self, i: int) -> None:
        s = self._stream
        hh, ll, cc = (np.array(col) for col in self._history[i])
        handles = (
            s.RSI(cc, timeperiod=14),
            s.RSI(cc, timeperiod=21),
            s.MACD(cc, fastperiod=12, slowperiod=26, signalperiod=9),
            s.BBANDS(cc, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0),
            s.ATR(hh, ll, cc, timeperiod=14),
        )
        self._handles[i] = handles
        self._history[i] = None
        m, sg, hs = handles[2].value
        up, mid, lo = handles[3].value
        self._store(i, handles[0].value, handles[1].value, m, sg, hs, up, mid, lo, handles[4].value, cc[-1])

    def _on_bar(self, i: int, o: float, h: float, l: float, c: float, v: float) -> None:
        handles = self._handles[i]
        if handles is None:
            hist = self._history[i]
            hist[0].append(h)
            hist[1].append(l)
            hist[2].append(c)
            if len(hist[2]) >= self.OPEN_AFTER:
                self._open(i)
            return
        rsi14, rsi21, macd, bb, atr = handles
        m, sg, hs = macd.update(c)
        up, mid, lo = bb.update(c)
        self._store(i, rsi14.update(c), rsi21.update(c), m, sg, hs, up, mid, lo, atr.update(h, l, c), c)


class TalippState(_MultiTimeframe):
    """talipp incremental indicators per timeframe, fed with ``add``."""

    def __init__(self) -> None:
        super().__init__()
        from talipp.indicators import ATR, BB, MACD, RSI
        from talipp.ohlcv import OHLCV

        self._ohlcv = OHLCV
        self._inds = [(RSI(14), RSI(21), MACD(12, 26, 9), BB(20, 2.0), ATR(14)) for _ in TIMEFRAMES]

    def _on_bar(self, i: int, o: float, h: float, l: float, c: float, v: float) -> None:
        rsi14, rsi21, macd, bb, atr = self._inds[i]
        rsi14.add(c)
        rsi21.add(c)
        macd.add(c)
        bb.add(c)
        atr.add(self._ohlcv(o, h, l, c, v))
        r14, r21, mv, bv, a = rsi14[-1], rsi21[-1], macd[-1], bb[-1], atr[-1]
        if mv is None or mv.signal is None:
            m = sg = hs = NAN
        else:
            m, sg, hs = mv.macd, mv.signal, mv.histogram
        up, mid, lo = (NAN, NAN, NAN) if bv is None else (bv.ub, bv.cb, bv.lb)
        self._store(
            i,
            NAN if r14 is None else r14,
            NAN if r21 is None else r21,
            m,
            sg,
            hs,
            up,
            mid,
            lo,
            NAN if a is None else a,
            c,
        )


class PandasTaState(_MultiTimeframe):
    """pandas + ``ta``: recompute every indicator on the last ``window`` bars of a timeframe
    each time it closes a bar (the usual notebook approach, made incremental only in
    keeping the history in bounded deques)."""

    def __init__(self, window: int = 500) -> None:
        super().__init__()
        import pandas as pd
        from ta.momentum import RSIIndicator
        from ta.trend import MACD
        from ta.volatility import AverageTrueRange, BollingerBands

        self._pd = pd
        self._ta = (RSIIndicator, MACD, BollingerBands, AverageTrueRange)
        self._hist = [(deque(maxlen=window), deque(maxlen=window), deque(maxlen=window)) for _ in TIMEFRAMES]
        self._compute = True

    def warm_up(self, ts, o, h, l, c, v) -> None:
        """Fill the histories without recomputing per bar, then compute once per timeframe."""
        self._compute = False
        try:
            super().warm_up(ts, o, h, l, c, v)
        finally:
            self._compute = True
        for i in range(len(TIMEFRAMES)):
            self._recompute(i)

    def _on_bar(self, i: int, o: float, h: float, l: float, c: float, v: float) -> None:
        hh, ll, cc = self._hist[i]
        hh.append(h)
        ll.append(l)
        cc.append(c)
        if self._compute:
            self._recompute(i)

    def _recompute(self, i: int) -> None:
        pd = self._pd
        RSIIndicator, MACD, BollingerBands, AverageTrueRange = self._ta
        hh, ll, cc = self._hist[i]
        if len(cc) < 2:
            return
        high, low, close = pd.Series(hh), pd.Series(ll), pd.Series(cc)
        macd = MACD(close, window_slow=26, window_fast=12, window_sign=9)
        bb = BollingerBands(close, window=20, window_dev=2)
        self._store(
            i,
            RSIIndicator(close, window=14).rsi().iloc[-1],
            RSIIndicator(close, window=21).rsi().iloc[-1],
            macd.macd().iloc[-1],
            macd.macd_signal().iloc[-1],
            macd.macd_diff().iloc[-1],
            bb.bollinger_hband().iloc[-1],
            bb.bollinger_mavg().iloc[-1],
            bb.bollinger_lband().iloc[-1],
            AverageTrueRange(high, low, close, window=14).average_true_range().iloc[-1],
            cc[-1],
        )


def expected_values(bars: dict[str, np.ndarray], n: int) -> dict[tuple[str, str], float]:
    """The reference outputs after the first ``n`` bars, from TA-Lib's batch functions on
    bars aggregated by l2fast's aggregator; used to check each alternative is faithful."""
    import talib

    from l2fast.technical.bars import MultiTimeframeAggregator

    cols = [bars[k][:n] for k in ("ts", "open", "high", "low", "close", "volume")]
    agg = MultiTimeframeAggregator([t for m, t in TIMEFRAMES if m > 1]).aggregate_many(*cols)
    per_tf = {"1m": {"high": cols[2], "low": cols[3], "close": cols[4]}}
    per_tf.update(agg)
    out: dict[tuple[str, str], float] = {}
    for _, tf in TIMEFRAMES:
        h, lo, c = (np.ascontiguousarray(per_tf[tf][k], dtype=np.float64) for k in ("high", "low", "close"))
        m, sg, hs = talib.MACD(c, 12, 26, 9)
        up, mid, low = talib.BBANDS(c, 20, 2.0, 2.0, 0)
        atr = talib.ATR(h, lo, c, 14)
        row = {
            "rsi_14": talib.RSI(c, 14)[-1],
            "rsi_21": talib.RSI(c, 21)[-1],
            "macd": m[-1],
            "macd_signal": sg[-1],
            "macd_hist": hs[-1],
            "bb_upper": up[-1],
            "bb_middle": mid[-1],
            "bb_lower": low[-1],
            "bb_pctb": (c[-1] - low[-1]) / (up[-1] - low[-1]),
            "atr_14": atr[-1],
            "atr_pct": atr[-1] / c[-1],
        }
        out.update({(name, tf): float(val) for name, val in row.items()})
    return out
