"""Volatility kernels: Bollinger Bands, ATR, Donchian channel, realized volatility.

BBANDS and ATR follow TA-Lib 0.8's C code operation for operation (including ATR's
fused multiply-add, via ``common.fused_madd_on``), so results are
bit-identical to ``talib.BBANDS`` / ``talib.ATR``; the Donchian bands are exact maxima
and minima, equal to ``talib.MAX`` / ``talib.MIN``.
"""

from libc.math cimport INFINITY, NAN, fabs, log, sqrt
from libc.stdlib cimport calloc, free

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidInputError

from l2fast.technical._averages cimport window_free, window_get, window_init
from l2fast._checks cimport (
    as_input, check_finite, check_period, check_same_length, fma_available, fused_madd_on,
)
from l2fast.technical._statistics cimport var_free, var_init, var_reset, var_step

cnp.import_array()

cdef double MINUTES_PER_YEAR = 365.0 * 24.0 * 60.0


# ------------------------------------------------------------- Bollinger Bands

cdef int bbands_init(BBandsState* s, Py_ssize_t period, double nbdev) except -1:
    var_init(&s.var, period)
    s.nbdev = nbdev
    s.ma_total = 0.0
    return 0


cdef void bbands_reset(BBandsState* s) noexcept nogil:
    var_reset(&s.var)
    s.ma_total = 0.0


cdef void bbands_free(BBandsState* s) noexcept nogil:
    var_free(&s.var)


cdef inline void _bbands_advance(BBandsState* s, double x,
                                double* upper, double* middle, double* lower) noexcept nogil:
    cdef Py_ssize_t period = s.var.win.size
    cdef double variance, mid, dev
    s.ma_total += x
    variance = var_step(&s.var, x)
    if s.var.win.n < period:
        upper[0] = NAN
        middle[0] = NAN
        lower[0] = NAN
        return
    mid = s.ma_total / <double>period
    # var_step has pushed x, so lag period - 1 is the value leaving the SMA.
    s.ma_total -= window_get(&s.var.win, period - 1)
    # The variance is exactly 0 on a flat window (the reseed floor sees to it).
    dev = (sqrt(variance) if variance != 0.0 else 0.0) * s.nbdev
    upper[0] = mid + dev
    middle[0] = mid
    lower[0] = mid - dev


cdef void _bbands_run(BBandsState* s, const double* x, double* upper, double* middle,
                      double* lower, Py_ssize_t n) noexcept nogil:
    # Steps a local copy so the compiler can keep the running sums in registers (a
    # loop-carried sum kept in memory pays a store-to-load round trip every bar).
    cdef BBandsState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        _bbands_advance(&st, x[i], &upper[i], &middle[i], &lower[i])
    s[0] = st


cdef void bbands_step(BBandsState* s, double x,
                      double* upper, double* middle, double* lower) noexcept nogil:
    _bbands_run(s, &x, upper, middle, lower, 1)


# ------------------------------------------------------------------------- ATR

cdef double true_range(double high, double low, double prev_close) noexcept nogil:
    cdef double greatest = high - low
    cdef double d = fabs(prev_close - high)
    if d > greatest:
        greatest = d
    d = fabs(prev_close - low)
    if d > greatest:
        greatest = d
    return greatest


cdef void atr_init(ATRState* s, Py_ssize_t period) noexcept nogil:
    s.period = period
    s.w_beta = <double>(period - 1) / <double>period
    s.w_alpha = 1.0 - s.w_beta
    s.prev_close = 0.0
    s.seed_total = 0.0
    s.value = NAN
    s.n = 0


cdef inline double _atr_advance(ATRState* s, double high, double low, double close,
                                bint hw) noexcept nogil:
    cdef double tr
    s.n += 1
    if s.n == 1:
        s.prev_close = close
        return NAN
    tr = true_range(high, low, s.prev_close)
    s.prev_close = close
    if s.n <= s.period:
        s.seed_total += tr
        return NAN
    if s.n == s.period + 1:
        s.seed_total += tr
        s.value = s.seed_total / <double>s.period
    else:
        # TA-Lib's Wilder step is one fused multiply-add, rounded once.
        s.value = fused_madd_on(hw, s.w_beta, s.value, s.w_alpha * tr)
    return s.value


