"""stockstats-compatible indicators: FinRL's features, computed incrementally.

FinRL (0.3.7) computes its indicators per ticker as ``StockDataFrame.retype(df)[name]``
with stockstats (0.6.10). These kernels give the same values bar by bar, from the first
bar of a series, to within rounding (tests/test_stockstats.py: relative 1e-9):

* ``close_<n>_sma``: ``StockstatsSMA(n)``;
* ``close_<n>_ema``: ``StockstatsEMA(n)``;
* ``boll_<n>``, ``boll_ub_<n>``, ``boll_lb_<n>``: ``StockstatsBollingerBands(n)``, which
  returns ``(boll, ub, lb)`` (stockstats makes the three together from ``boll_<n>``);
* ``macd_<a>,<b>,<c>``, ``macds_<a>,<b>,<c>``, ``macdh_<a>,<b>,<c>``:
  ``StockstatsMACD(a, b, c)``, which returns ``(macd, macds, macdh)``;
* ``rsi_<n>``: ``StockstatsRSI(n)``;
* ``atr_<n>``: ``StockstatsATR(n)``;
* ``dx_<n>``, ``pdi_<n>``, ``ndi_<n>``: ``StockstatsDX(n)``, which returns
  ``(dx, pdi, ndi)``;
* ``cci_<n>``: ``StockstatsCCI(n)``.

stockstats' bare names take its defaults: ``rsi``, ``atr``, ``cci`` 14, ``boll`` (with
``boll_ub``, ``boll_lb``) 20, ``macd`` (``macds``, ``macdh``) 12, 26, 9; a bare ``dx`` is its
DMI set with a period of 14, the same values as ``dx_14``.

Warm-up conventions reproduced (stockstats gives a value on every row, from the first):

* ``sma`` and Bollinger's middle band: pandas ``rolling(n, min_periods=1).mean()``, the
  mean of the bars so far until n bars exist;
* Bollinger's bands: +/- ``BOLL_STD_TIMES`` (2, fixed) sample standard deviations (ddof
  1) of the same partial window, hence NaN on the first bar (and always for n = 1);
* ``ema``: pandas ``ewm(span=n, adjust=True)``, the exactly weighted mean of all bars so
  far (the first value is the first close, no SMA seed); MACD's three EMAs likewise,
  so macd, macds and macdh are 0 on the first bar;
* RSI, ATR, +DI/-DI: Wilder's smoothing as pandas ``ewm(alpha=1/n, adjust=True)`` over
  the series from its first row; the first row's close change and directional moves
  count as 0 and its true range takes the bar's own close as the previous close
  (stockstats 0.6.10 back-fills the shifted close), so it is ``high - low``;
* RSI is 50 on the first bar and whenever the average rise plus fall is exactly 0;
* pdi/ndi are ``100 * SMMA(DM) / ATR``: NaN while the ATR is exactly 0 (a flat start),
  and DX is 0 when pdi + ndi is 0, NaN with them;
* CCI is 0 for the first n - 1 bars (stockstats zero-fills the mean absolute
  deviation there) and whenever ``0.015 * MAD`` is 0; its SMA is the partial-window one.

Rounding: the SMAs keep pandas' compensated running sums (bit-identical to pandas'
``rolling().mean()``) and the exponential means pandas' weighted-mean recurrence
(bit-identical on the real data); the Bollinger variance is rebuilt over its window every
``period`` bars, where pandas' running variance drifts (on 2- or 3-bar windows of BTC/ETH
closes by up to ~1e-3, more than the 1e-9 tolerance: there the bands equal a two-pass
sample std instead); CCI's MAD is a fresh pass as in stockstats.

What is NOT copied: stockstats computes on a whole table, so a series shorter than the
CCI window gets NaN on every row (here: the zeros above, which do not depend on the
future length), and FinRL then forward- and back-fills each ticker's first NaN rows
(the first Bollinger bands) with later values (FinRL fills its whole table sorted by date,
then ticker). That back-fill is a look-ahead: the
kernels return stockstats' value of each bar as it closes and never revise it. The
``warmup`` of each class counts the bars after which its windows are whole.

``TechnicalState(config, extras)`` (_features.pyx) embeds them as extra features on any
configured timeframe; the engine does not request them yet.
"""

from libc.math cimport NAN, fabs, sqrt

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidInputError

from l2fast.technical._averages cimport window_free, window_get, window_init, window_push
from l2fast._checks cimport as_input, check_finite, check_period, check_same_length

cnp.import_array()


# ------------------------------------------------------------- rolling mean

