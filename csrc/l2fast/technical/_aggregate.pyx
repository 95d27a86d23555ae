"""Bar validation (grid, order, OHLC consistency, gaps) and multi-timeframe aggregation.

1-minute bars roll up into UTC-aligned buckets of any timeframe dividing one day; each
higher-timeframe bar equals pandas' ``resample(rule, label="left", closed="left")`` with
first/max/min/last/sum and empty buckets dropped, and is emitted as soon as it is known
complete: on its last minute, or when a later bucket's first bar shows that minute missing.
"""

from libc.math cimport isfinite
from libc.stdlib cimport free, malloc

import operator
import re
from typing import NamedTuple

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidBarError, InvalidInputError

from l2fast._checks cimport check_same_length

cnp.import_array()


class Bar(NamedTuple):
    """One OHLCV bar; ``ts`` is its open time in epoch milliseconds, UTC."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


# ------------------------------------------------------------------- bar guard

cdef void bar_guard_init(BarGuard* g) noexcept nogil:
    g.has_last = False
    g.last_ts = 0
    g.gaps = 0
    g.missing = 0


cdef BarFault bar_fault(const BarGuard* g, long long ts, double o, double h, double l,
                        double c, double v) noexcept nogil:
    if ts < 0:
        return BAR_TS_NEGATIVE
    if ts % MINUTE_MS != 0:
        return BAR_TS_OFF_GRID
    if g.has_last:
        if ts == g.last_ts:
            return BAR_TS_DUPLICATE
        if ts < g.last_ts:
            return BAR_TS_OUT_OF_ORDER
    # Finiteness first: NaN compares false, so ``x <= 0`` alone would let it through.
    if not isfinite(o):
        return BAR_OPEN_NONFINITE
    if not isfinite(h):
        return BAR_HIGH_NONFINITE
    if not isfinite(l):
        return BAR_LOW_NONFINITE
    if not isfinite(c):
        return BAR_CLOSE_NONFINITE
    if o <= 0.0:
        return BAR_OPEN_NONPOSITIVE
    if h <= 0.0:
        return BAR_HIGH_NONPOSITIVE
    if l <= 0.0:
        return BAR_LOW_NONPOSITIVE
    if c <= 0.0:
        return BAR_CLOSE_NONPOSITIVE
    if not isfinite(v):
        return BAR_VOLUME_NONFINITE
    if v < 0.0:
        return BAR_VOLUME_NEGATIVE
    if h < o or h < c:
        return BAR_HIGH_BELOW_BODY
    if l > o or l > c:
        return BAR_LOW_ABOVE_BODY
    return BAR_OK


cdef object bar_error(BarFault f, const BarGuard* g, long long ts, double o, double h,
                      double l, double c, double v, str where=""):
    """The InvalidBarError describing fault ``f``; ``where`` prefixes the reason."""
    if f == BAR_TS_NEGATIVE:
        return InvalidBarError("ts", ts, where + "must be a non-negative epoch time in ms")
    if f == BAR_TS_OFF_GRID:
        return InvalidBarError(
            "ts", ts, where + f"not a whole minute (ts % 60000 = {ts % MINUTE_MS})")
    if f == BAR_TS_DUPLICATE:
        return InvalidBarError("ts", ts, where + "duplicate of the previous bar's ts")
    if f == BAR_TS_OUT_OF_ORDER:
        return InvalidBarError(
            "ts", ts, where + f"out of order: before the previous bar's ts={g.last_ts}")
    prices = {"open": o, "high": h, "low": l, "close": c}
    if BAR_OPEN_NONFINITE <= f <= BAR_CLOSE_NONFINITE:
        name = ("open", "high", "low", "close")[<int>f - <int>BAR_OPEN_NONFINITE]
        return InvalidBarError(name, prices[name], where + "must be finite")
    if BAR_OPEN_NONPOSITIVE <= f <= BAR_CLOSE_NONPOSITIVE:
        name = ("open", "high", "low", "close")[<int>f - <int>BAR_OPEN_NONPOSITIVE]
        return InvalidBarError(name, prices[name], where + "must be positive")
    if f == BAR_VOLUME_NONFINITE:
        return InvalidBarError("volume", v, where + "must be finite")
    if f == BAR_VOLUME_NEGATIVE:
        return InvalidBarError("volume", v, where + "must be non-negative")
    if f == BAR_HIGH_BELOW_BODY:
        return InvalidBarError("high", h, where + f"below max(open, close)={max(o, c)!r}")
    return InvalidBarError("low", l, where + f"above min(open, close)={min(o, c)!r}")


cdef int bar_check(const BarGuard* g, long long ts, double o, double h, double l,
                   double c, double v) except -1:
    cdef BarFault f = bar_fault(g, ts, o, h, l, c, v)
    if f != BAR_OK:
        raise bar_error(f, g, ts, o, h, l, c, v)
    return 0


cdef long long bar_commit(BarGuard* g, long long ts) noexcept nogil:
    cdef long long missing = 0
    if g.has_last:
        missing = (ts - g.last_ts) // MINUTE_MS - 1
        if missing > 0:
            g.gaps += 1
            g.missing += missing
    g.has_last = True
    g.last_ts = ts
    return missing


# -------------------------------------------------------- timeframe aggregator

cdef void tf_init(TFAgg* a, long long tf_ms) noexcept nogil:
    a.tf_ms = tf_ms
    a.has_forming = False


cdef int tf_step(TFAgg* a, long long ts, double o, double h, double l, double c,
                 double v) noexcept nogil:
    cdef long long start = ts - ts % a.tf_ms
    cdef int k = 0
    if a.has_forming and a.forming.ts != start:
        a.closed[0] = a.forming
        a.has_forming = False
        k = 1
    if a.has_forming:
        if h > a.forming.high:
            a.forming.high = h
        if l < a.forming.low:
            a.forming.low = l
        a.forming.close = c
        a.forming.volume += v
    else:
        a.forming.ts = start
        a.forming.open = o
        a.forming.high = h
        a.forming.low = l
        a.forming.close = c
        a.forming.volume = v
        a.has_forming = True
    if ts - start == a.tf_ms - MINUTE_MS:
        a.closed[k] = a.forming
        a.has_forming = False
        k += 1
    return k


# ------------------------------------------------------------- Python helpers

_TIMEFRAME = re.compile(r"([1-9][0-9]*)([mhd])")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440}


def parse_timeframe(tf: str | int) -> int:
    """Minutes in a timeframe given as ``"<n>m"``, ``"<n>h"``, ``"<n>d"`` or integer minutes.

    Args:
        tf: E.g. ``"1m"``, ``"5m"``, ``"15m"``, ``"1h"``, ``"4h"``, ``"1d"`` or ``240``.

    Returns:
        The timeframe in minutes.

    Raises:
        InvalidInputError: ``tf`` is malformed, or does not divide one day (1440 minutes),
            which buckets aligned to UTC midnight require.
    """
    if isinstance(tf, str):
        match = _TIMEFRAME.fullmatch(tf)
        if match is None:
            raise InvalidInputError(
                f"timeframe={tf!r}: expected '<n>m', '<n>h', '<n>d' (e.g. '5m', '4h', '1d') "
                "or an integer number of minutes")
        minutes = int(match[1]) * _UNIT_MINUTES[match[2]]
    elif isinstance(tf, bool):
        raise InvalidInputError(f"timeframe={tf!r}: expected a string or integer minutes")
    else:
        try:
            minutes = operator.index(tf)
        except TypeError:
            raise InvalidInputError(
                f"timeframe={tf!r}: expected a string or integer minutes") from None
    if minutes < 1 or 1440 % minutes != 0:
        raise InvalidInputError(
            f"timeframe={tf!r}: must be a whole number of minutes dividing one day (1440), "
            "so that buckets align to UTC midnight")
    return minutes


def timeframe_name(minutes: int) -> str:
    """Canonical name of a timeframe: ``"1d"``, ``"<n>h"`` for whole hours, else ``"<n>m"``."""
    if minutes == 1440:
        return "1d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


cdef object as_bar(const OHLCV* b):
    return Bar(b.ts, b.open, b.high, b.low, b.close, b.volume)


cdef tuple as_bar_arrays(ts, open, high, low, close, volume):
    """C-contiguous int64 ts and float64 price/volume columns of one common length."""
    t = np.asarray(ts)
    if t.ndim != 1:
        raise InvalidInputError(f"ts: expected a 1-D array, got shape {t.shape}")
    if t.dtype.kind not in "iu":
        raise InvalidInputError(f"ts: expected integer epoch ms, got dtype {t.dtype}")
    out = [np.ascontiguousarray(t, dtype=np.int64)]
    for name, values in (("open", open), ("high", high), ("low", low), ("close", close),
                         ("volume", volume)):
        arr = np.ascontiguousarray(values, dtype=np.float64)
        if arr.ndim != 1:
            raise InvalidInputError(f"{name}: expected a 1-D array, got shape {arr.shape}")
        check_same_length(t.shape[0], arr.shape[0], name)
        out.append(arr)
    return tuple(out)


cdef int check_rows(BarGuard* g, tuple cols) except -1:
    """Validate and commit every row into ``g``, all or nothing; errors name the row."""
    cdef const long long[::1] t = cols[0]
    cdef const double[::1] o = cols[1]
    cdef const double[::1] h = cols[2]
    cdef const double[::1] l = cols[3]
    cdef const double[::1] c = cols[4]
    cdef const double[::1] v = cols[5]
    cdef BarGuard trial = g[0]
    cdef BarFault f = BAR_OK
    cdef Py_ssize_t i = 0, n = t.shape[0]
    with nogil:
        while i < n:
            f = bar_fault(&trial, t[i], o[i], h[i], l[i], c[i], v[i])
            if f != BAR_OK:
                break
            bar_commit(&trial, t[i])
            i += 1
    if f != BAR_OK:
        raise bar_error(f, &trial, t[i], o[i], h[i], l[i], c[i], v[i], f"row {i}: ")
    g[0] = trial
    return 0


# ------------------------------------------------------------- Python classes

cdef class BarValidator:
    """Validates a stream of 1-minute bars and counts the gaps between them.

    A bar is rejected (``InvalidBarError`` naming the field and value; the validator
    keeps its state) if a price is non-finite or not positive, the volume is negative or
    non-finite, ``high < max(open, close)``, ``low > min(open, close)``, ``ts`` is not a
    non-negative whole minute, or ``ts`` is not after the previous bar's (duplicate or
    out of order). Missing minutes are legal and counted.
    """

    cdef BarGuard _g

    def __cinit__(self):
        bar_guard_init(&self._g)

    @property
    def gaps(self) -> int:
        """Number of gaps (runs of missing minutes) between accepted bars."""
        return self._g.gaps

    @property
    def missing_bars(self) -> int:
        """Total number of missing 1-minute bars inside those gaps."""
        return self._g.missing

    @property
    def last_ts(self) -> int | None:
        """Open time of the last accepted bar, or None before the first."""
        return self._g.last_ts if self._g.has_last else None

    cpdef long long check(self, long long ts, double open, double high, double low,
                          double close, double volume) except -1:
        """Accept one bar; returns how many minutes are missing just before it."""
        bar_check(&self._g, ts, open, high, low, close, volume)
        return bar_commit(&self._g, ts)

    def check_many(self, ts, open, high, low, close, volume) -> None:
        """Accept a whole series (all or nothing); errors name the 0-based row."""
        check_rows(&self._g, as_bar_arrays(ts, open, high, low, close, volume))

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        bar_guard_init(&self._g)


cdef class MultiTimeframeAggregator:
    """Rolls validated 1-minute bars up into several higher timeframes at once.

    Buckets are aligned to UTC (a bucket starts at ``ts - ts % tf_ms``). A bucket's bar is
    emitted as soon as it is known complete: with its last minute, or, when that minute
    is missing, with the first bar of a later bucket (which may then close too, so one
    step can emit two bars of a timeframe). Buckets with no bar produce nothing.

    Args:
        timeframes: Timeframes to build, each a string (``"5m"``, ``"4h"``, ``"1d"``) or
            integer minutes dividing one day. Results are keyed by canonical name
            (``timeframe_name``), in the given order. No default: the engine's are
            ``technical.timeframes`` of the config.
    """

    cdef BarGuard _g
    cdef TFAgg* _aggs
    cdef Py_ssize_t _n
    cdef tuple _names
    cdef dict _index

    def __cinit__(self, timeframes):
        if isinstance(timeframes, str) or not hasattr(timeframes, "__iter__"):
            timeframes = (timeframes,)
        names = []
        index = {}
        for tf in timeframes:
            minutes = parse_timeframe(tf)
            if minutes in index:
                raise InvalidInputError(
                    f"timeframes: {tf!r} duplicates {names[index[minutes]]!r}")
            index[minutes] = len(names)
            names.append(timeframe_name(minutes))
        if not names:
            raise InvalidInputError("timeframes: need at least one timeframe")
        self._aggs = <TFAgg*>malloc(len(names) * sizeof(TFAgg))
        if self._aggs == NULL:
            raise MemoryError()
        self._n = len(names)
        self._names = tuple(names)
        self._index = index
        bar_guard_init(&self._g)
        for minutes, i in index.items():
            tf_init(&self._aggs[<Py_ssize_t>i], <long long>minutes * MINUTE_MS)

    def __dealloc__(self):
        free(self._aggs)

    @property
    def timeframes(self) -> tuple[str, ...]:
        """Canonical names of the timeframes, in construction order."""
        return self._names

    @property
    def gaps(self) -> int:
        """Number of gaps (runs of missing minutes) between accepted bars."""
        return self._g.gaps

    @property
    def missing_bars(self) -> int:
        """Total number of missing 1-minute bars inside those gaps."""
        return self._g.missing

    @property
    def last_ts(self) -> int | None:
        """Open time of the last accepted 1-minute bar, or None before the first."""
        return self._g.last_ts if self._g.has_last else None

    def update(self, long long ts, double open, double high, double low, double close,
               double volume) -> dict:
        """Add one 1-minute bar; returns the bars it closed, ``{name: [Bar, ...]}``.

        Only timeframes that closed a bar appear (oldest bar first), so most steps return
        an empty dict. An invalid bar raises ``InvalidBarError`` and changes nothing.
        """
        cdef Py_ssize_t i
        cdef int j, k
        cdef TFAgg* a
        bar_check(&self._g, ts, open, high, low, close, volume)
        bar_commit(&self._g, ts)
        out = {}
        for i in range(self._n):
            a = &self._aggs[i]
            k = tf_step(a, ts, open, high, low, close, volume)
            if k:
                out[self._names[i]] = [as_bar(&a.closed[j]) for j in range(k)]
        return out

    def forming(self, tf: str | int) -> Bar | None:
        """The incomplete bar of timeframe ``tf`` so far, or None if none is forming."""
        minutes = parse_timeframe(tf)
        i = self._index.get(minutes)
        if i is None:
            raise InvalidInputError(
                f"timeframe={tf!r}: not aggregated here (timeframes: {self._names})")
        cdef TFAgg* a = &self._aggs[<Py_ssize_t>i]
        return as_bar(&a.forming) if a.has_forming else None

    def aggregate_many(self, ts, open, high, low, close, volume) -> dict:
        """Add a series of 1-minute bars; returns every bar they closed, per timeframe.

        Equivalent to calling ``update`` on each row and concatenating the results, but
        runs in C. The whole series is validated first: an invalid row raises
        ``InvalidBarError`` naming the row and nothing changes.

        Returns:
            ``{name: {"ts", "open", "high", "low", "close", "volume": array}}``, ts int64
            and the rest float64, oldest first. Bars still forming at the end are not
            included (see ``forming``).
        """
        cols = as_bar_arrays(ts, open, high, low, close, volume)
        check_rows(&self._g, cols)
        cdef const long long[::1] t = cols[0]
        cdef const double[::1] o = cols[1]
        cdef const double[::1] h = cols[2]
        cdef const double[::1] l = cols[3]
        cdef const double[::1] c = cols[4]
        cdef const double[::1] v = cols[5]
        cdef Py_ssize_t n = t.shape[0], i, m, cap, q
        cdef int j, k
        cdef long long first, last
        cdef TFAgg* a
        cdef long long[::1] rt
        cdef double[::1] ro, rh, rl, rc, rv
        result = {}
        for q in range(self._n):
            a = &self._aggs[q]
            cap = 0
            if n:
                # Closed bars are distinct buckets between the forming one (or the first
                # row's) and the last row's, and at most one per row plus the forming one.
                first = a.forming.ts if a.has_forming else t[0] - t[0] % a.tf_ms
                last = t[n - 1] - t[n - 1] % a.tf_ms
                cap = min(n + 1, (last - first) // a.tf_ms + 1)
            bars = {"ts": np.empty(cap, dtype=np.int64)}
            for name in ("open", "high", "low", "close", "volume"):
                bars[name] = np.empty(cap, dtype=np.float64)
            rt = bars["ts"]
            ro, rh, rl, rc, rv = bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"]
            m = 0
            with nogil:
                for i in range(n):
                    k = tf_step(a, t[i], o[i], h[i], l[i], c[i], v[i])
                    for j in range(k):
                        rt[m] = a.closed[j].ts
                        ro[m] = a.closed[j].open
                        rh[m] = a.closed[j].high
                        rl[m] = a.closed[j].low
                        rc[m] = a.closed[j].close
                        rv[m] = a.closed[j].volume
                        m += 1
            result[self._names[q]] = {name: arr[:m] for name, arr in bars.items()}
        return result

    cpdef void reset(self):
        """Return to the freshly constructed state (same timeframes)."""
        cdef Py_ssize_t i
        bar_guard_init(&self._g)
        for i in range(self._n):
            tf_init(&self._aggs[i], self._aggs[i].tf_ms)