cdef void _atr_run(ATRState* s, const double* high, const double* low, const double* close,
                   double* out, Py_ssize_t n) noexcept nogil:
    # Steps a local copy so the compiler can keep the state in registers (a
    # loop-carried value kept in memory pays a store-to-load round trip every bar).
    cdef ATRState st = s[0]
    cdef Py_ssize_t i
    if fma_available():
        for i in range(n):
            out[i] = _atr_advance(&st, high[i], low[i], close[i], True)
    else:
        for i in range(n):
            out[i] = _atr_advance(&st, high[i], low[i], close[i], False)
    s[0] = st


cdef double atr_step(ATRState* s, double high, double low, double close) noexcept nogil:
    cdef double out
    _atr_run(s, &high, &low, &close, &out, 1)
    return out


# -------------------------------------------------------------------- Donchian

cdef int donchian_init(DonchianState* s, Py_ssize_t period) except -1:
    s.high.buf = NULL
    s.low = <double*>calloc(period + 1, sizeof(double))
    s.suffix_high = <double*>calloc(period, sizeof(double))
    s.suffix_low = <double*>calloc(period, sizeof(double))
    try:
        if s.low == NULL or s.suffix_high == NULL or s.suffix_low == NULL:
            raise MemoryError()
        window_init(&s.high, period)
    except MemoryError:
        donchian_free(s)
        raise
    donchian_reset(s)
    return 0


cdef void donchian_reset(DonchianState* s) noexcept nogil:
    s.high.head = 0
    s.high.n = 0
    s.block_high = -INFINITY
    s.block_low = INFINITY
    s.block_len = 0


cdef void donchian_free(DonchianState* s) noexcept nogil:
    window_free(&s.high)
    free(s.low)
    free(s.suffix_high)
    free(s.suffix_low)
    s.low = NULL
    s.suffix_high = NULL
    s.suffix_low = NULL


cdef void _donchian_close_block(const double* ring_high, const double* ring_low,
                                Py_ssize_t head, Py_ssize_t period,
                                double* suffix_high, double* suffix_low) noexcept nogil:
    # The last ``period`` bars (before ``head``) are the block just completed. Builds
    # its suffix extremes from its newest bar backwards.
    cdef Py_ssize_t k, slot = head
    cdef double hi = -INFINITY, lo = INFINITY
    for k in range(period - 1, -1, -1):
        slot -= 1
        if slot < 0:
            slot = period
        if ring_high[slot] > hi:
            hi = ring_high[slot]
        if ring_low[slot] < lo:
            lo = ring_low[slot]
        suffix_high[k] = hi
        suffix_low[k] = lo


cdef void _donchian_run(DonchianState* s, const double* high, const double* low,
                        double* upper, double* middle, double* lower, Py_ssize_t n) noexcept nogil:
    # The kernel over n bars, with the state in locals for the run: this is a tight
    # loop where a struct field kept in memory would cost a store/reload every bar.
    cdef Py_ssize_t period = s.high.size, i
    cdef Py_ssize_t head = s.high.head, block_len = s.block_len
    cdef long long count = s.high.n
    cdef double* ring_high = s.high.buf
    cdef double* ring_low = s.low
    cdef double* suffix_high = s.suffix_high
    cdef double* suffix_low = s.suffix_low
    cdef double block_high = s.block_high, block_low = s.block_low, h, l, top, bottom
    for i in range(n):
        if block_len == period:
            _donchian_close_block(ring_high, ring_low, head, period, suffix_high, suffix_low)
            block_len = 0
            block_high = -INFINITY
            block_low = INFINITY
        h = high[i]
        l = low[i]
        ring_high[head] = h
        ring_low[head] = l
        head += 1
        if head > period:
            head = 0
        count += 1
        block_len += 1
        if h > block_high:
            block_high = h
        if l < block_low:
            block_low = l
        if count < period:
            upper[i] = NAN
            middle[i] = NAN
            lower[i] = NAN
            continue
        top = block_high
        bottom = block_low
        if block_len < period:
            # The window also holds the previous block's bars block_len..period-1.
            if suffix_high[block_len] > top:
                top = suffix_high[block_len]
            if suffix_low[block_len] < bottom:
                bottom = suffix_low[block_len]
        upper[i] = top
        middle[i] = (top + bottom) * 0.5
        lower[i] = bottom
    s.high.head = head
    s.high.n = count
    s.block_len = block_len
    s.block_high = block_high
    s.block_low = block_low