cdef int ss_sma_init(SSSMAState* s, Py_ssize_t period) except -1:
    window_init(&s.win, period)
    ss_sma_reset(s)
    return 0


cdef void ss_sma_reset(SSSMAState* s) noexcept nogil:
    s.win.head = 0
    s.win.n = 0
    s.total = 0.0
    s.comp = 0.0
    s.comp_out = 0.0
    s.last = 0.0
    s.same = 0


cdef void ss_sma_free(SSSMAState* s) noexcept nogil:
    window_free(&s.win)


cdef inline void _kahan_add(SSSMAState* s, double v, double* comp) noexcept nogil:
    cdef double y = v - comp[0]
    cdef double t = s.total + y
    comp[0] = (t - s.total) - y
    s.total = t


cdef inline double _sma(SSSMAState* s, double x) noexcept nogil:
    cdef Py_ssize_t period = s.win.size
    cdef long long count
    if s.win.n >= period:
        # The oldest value leaves before the newest enters (a window of 1 then sums
        # to exactly x).
        _kahan_add(s, -window_get(&s.win, period - 1), &s.comp_out)
    window_push(&s.win, x)
    _kahan_add(s, x, &s.comp)
    if s.win.n > 1 and x == s.last:
        s.same += 1
    else:
        s.same = 1
    s.last = x
    count = s.win.n if s.win.n < period else period
    # pandas returns a window of equal values exactly, not its rounded sum / count.
    if s.same >= count:
        return x
    return s.total / <double>count


cdef double ss_sma_step(SSSMAState* s, double x) noexcept nogil:
    return _sma(s, x)


# --------------------------------------------------------- exponential means

cdef inline void _ewm_init(SSEWMState* s, double alpha) noexcept nogil:
    s.decay = 1.0 - alpha
    s.weight = 0.0
    s.value = 0.0
    s.n = 0


cdef void ss_ema_init(SSEWMState* s, Py_ssize_t period) noexcept nogil:
    _ewm_init(s, 2.0 / (<double>period + 1.0))


cdef void ss_smma_init(SSEWMState* s, Py_ssize_t period) noexcept nogil:
    _ewm_init(s, 1.0 / <double>period)


cdef inline double _ewm(SSEWMState* s, double x) noexcept nogil:
    # The weighted mean sum(w_i x_i) / sum(w_i) with the old weights decayed: the new
    # value has weight 1, the mean so far the decayed total ``old``.
    cdef double old = s.weight * s.decay
    s.weight = old + 1.0
    s.n += 1
    # An input equal to the mean leaves it exactly (a constant series stays constant).
    if x != s.value:
        s.value = (old * s.value + x) / s.weight
    return s.value


cdef double ss_ewm_step(SSEWMState* s, double x) noexcept nogil:
    return _ewm(s, x)


# ---------------------------------------------------------------- Bollinger

cdef int ss_boll_init(SSBollState* s, Py_ssize_t period) except -1:
    ss_sma_init(&s.ma, period)
    ss_boll_reset(s)
    return 0


cdef void ss_boll_reset(SSBollState* s) noexcept nogil:
    ss_sma_reset(&s.ma)
    s.mean = 0.0
    s.m2 = 0.0


cdef void ss_boll_free(SSBollState* s) noexcept nogil:
    ss_sma_free(&s.ma)


cdef void _boll_rebuild(SSBollState* s, Py_ssize_t period) noexcept nogil:
    # A running variance's rounding errors accumulate without bound over a long stream,
    # and on a near-flat window of price levels they dwarf the variance itself: once per
    # ``period`` bars the mean and the squared deviations are recomputed over the window
    # (two passes, O(period), so O(1) amortised).
    cdef Py_ssize_t lag
    cdef double mean = 0.0, m2 = 0.0, d
    for lag in range(period - 1, -1, -1):
        mean += window_get(&s.ma.win, lag)
    mean /= <double>period
    for lag in range(period - 1, -1, -1):
        d = window_get(&s.ma.win, lag) - mean
        m2 += d * d
    s.mean = mean
    s.m2 = m2


cdef inline void _boll(SSBollState* s, double x, double* mid, double* upper,
                       double* lower) noexcept nogil:
    cdef Py_ssize_t period = s.ma.win.size
    cdef long long count = s.ma.win.n if s.ma.win.n < period else period
    cdef double old, delta, var, width
    # Welford's update of the window's mean and squared deviations: the oldest value
    # out (read before the SMA step overwrites nothing it needs), the newest in.
    if s.ma.win.n >= period:
        old = window_get(&s.ma.win, period - 1)
        count -= 1
        if count == 0:
            s.mean = 0.0
            s.m2 = 0.0
        else:
            delta = old - s.mean
            s.mean -= delta / <double>count
            s.m2 -= delta * (old - s.mean)
    count += 1
    delta = x - s.mean
    s.mean += delta / <double>count
    s.m2 += delta * (x - s.mean)
    mid[0] = _sma(&s.ma, x)
    if s.ma.win.n % period == 0:
        _boll_rebuild(s, period)
    if count < 2:
        upper[0] = NAN
        lower[0] = NAN
        return
    if s.ma.same >= count or s.m2 <= 0.0:
        # Equal values have no spread; a rounding below 0 is none either (pandas).
        var = 0.0
    else:
        var = s.m2 / <double>(count - 1)
    width = 2.0 * sqrt(var)
    upper[0] = mid[0] + width
    lower[0] = mid[0] - width


cdef void ss_boll_step(SSBollState* s, double close, double* mid, double* upper,
                       double* lower) noexcept nogil:
    _boll(s, close, mid, upper, lower)


# --------------------------------------------------------------------- MACD

cdef void ss_macd_init(SSMACDState* s, Py_ssize_t fast, Py_ssize_t slow,
                       Py_ssize_t signal) noexcept nogil:
    ss_ema_init(&s.fast, fast)
    ss_ema_init(&s.slow, slow)
    ss_ema_init(&s.signal, signal)


cdef inline void _macd(SSMACDState* s, double x, double* macd, double* macds,
                       double* macdh) noexcept nogil:
    cdef double m = _ewm(&s.fast, x) - _ewm(&s.slow, x)
    cdef double sig = _ewm(&s.signal, m)
    macd[0] = m
    macds[0] = sig
    macdh[0] = m - sig


cdef void ss_macd_step(SSMACDState* s, double close, double* macd, double* macds,
                       double* macdh) noexcept nogil:
    _macd(s, close, macd, macds, macdh)


# ---------------------------------------------------------------------- RSI

cdef void ss_rsi_init(SSRSIState* s, Py_ssize_t period) noexcept nogil:
    ss_smma_init(&s.up, period)
    ss_smma_init(&s.down, period)
    s.prev = 0.0


cdef inline double _rsi(SSRSIState* s, double x) noexcept nogil:
    cdef bint first = s.up.n == 0
    cdef double diff = 0.0 if first else x - s.prev
    cdef double up, down, total
    s.prev = x
    up = _ewm(&s.up, diff if diff > 0.0 else 0.0)
    down = _ewm(&s.down, -diff if diff < 0.0 else 0.0)
    total = up + down
    if first or total == 0.0:
        return 50.0
    return 100.0 * (up / total)


cdef double ss_rsi_step(SSRSIState* s, double close) noexcept nogil:
    return _rsi(s, close)


# ---------------------------------------------------------------------- ATR

cdef void ss_atr_init(SSATRState* s, Py_ssize_t period) noexcept nogil:
    ss_smma_init(&s.tr, period)
    s.prev_close = 0.0
    s.n = 0


cdef inline double _atr(SSATRState* s, double high, double low, double close) noexcept nogil:
    cdef double pc = close if s.n == 0 else s.prev_close
    cdef double tr = high - low
    cdef double t = fabs(high - pc)
    cdef double t2 = fabs(low - pc)
    if t2 > t:
        t = t2
    if t > tr:
        tr = t
    s.prev_close = close
    s.n += 1
    return _ewm(&s.tr, tr)


cdef double ss_atr_step(SSATRState* s, double high, double low, double close) noexcept nogil:
    return _atr(s, high, low, close)


# ----------------------------------------------------------------------- DX

cdef void ss_dx_init(SSDXState* s, Py_ssize_t period) noexcept nogil:
    ss_atr_init(&s.atr, period)
    ss_smma_init(&s.pdm, period)
    ss_smma_init(&s.ndm, period)
    s.prev_high = 0.0
    s.prev_low = 0.0