cdef void donchian_step(DonchianState* s, double high, double low,
                        double* upper, double* middle, double* lower) noexcept nogil:
    _donchian_run(s, &high, &low, upper, middle, lower, 1)


# --------------------------------------------------------- realized volatility

cdef int rvol_init(RVolState* s, Py_ssize_t period, double bar_minutes) except -1:
    var_init(&s.var, period)
    s.ddof_scale = <double>period / <double>(period - 1)
    s.annualise = sqrt(MINUTES_PER_YEAR / bar_minutes)
    s.prev_log = 0.0
    s.n = 0
    return 0


cdef void rvol_reset(RVolState* s) noexcept nogil:
    var_reset(&s.var)
    s.prev_log = 0.0
    s.n = 0


cdef void rvol_free(RVolState* s) noexcept nogil:
    var_free(&s.var)


cdef inline double _rvol_advance(RVolState* s, double close) noexcept nogil:
    cdef double lc = log(close), r, variance
    s.n += 1
    if s.n == 1:
        s.prev_log = lc
        return NAN
    r = lc - s.prev_log
    s.prev_log = lc
    # The variance kernel measures returns from a shift near the window (rebuilt when
    # stale): cancellation-free, and exactly 0 on a flat window.
    variance = var_step(&s.var, r)
    if s.var.win.n < s.var.win.size:
        return NAN
    return sqrt(variance * s.ddof_scale) * s.annualise


cdef void _rvol_run(RVolState* s, const double* close, double* out, Py_ssize_t n) noexcept nogil:
    # Steps a local copy so the compiler can keep the running sums in registers.
    cdef RVolState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = _rvol_advance(&st, close[i])
    s[0] = st


cdef double rvol_step(RVolState* s, double close) noexcept nogil:
    cdef double out
    _rvol_run(s, &close, &out, 1)
    return out


# ------------------------------------------------------------- Python classes

cdef inline int _check_positive(double x, str name) except -1:
    check_finite(x, name)
    if x <= 0.0:
        raise InvalidInputError(f"{name}={x!r}: must be > 0")
    return 0