cdef inline void _dx(SSDXState* s, double high, double low, double close, double* dx,
                     double* pdi, double* ndi) noexcept nogil:
    cdef double up = 0.0, down = 0.0, atr, p, m, total
    if s.atr.n > 0:
        up = high - s.prev_high
        down = s.prev_low - low
    s.prev_high = high
    s.prev_low = low
    p = _ewm(&s.pdm, up if up > 0.0 and up > down else 0.0)
    m = _ewm(&s.ndm, down if down > 0.0 and down > up else 0.0)
    atr = _atr(&s.atr, high, low, close)
    # IEEE division on purpose: stockstats' pandas division gives NaN (0 / 0) while
    # the ATR is 0, and DX inherits it (NaN != 0 selects the division).
    p = p / atr * 100.0
    m = m / atr * 100.0
    total = p + m
    pdi[0] = p
    ndi[0] = m
    if total != 0.0:
        dx[0] = fabs(p - m) / total * 100.0
    else:
        dx[0] = 0.0


cdef void ss_dx_step(SSDXState* s, double high, double low, double close, double* dx,
                     double* pdi, double* ndi) noexcept nogil:
    _dx(s, high, low, close, dx, pdi, ndi)


# ---------------------------------------------------------------------- CCI

cdef int ss_cci_init(SSCCIState* s, Py_ssize_t period) except -1:
    return ss_sma_init(&s.tp, period)


cdef void ss_cci_reset(SSCCIState* s) noexcept nogil:
    ss_sma_reset(&s.tp)


cdef void ss_cci_free(SSCCIState* s) noexcept nogil:
    ss_sma_free(&s.tp)


cdef inline double _cci(SSCCIState* s, double high, double low, double close) noexcept nogil:
    cdef Py_ssize_t period = s.tp.win.size, lag
    cdef double tp = (close + high + low) / 3.0
    cdef double ma = _sma(&s.tp, tp)
    cdef double mean = 0.0, mad = 0.0, divisor
    if s.tp.win.n < period:
        return 0.0
    # The window's own mean (not the running SMA), oldest value first, then the mean
    # absolute deviation from it: O(period), as stockstats recomputes it.
    for lag in range(period - 1, -1, -1):
        mean += window_get(&s.tp.win, lag)
    mean /= <double>period
    for lag in range(period - 1, -1, -1):
        mad += fabs(window_get(&s.tp.win, lag) - mean)
    mad /= <double>period
    divisor = 0.015 * mad
    if divisor != 0.0:
        return (tp - ma) / divisor
    return 0.0


cdef double ss_cci_step(SSCCIState* s, double high, double low, double close) noexcept nogil:
    return _cci(s, high, low, close)


# ------------------------------------------------------------- batch loops

cdef void _sma_run(SSSMAState* s, const double* x, double* o, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = _sma(s, x[i])


cdef void _ewm_run(SSEWMState* s, const double* x, double* o, Py_ssize_t n) noexcept nogil:
    cdef SSEWMState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = _ewm(&st, x[i])
    s[0] = st


cdef void _boll_run(SSBollState* s, const double* x, double* om, double* ou, double* ol,
                    Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        _boll(s, x[i], &om[i], &ou[i], &ol[i])


cdef void _macd_run(SSMACDState* s, const double* x, double* om, double* osg, double* oh,
                    Py_ssize_t n) noexcept nogil:
    cdef SSMACDState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        _macd(&st, x[i], &om[i], &osg[i], &oh[i])
    s[0] = st


cdef void _rsi_run(SSRSIState* s, const double* x, double* o, Py_ssize_t n) noexcept nogil:
    cdef SSRSIState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = _rsi(&st, x[i])
    s[0] = st


cdef void _atr_run(SSATRState* s, const double* h, const double* l, const double* c,
                   double* o, Py_ssize_t n) noexcept nogil:
    cdef SSATRState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = _atr(&st, h[i], l[i], c[i])
    s[0] = st


cdef void _dx_run(SSDXState* s, const double* h, const double* l, const double* c,
                  double* od, double* op, double* om, Py_ssize_t n) noexcept nogil:
    cdef SSDXState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        _dx(&st, h[i], l[i], c[i], &od[i], &op[i], &om[i])
    s[0] = st


cdef void _cci_run(SSCCIState* s, const double* h, const double* l, const double* c,
                   double* o, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = _cci(s, h[i], l[i], c[i])


# ------------------------------------------------------------ Python classes

cdef int _check_bar(double high, double low, double close) except -1:
    check_finite(high, "high")
    check_finite(low, "low")
    check_finite(close, "close")
    return 0


cdef tuple _bar_arrays(highs, lows, closes):
    cdef cnp.ndarray ah = as_input(highs, "highs")
    cdef cnp.ndarray al = as_input(lows, "lows")
    cdef cnp.ndarray ac = as_input(closes, "closes")
    check_same_length(ah.shape[0], al.shape[0], "lows")
    check_same_length(ah.shape[0], ac.shape[0], "closes")
    return ah, al, ac


cdef int _no_revision_yet() except -1:
    raise InvalidInputError("update_last: no value to revise yet")


cdef class StockstatsSMA:
    """stockstats' ``close_<period>_sma``: the mean of the last ``period`` values, or of
    all values so far while fewer exist (pandas ``rolling(period, min_periods=1)``).

    Args:
        period: Window length (>= 1).
    """

    cdef SSSMAState _s
    cdef SSSMAState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 1)
        self.period = period
        ss_sma_init(&self._s, period)
        self._prev = self._s

    def __dealloc__(self):
        ss_sma_free(&self._s)

    @property
    def warmup(self) -> int:
        """Updates until the window is whole (``period``)."""
        return self.period

    @property
    def ready(self) -> bool:
        """True once ``warmup`` updates were made (values before are partial-window means)."""
        return self._s.win.n >= self.warmup

    cpdef double update(self, double value) except? -1:
        """Add a closed bar's value and return the SMA."""
        check_finite(value, "value")
        self._prev = self._s
        return ss_sma_step(&self._s, value)

    cpdef double update_last(self, double value) except? -1:
        """Replace the most recent value (an intra-bar revision) and return the SMA."""
        check_finite(value, "value")
        if self._s.win.n == 0:
            _no_revision_yet()
        self._s = self._prev
        return ss_sma_step(&self._s, value)

    def update_many(self, values) -> np.ndarray:
        """Feed an array of values; returns the SMA after each one."""
        cdef cnp.ndarray arr = as_input(values, "values")
        cdef const double[::1] x = arr
        cdef Py_ssize_t n = x.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _sma_run(&self._s, &x[0], &o[0], n - 1)
            self._prev = self._s
            _sma_run(&self._s, &x[n - 1], &o[n - 1], 1)
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        ss_sma_reset(&self._s)
        self._prev = self._s


cdef class StockstatsEMA:
    """stockstats' ``close_<period>_ema``: pandas ``ewm(span=period, adjust=True).mean()``,
    the weighted mean of every value so far with weights ``(1 - 2 / (period + 1)) ** age``.

    Args:
        period: Span (>= 1).
    """

    cdef SSEWMState _s
    cdef SSEWMState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 1)
        self.period = period
        ss_ema_init(&self._s, period)
        self._prev = self._s

    @property
    def warmup(self) -> int:
        """Updates until the average has seen one span (``period``)."""
        return self.period

    @property
    def ready(self) -> bool:
        """True once ``warmup`` updates were made."""
        return self._s.n >= self.warmup

    cpdef double update(self, double value) except? -1:
        """Add a closed bar's value and return the EMA."""
        check_finite(value, "value")
        self._prev = self._s
        return ss_ewm_step(&self._s, value)

    cpdef double update_last(self, double value) except? -1:
        """Replace the most recent value (an intra-bar revision) and return the EMA."""
        check_finite(value, "value")
        if self._s.n == 0:
            _no_revision_yet()
        self._s = self._prev
        return ss_ewm_step(&self._s, value)

    def update_many(self, values) -> np.ndarray:
        """Feed an array of values; returns the EMA after each one."""
        cdef cnp.ndarray arr = as_input(values, "values")
        cdef const double[::1] x = arr
        cdef Py_ssize_t n = x.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _ewm_run(&self._s, &x[0], &o[0], n - 1)
            self._prev = self._s
            _ewm_run(&self._s, &x[n - 1], &o[n - 1], 1)
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        ss_ema_init(&self._s, self.period)
        self._prev = self._s


cdef class StockstatsBollingerBands:
    """stockstats' ``boll_<period>`` / ``boll_ub_<period>`` / ``boll_lb_<period>`` (bare
    ``boll``, ``boll_ub``, ``boll_lb``: period 20): the partial-window SMA of the close
    and +/- 2 sample standard deviations (ddof 1) of the same window.

    The bands are NaN on the first bar (one value has no sample deviation), hence always
    NaN for ``period`` 1, as in stockstats. The width, stockstats' ``BOLL_STD_TIMES``, is
    fixed at 2 (FinRL never changes it).

    Args:
        period: Window length (>= 1).
    """

    cdef SSBollState _s
    cdef SSBollState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 1)
        self.period = period
        ss_boll_init(&self._s, period)
        self._prev = self._s

    def __dealloc__(self):
        ss_boll_free(&self._s)

    @property
    def warmup(self) -> int:
        """Updates until the window is whole and the bands defined (``max(period, 2)``)."""
        return max(self.period, 2)

    @property
    def ready(self) -> bool:
        """True once ``warmup`` updates were made."""
        return self._s.ma.win.n >= self.warmup

    cpdef tuple update(self, double close):
        """Add a closed bar's close; returns ``(boll, boll_ub, boll_lb)``."""
        cdef double m, u, l
        check_finite(close, "close")
        self._prev = self._s
        ss_boll_step(&self._s, close, &m, &u, &l)
        return (m, u, l)

    cpdef tuple update_last(self, double close):
        """Replace the most recent close; returns ``(boll, boll_ub, boll_lb)``."""
        cdef double m, u, l
        check_finite(close, "close")
        if self._s.ma.win.n == 0:
            _no_revision_yet()
        self._s = self._prev
        ss_boll_step(&self._s, close, &m, &u, &l)
        return (m, u, l)

    def update_many(self, closes) -> tuple:
        """Feed an array of closes; returns arrays ``(boll, boll_ub, boll_lb)``."""
        cdef cnp.ndarray arr = as_input(closes, "closes")
        cdef const double[::1] x = arr
        cdef Py_ssize_t n = x.shape[0]
        out_m = np.empty(n, dtype=np.float64)
        out_u = np.empty(n, dtype=np.float64)
        out_l = np.empty(n, dtype=np.float64)
        cdef double[::1] om = out_m, ou = out_u, ol = out_l
        if n == 0:
            return out_m, out_u, out_l
        with nogil:
            _boll_run(&self._s, &x[0], &om[0], &ou[0], &ol[0], n - 1)
            self._prev = self._s
            _boll_run(&self._s, &x[n - 1], &om[n - 1], &ou[n - 1], &ol[n - 1], 1)
        return out_m, out_u, out_l

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        ss_boll_reset(&self._s)
        self._prev = self._s