cdef class BollingerBands:
    """Bollinger Bands, equal to ``talib.BBANDS(close, period, nbdev, nbdev, matype=0)``.

    Args:
        period: Window length (>= 2).
        nbdev: Band half-width in population standard deviations (finite, >= 0).
    """

    cdef BBandsState _s
    cdef BBandsState _prev
    cdef readonly Py_ssize_t period
    cdef readonly double nbdev

    def __cinit__(self, Py_ssize_t period, double nbdev):
        check_period(period, 2)
        check_finite(nbdev, "nbdev")
        if nbdev < 0.0:
            raise InvalidInputError(f"nbdev={nbdev!r}: must be >= 0")
        self.period = period
        self.nbdev = nbdev
        bbands_init(&self._s, period, nbdev)
        self._prev = self._s

    def __dealloc__(self):
        bbands_free(&self._s)

    @property
    def ready(self) -> bool:
        """True once the bands are defined (after ``period`` updates)."""
        return self._s.var.win.n >= self.period

    cpdef tuple update(self, double close):
        """Add a closed bar's close; returns ``(upper, middle, lower)`` (NaN in warm-up)."""
        cdef double u, m, l
        check_finite(close, "close")
        self._prev = self._s
        bbands_step(&self._s, close, &u, &m, &l)
        return (u, m, l)

    cpdef tuple update_last(self, double close):
        """Replace the most recent close (an intra-bar revision); returns the bands."""
        cdef double u, m, l
        check_finite(close, "close")
        if self._s.var.win.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        bbands_step(&self._s, close, &u, &m, &l)
        return (u, m, l)

    def update_many(self, close) -> tuple:
        """Feed an array of closes; returns arrays ``(upper, middle, lower)``."""
        cdef cnp.ndarray arr = as_input(close, "close")
        cdef const double[::1] x = arr
        cdef Py_ssize_t i, n = x.shape[0]
        upper = np.empty(n, dtype=np.float64)
        middle = np.empty(n, dtype=np.float64)
        lower = np.empty(n, dtype=np.float64)
        cdef double[::1] u = upper
        cdef double[::1] m = middle
        cdef double[::1] l = lower
        if n == 0:
            return upper, middle, lower
        with nogil:
            _bbands_run(&self._s, &x[0], &u[0], &m[0], &l[0], n - 1)
            self._prev = self._s
            bbands_step(&self._s, x[n - 1], &u[n - 1], &m[n - 1], &l[n - 1])
        return upper, middle, lower

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        bbands_reset(&self._s)
        self._prev = self._s


cdef class ATR:
    """Average true range, equal to ``talib.ATR``.

    Args:
        period: Smoothing period (>= 1); the first value comes on bar ``period + 1``.
    """

    cdef ATRState _s
    cdef ATRState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 1)
        self.period = period
        atr_init(&self._s, period)
        self._prev = self._s

    @property
    def ready(self) -> bool:
        """True once the ATR is defined (after ``period + 1`` bars)."""
        return self._s.n > self.period

    cpdef double update(self, double high, double low, double close) except? -1:
        """Add a closed bar; returns the ATR (NaN during warm-up)."""
        check_finite(high, "high")
        check_finite(low, "low")
        check_finite(close, "close")
        self._prev = self._s
        return atr_step(&self._s, high, low, close)

    cpdef double update_last(self, double high, double low, double close) except? -1:
        """Replace the most recent bar (an intra-bar revision); returns the ATR."""
        check_finite(high, "high")
        check_finite(low, "low")
        check_finite(close, "close")
        if self._s.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        return atr_step(&self._s, high, low, close)

    def update_many(self, high, low, close) -> np.ndarray:
        """Feed equal-length arrays of highs, lows and closes; returns the ATR per bar."""
        cdef cnp.ndarray ah = as_input(high, "high")
        cdef cnp.ndarray al = as_input(low, "low")
        cdef cnp.ndarray ac = as_input(close, "close")
        check_same_length(ah.shape[0], al.shape[0], "low")
        check_same_length(ah.shape[0], ac.shape[0], "close")
        cdef const double[::1] h = ah
        cdef const double[::1] l = al
        cdef const double[::1] c = ac
        cdef Py_ssize_t n = h.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _atr_run(&self._s, &h[0], &l[0], &c[0], &o[0], n - 1)
            self._prev = self._s
            o[n - 1] = atr_step(&self._s, h[n - 1], l[n - 1], c[n - 1])
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        atr_init(&self._s, self.period)
        self._prev = self._s