cdef class StockstatsMACD:
    """stockstats' ``macd`` / ``macds`` / ``macdh`` (periods 12, 26, 9; other periods are
    stockstats' ``macd_<fast>,<slow>,<signal>``): span-EMAs from the first close, so all
    three are 0 on the first bar.

    Args:
        fast: Span of the fast EMA (>= 1).
        slow: Span of the slow EMA (>= 1; stockstats does not require slow > fast).
        signal: Span of the signal EMA of the MACD line (>= 1).
    """

    cdef SSMACDState _s
    cdef SSMACDState _prev
    cdef readonly Py_ssize_t fast
    cdef readonly Py_ssize_t slow
    cdef readonly Py_ssize_t signal

    def __cinit__(self, Py_ssize_t fast, Py_ssize_t slow, Py_ssize_t signal):
        check_period(fast, 1, "fast")
        check_period(slow, 1, "slow")
        check_period(signal, 1, "signal")
        self.fast = fast
        self.slow = slow
        self.signal = signal
        ss_macd_init(&self._s, fast, slow, signal)
        self._prev = self._s

    @property
    def warmup(self) -> int:
        """Updates until the signal EMA has seen a span of full-span MACD values."""
        return max(self.fast, self.slow) + self.signal - 1

    @property
    def ready(self) -> bool:
        """True once ``warmup`` updates were made."""
        return self._s.fast.n >= self.warmup

    cpdef tuple update(self, double close):
        """Add a closed bar's close; returns ``(macd, macds, macdh)``."""
        cdef double m, sig, h
        check_finite(close, "close")
        self._prev = self._s
        ss_macd_step(&self._s, close, &m, &sig, &h)
        return (m, sig, h)

    cpdef tuple update_last(self, double close):
        """Replace the most recent close; returns ``(macd, macds, macdh)``."""
        cdef double m, sig, h
        check_finite(close, "close")
        if self._s.fast.n == 0:
            _no_revision_yet()
        self._s = self._prev
        ss_macd_step(&self._s, close, &m, &sig, &h)
        return (m, sig, h)

    def update_many(self, closes) -> tuple:
        """Feed an array of closes; returns arrays ``(macd, macds, macdh)``."""
        cdef cnp.ndarray arr = as_input(closes, "closes")
        cdef const double[::1] x = arr
        cdef Py_ssize_t n = x.shape[0]
        out_m = np.empty(n, dtype=np.float64)
        out_s = np.empty(n, dtype=np.float64)
        out_h = np.empty(n, dtype=np.float64)
        cdef double[::1] om = out_m, osg = out_s, oh = out_h
        if n == 0:
            return out_m, out_s, out_h
        with nogil:
            _macd_run(&self._s, &x[0], &om[0], &osg[0], &oh[0], n - 1)
            self._prev = self._s
            _macd_run(&self._s, &x[n - 1], &om[n - 1], &osg[n - 1], &oh[n - 1], 1)
        return out_m, out_s, out_h

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        ss_macd_init(&self._s, self.fast, self.slow, self.signal)
        self._prev = self._s


cdef class StockstatsRSI:
    """stockstats' ``rsi_<period>``: ``100 * up / (up + down)`` with Wilder's smoothing
    (pandas ``ewm(alpha=1/period, adjust=True)``) of the rises and falls from the first
    bar, whose change counts as 0; 50 on the first bar and while ``up + down`` is 0.

    Args:
        period: Smoothing period (>= 1).
    """

    cdef SSRSIState _s
    cdef SSRSIState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 1)
        self.period = period
        ss_rsi_init(&self._s, period)
        self._prev = self._s

    @property
    def warmup(self) -> int:
        """Updates until the averages have seen ``period`` changes (``period + 1``)."""
        return self.period + 1

    @property
    def ready(self) -> bool:
        """True once ``warmup`` updates were made."""
        return self._s.up.n >= self.warmup

    cpdef double update(self, double close) except? -1:
        """Add a closed bar's close and return the RSI."""
        check_finite(close, "close")
        self._prev = self._s
        return ss_rsi_step(&self._s, close)

    cpdef double update_last(self, double close) except? -1:
        """Replace the most recent close (an intra-bar revision) and return the RSI."""
        check_finite(close, "close")
        if self._s.up.n == 0:
            _no_revision_yet()
        self._s = self._prev
        return ss_rsi_step(&self._s, close)

    def update_many(self, closes) -> np.ndarray:
        """Feed an array of closes; returns the RSI after each one."""
        cdef cnp.ndarray arr = as_input(closes, "closes")
        cdef const double[::1] x = arr
        cdef Py_ssize_t n = x.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _rsi_run(&self._s, &x[0], &o[0], n - 1)
            self._prev = self._s
            _rsi_run(&self._s, &x[n - 1], &o[n - 1], 1)
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        ss_rsi_init(&self._s, self.period)
        self._prev = self._s


cdef class StockstatsATR:
    """stockstats' ``atr_<period>``: Wilder's smoothing (pandas ``ewm(alpha=1/period,
    adjust=True)``) of the true range from the first bar, whose previous close is its own
    close.

    Args:
        period: Smoothing period (>= 1).
    """

    cdef SSATRState _s
    cdef SSATRState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 1)
        self.period = period
        ss_atr_init(&self._s, period)
        self._prev = self._s

    @property
    def warmup(self) -> int:
        """Updates until the average has seen ``period`` bars with a previous close."""
        return self.period + 1

    @property
    def ready(self) -> bool:
        """True once ``warmup`` updates were made."""
        return self._s.n >= self.warmup

    cpdef double update(self, double high, double low, double close) except? -1:
        """Add a closed bar and return the ATR."""
        _check_bar(high, low, close)
        self._prev = self._s
        return ss_atr_step(&self._s, high, low, close)

    cpdef double update_last(self, double high, double low, double close) except? -1:
        """Replace the most recent bar (an intra-bar revision) and return the ATR."""
        _check_bar(high, low, close)
        if self._s.n == 0:
            _no_revision_yet()
        self._s = self._prev
        return ss_atr_step(&self._s, high, low, close)

    def update_many(self, highs, lows, closes) -> np.ndarray:
        """Feed arrays of highs, lows and closes; returns the ATR after each bar."""
        ah, al, ac = _bar_arrays(highs, lows, closes)
        cdef const double[::1] h = ah, l = al, c = ac
        cdef Py_ssize_t n = h.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _atr_run(&self._s, &h[0], &l[0], &c[0], &o[0], n - 1)
            self._prev = self._s
            _atr_run(&self._s, &h[n - 1], &l[n - 1], &c[n - 1], &o[n - 1], 1)
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        ss_atr_init(&self._s, self.period)
        self._prev = self._s