cdef class Donchian:
    """Donchian channel: ``talib.MAX(high)``, their midpoint, ``talib.MIN(low)``.

    Args:
        period: Window length in bars (>= 2).
    """

    cdef DonchianState _s
    cdef DonchianState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 2)
        self.period = period
        donchian_init(&self._s, period)
        self._prev = self._s

    def __dealloc__(self):
        donchian_free(&self._s)

    @property
    def ready(self) -> bool:
        """True once the channel is defined (after ``period`` bars)."""
        return self._s.high.n >= self.period

    cpdef tuple update(self, double high, double low):
        """Add a closed bar; returns ``(upper, middle, lower)`` (NaN during warm-up)."""
        cdef double u, m, l
        check_finite(high, "high")
        check_finite(low, "low")
        self._prev = self._s
        donchian_step(&self._s, high, low, &u, &m, &l)
        return (u, m, l)

    cpdef tuple update_last(self, double high, double low):
        """Replace the most recent bar (an intra-bar revision); returns the channel."""
        cdef double u, m, l
        check_finite(high, "high")
        check_finite(low, "low")
        if self._s.high.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        donchian_step(&self._s, high, low, &u, &m, &l)
        return (u, m, l)

    def update_many(self, high, low) -> tuple:
        """Feed equal-length arrays of highs and lows; returns ``(upper, middle, lower)``."""
        cdef cnp.ndarray ah = as_input(high, "high")
        cdef cnp.ndarray al = as_input(low, "low")
        check_same_length(ah.shape[0], al.shape[0], "low")
        cdef const double[::1] h = ah
        cdef const double[::1] l = al
        cdef Py_ssize_t n = h.shape[0]
        upper = np.empty(n, dtype=np.float64)
        middle = np.empty(n, dtype=np.float64)
        lower = np.empty(n, dtype=np.float64)
        cdef double[::1] u = upper
        cdef double[::1] m = middle
        cdef double[::1] lo = lower
        if n == 0:
            return upper, middle, lower
        with nogil:
            _donchian_run(&self._s, &h[0], &l[0], &u[0], &m[0], &lo[0], n - 1)
            self._prev = self._s
            donchian_step(&self._s, h[n - 1], l[n - 1], &u[n - 1], &m[n - 1], &lo[n - 1])
        return upper, middle, lower

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        donchian_reset(&self._s)
        self._prev = self._s


cdef class RealizedVolatility:
    """Annualised realized volatility of log returns for a 24/7 market.

    The sample standard deviation (ddof=1) of the last ``period`` log returns, times
    ``sqrt(365 * 24 * 60 / bar_minutes)``. Equal (to rounding) to pandas'
    ``np.log(close).diff().rolling(period).std() * sqrt(365 * 24 * 60 / bar_minutes)``.

    Args:
        period: Number of returns in the window (>= 2); the first value comes on
            close ``period + 1``.
        bar_minutes: Bar length in minutes (finite, > 0).
    """

    cdef RVolState _s
    cdef RVolState _prev
    cdef readonly Py_ssize_t period
    cdef readonly double bar_minutes

    def __cinit__(self, Py_ssize_t period, double bar_minutes=1.0):
        check_period(period, 2)
        _check_positive(bar_minutes, "bar_minutes")
        self.period = period
        self.bar_minutes = bar_minutes
        rvol_init(&self._s, period, bar_minutes)
        self._prev = self._s

    def __dealloc__(self):
        rvol_free(&self._s)

    @property
    def ready(self) -> bool:
        """True once ``period`` returns (``period + 1`` closes) have been seen."""
        return self._s.var.win.n >= self.period

    cpdef double update(self, double close) except? -1:
        """Add a closed bar's close (> 0); returns the volatility (NaN during warm-up)."""
        _check_positive(close, "close")
        self._prev = self._s
        return rvol_step(&self._s, close)

    cpdef double update_last(self, double close) except? -1:
        """Replace the most recent close (an intra-bar revision); returns the volatility."""
        _check_positive(close, "close")
        if self._s.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        return rvol_step(&self._s, close)

    def update_many(self, close) -> np.ndarray:
        """Feed an array of closes (> 0); returns the volatility after each one."""
        cdef cnp.ndarray arr = as_input(close, "close")
        cdef const double[::1] x = arr
        cdef Py_ssize_t i, n = x.shape[0]
        bad = np.flatnonzero(arr <= 0.0)
        if bad.shape[0]:
            i = bad[0]
            raise InvalidInputError(f"close[{i}]={x[i]!r}: must be > 0")
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _rvol_run(&self._s, &x[0], &o[0], n - 1)
            self._prev = self._s
            o[n - 1] = rvol_step(&self._s, x[n - 1])
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        rvol_reset(&self._s)
        self._prev = self._s