cdef class StockstatsDX:
    """stockstats' ``dx_<period>`` with ``pdi_<period>`` (+DI) and ``ndi_<period>`` (-DI).

    ``pdi = 100 * SMMA(+DM) / ATR`` and ``ndi = 100 * SMMA(-DM) / ATR`` (NaN while the ATR
    is exactly 0), ``dx = 100 * |pdi - ndi| / (pdi + ndi)`` (0 when the sum is 0); the
    smoothing is Wilder's from the first bar, whose directional moves count as 0.

    Args:
        period: Smoothing period (>= 1).
    """

    cdef SSDXState _s
    cdef SSDXState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 1)
        self.period = period
        ss_dx_init(&self._s, period)
        self._prev = self._s

    @property
    def warmup(self) -> int:
        """Updates until the averages have seen ``period`` directional moves (``period + 1``)."""
        return self.period + 1

    @property
    def ready(self) -> bool:
        """True once ``warmup`` updates were made."""
        return self._s.atr.n >= self.warmup

    cpdef tuple update(self, double high, double low, double close):
        """Add a closed bar; returns ``(dx, pdi, ndi)``."""
        cdef double d, p, m
        _check_bar(high, low, close)
        self._prev = self._s
        ss_dx_step(&self._s, high, low, close, &d, &p, &m)
        return (d, p, m)

    cpdef tuple update_last(self, double high, double low, double close):
        """Replace the most recent bar (an intra-bar revision); returns ``(dx, pdi, ndi)``."""
        cdef double d, p, m
        _check_bar(high, low, close)
        if self._s.atr.n == 0:
            _no_revision_yet()
        self._s = self._prev
        ss_dx_step(&self._s, high, low, close, &d, &p, &m)
        return (d, p, m)

    def update_many(self, highs, lows, closes) -> tuple:
        """Feed arrays of highs, lows and closes; returns arrays ``(dx, pdi, ndi)``."""
        ah, al, ac = _bar_arrays(highs, lows, closes)
        cdef const double[::1] h = ah, l = al, c = ac
        cdef Py_ssize_t n = h.shape[0]
        out_d = np.empty(n, dtype=np.float64)
        out_p = np.empty(n, dtype=np.float64)
        out_m = np.empty(n, dtype=np.float64)
        cdef double[::1] od = out_d, op = out_p, om = out_m
        if n == 0:
            return out_d, out_p, out_m
        with nogil:
            _dx_run(&self._s, &h[0], &l[0], &c[0], &od[0], &op[0], &om[0], n - 1)
            self._prev = self._s
            _dx_run(&self._s, &h[n - 1], &l[n - 1], &c[n - 1], &od[n - 1], &op[n - 1],
                    &om[n - 1], 1)
        return out_d, out_p, out_m

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        ss_dx_init(&self._s, self.period)
        self._prev = self._s


cdef class StockstatsCCI:
    """stockstats' ``cci_<period>``: ``(tp - SMA(tp)) / (0.015 * MAD(tp))`` with
    ``tp = (close + high + low) / 3``, the partial-window SMA, and 0 while the window is
    not whole (stockstats zero-fills the MAD) or ``0.015 * MAD`` is 0.

    Each update costs O(period): the mean absolute deviation is recomputed over the
    window.

    Args:
        period: Window length (>= 1).
    """

    cdef SSCCIState _s
    cdef SSCCIState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 1)
        self.period = period
        ss_cci_init(&self._s, period)
        self._prev = self._s

    def __dealloc__(self):
        ss_cci_free(&self._s)

    @property
    def warmup(self) -> int:
        """Updates until the window is whole (``period``)."""
        return self.period

    @property
    def ready(self) -> bool:
        """True once ``warmup`` updates were made (the CCI is 0 before)."""
        return self._s.tp.win.n >= self.warmup

    cpdef double update(self, double high, double low, double close) except? -1:
        """Add a closed bar and return the CCI."""
        _check_bar(high, low, close)
        self._prev = self._s
        return ss_cci_step(&self._s, high, low, close)

    cpdef double update_last(self, double high, double low, double close) except? -1:
        """Replace the most recent bar (an intra-bar revision) and return the CCI."""
        _check_bar(high, low, close)
        if self._s.tp.win.n == 0:
            _no_revision_yet()
        self._s = self._prev
        return ss_cci_step(&self._s, high, low, close)

    def update_many(self, highs, lows, closes) -> np.ndarray:
        """Feed arrays of highs, lows and closes; returns the CCI after each bar."""
        ah, al, ac = _bar_arrays(highs, lows, closes)
        cdef const double[::1] h = ah, l = al, c = ac
        cdef Py_ssize_t n = h.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _cci_run(&self._s, &h[0], &l[0], &c[0], &o[0], n - 1)
            self._prev = self._s
            _cci_run(&self._s, &h[n - 1], &l[n - 1], &c[n - 1], &o[n - 1], 1)
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        ss_cci_reset(&self._s)
        self._prev = self._s
