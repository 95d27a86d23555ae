"""Rolling statistics: variance (the engine of the volatility kernels) and correlation.

The arithmetic follows TA-Lib 0.8's ``TA_VAR`` and ``TA_CORREL`` operation for
operation (shifted running sums, the same reseed triggers and floors), so results are
bit-identical to ``talib.VAR`` / ``talib.CORREL`` when streaming starts at bar 0.
"""

from libc.math cimport NAN, sqrt

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidInputError

from l2fast.technical._averages cimport window_free, window_get, window_init, window_push
from l2fast._checks cimport as_input, check_finite, check_period, check_same_length

cnp.import_array()

cdef enum:
    # Rebuild the shifted sums at least once every RESEED_WINDOWS windows (TA-Lib's
    # 32), so slow drift stays bounded however long the stream runs.
    RESEED_WINDOWS = 32


# -------------------------------------------------------------------- variance

cdef int var_init(VarState* s, Py_ssize_t period) except -1:
    window_init(&s.win, period)
    s.inv_period = 1.0 / <double>period
    var_reset(s)
    return 0


cdef void var_reset(VarState* s) noexcept nogil:
    s.win.head = 0
    s.win.n = 0
    s.shift = 0.0
    s.total1 = 0.0
    s.total2 = 0.0
    s.mean = NAN
    s.bars_to_reseed = RESEED_WINDOWS * <int>s.win.size


cdef void var_free(VarState* s) noexcept nogil:
    window_free(&s.win)


cdef double var_rebuild(VarState* s) noexcept nogil:
    cdef Py_ssize_t period = s.win.size, lag
    cdef double d, mean1, variance, acc = 0.0
    s.bars_to_reseed = RESEED_WINDOWS * <int>period
    for lag in range(period - 1, -1, -1):
        acc += window_get(&s.win, lag)
    s.shift = acc * s.inv_period
    s.total1 = 0.0
    s.total2 = 0.0
    for lag in range(period - 1, -1, -1):
        d = window_get(&s.win, lag) - s.shift
        s.total1 += d
        d *= d
        s.total2 += d
    mean1 = s.total1 * s.inv_period
    variance = s.total2 * s.inv_period - mean1 * mean1
    s.mean = s.shift + mean1
    # Below this ratio the spread is under the rounding error of the mean itself: the
    # honest answer is 0, and it also keeps the variance non-negative.
    if variance < 0.000000000001 * (s.total2 * s.inv_period):
        variance = 0.0
    d = window_get(&s.win, period - 1) - s.shift
    s.total1 -= d
    d *= d
    s.total2 -= d
    return variance


# ----------------------------------------------------------------- correlation

cdef int correl_init(CorrelState* s, Py_ssize_t period) except -1:
    s.wy.buf = NULL
    try:
        window_init(&s.wx, period)
        window_init(&s.wy, period)
    except MemoryError:
        correl_free(s)
        raise
    s.inv_period = 1.0 / <double>period
    correl_reset(s)
    return 0


cdef void correl_reset(CorrelState* s) noexcept nogil:
    s.wx.head = 0
    s.wx.n = 0
    s.wy.head = 0
    s.wy.n = 0
    s.sums.shift_x = 0.0
    s.sums.shift_y = 0.0
    s.sums.sum_x = 0.0
    s.sums.sum_y = 0.0
    s.sums.sum_x2 = 0.0
    s.sums.sum_y2 = 0.0
    s.sums.sum_xy = 0.0
    s.leaving_x = 0.0
    s.leaving_y = 0.0
    s.bars_to_reseed = RESEED_WINDOWS * <int>s.wx.size


cdef void correl_free(CorrelState* s) noexcept nogil:
    window_free(&s.wx)
    window_free(&s.wy)


cdef inline void _correl_add(CorrelSums* t, double x, double y) noexcept nogil:
    cdef double dx = x - t.shift_x
    cdef double dy = y - t.shift_y
    t.sum_x += dx
    t.sum_x2 += dx * dx
    t.sum_xy += dx * dy
    t.sum_y += dy
    t.sum_y2 += dy * dy


cdef CorrelSums _correl_rebuild(CorrelState s) noexcept nogil:
    # Two-pass rebuild of the full window's sums around both window means. The state
    # comes and the sums go by value so that callers can keep theirs in registers.
    cdef Py_ssize_t period = s.wx.size, lag
    cdef double acc_x = 0.0, acc_y = 0.0
    cdef CorrelSums t
    for lag in range(period - 1, -1, -1):
        acc_x += window_get(&s.wx, lag)
        acc_y += window_get(&s.wy, lag)
    t.shift_x = acc_x * s.inv_period
    t.shift_y = acc_y * s.inv_period
    t.sum_x = 0.0
    t.sum_y = 0.0
    t.sum_x2 = 0.0
    t.sum_y2 = 0.0
    t.sum_xy = 0.0
    for lag in range(period - 1, -1, -1):
        _correl_add(&t, window_get(&s.wx, lag), window_get(&s.wy, lag))
    return t


cdef inline double _correl_advance(CorrelState* s, double x, double y) noexcept nogil:
    cdef Py_ssize_t period = s.wx.size
    cdef double ss_x, ss_y, sp_xy, tx, ty, r
    window_push(&s.wx, x)
    window_push(&s.wy, y)
    if s.wx.n == 1:
        # TA-Lib anchors the first window on its first pair.
        s.sums.shift_x = x
        s.sums.shift_y = y
    _correl_add(&s.sums, x, y)
    if s.wx.n < period:
        return NAN
    ss_x = s.sums.sum_x2 - ((s.sums.sum_x * s.sums.sum_x) * s.inv_period)
    ss_y = s.sums.sum_y2 - ((s.sums.sum_y * s.sums.sum_y) * s.inv_period)
    sp_xy = s.sums.sum_xy - ((s.sums.sum_x * s.sums.sum_y) * s.inv_period)

    s.bars_to_reseed -= 1
    # The triggers watch the sums of squares only: a vanishing sp_xy is a legitimate
    # answer (uncorrelated series), not lost digits.
    if (ss_x < 0.000001 * s.sums.sum_x2
            or ss_y < 0.000001 * s.sums.sum_y2
            or s.leaving_x > 1000000.0 * s.sums.sum_x2
            or s.leaving_y > 1000000.0 * s.sums.sum_y2
            or s.bars_to_reseed <= 0):
        s.bars_to_reseed = RESEED_WINDOWS * <int>period
        s.sums = _correl_rebuild(s[0])
        ss_x = s.sums.sum_x2 - ((s.sums.sum_x * s.sums.sum_x) * s.inv_period)
        ss_y = s.sums.sum_y2 - ((s.sums.sum_y * s.sums.sum_y) * s.inv_period)
        sp_xy = s.sums.sum_xy - ((s.sums.sum_x * s.sums.sum_y) * s.inv_period)
        # Extracted as differences, these can dip below 0 on a flat window.
        if ss_x < 0.0:
            ss_x = 0.0
        if ss_y < 0.0:
            ss_y = 0.0

    # Each side is tested against its own scale (a flat side gives 0.0); the product is
    # tested too because it can underflow while both factors pass.
    if (ss_x > 0.00000000000001 * s.sums.sum_x2 and ss_y > 0.00000000000001 * s.sums.sum_y2
            and ss_x * ss_y > 0.0):
        r = sp_xy / sqrt(ss_x * ss_y)
        if r > 1.0:
            r = 1.0
        elif r < -1.0:
            r = -1.0
    else:
        r = 0.0

    # Drop the oldest pair so the sums describe the next window's first period - 1.
    tx = window_get(&s.wx, period - 1) - s.sums.shift_x
    ty = window_get(&s.wy, period - 1) - s.sums.shift_y
    s.leaving_x = tx * tx
    s.leaving_y = ty * ty
    s.sums.sum_x -= tx
    s.sums.sum_x2 -= s.leaving_x
    s.sums.sum_xy -= tx * ty
    s.sums.sum_y -= ty
    s.sums.sum_y2 -= s.leaving_y
    return r


cdef void _correl_run(CorrelState* s, const double* x, const double* y, double* out,
                      Py_ssize_t n) noexcept nogil:
    # Steps a local copy so the compiler can keep the running sums in registers (a
    # loop-carried sum kept in memory pays a store-to-load round trip every bar).
    cdef CorrelState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = _correl_advance(&st, x[i], y[i])
    s[0] = st


cdef double correl_step(CorrelState* s, double x, double y) noexcept nogil:
    cdef double out
    _correl_run(s, &x, &y, &out, 1)
    return out


# ------------------------------------------------------------- Python classes

cdef class RollingCorrelation:
    """Rolling Pearson correlation of two series, equal to ``talib.CORREL``.

    A window in which either series is flat has no defined correlation; like TA-Lib
    the output is then 0.0.

    Args:
        period: Window length in pairs (>= 2).
    """

    cdef CorrelState _s
    cdef CorrelState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 2)
        self.period = period
        correl_init(&self._s, period)
        self._prev = self._s

    def __dealloc__(self):
        correl_free(&self._s)

    @property
    def ready(self) -> bool:
        """True once the output is defined (after ``period`` pairs)."""
        return self._s.wx.n >= self.period

    cpdef double update(self, double x, double y) except? -1:
        """Add a closed bar's pair and return the correlation (NaN during warm-up)."""
        check_finite(x, "x")
        check_finite(y, "y")
        self._prev = self._s
        return correl_step(&self._s, x, y)

    cpdef double update_last(self, double x, double y) except? -1:
        """Replace the most recent pair (an intra-bar revision) and return the correlation."""
        check_finite(x, "x")
        check_finite(y, "y")
        if self._s.wx.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        return correl_step(&self._s, x, y)

    def update_many(self, x, y) -> np.ndarray:
        """Feed two equal-length arrays; returns the correlation after each pair."""
        cdef cnp.ndarray ax = as_input(x, "x")
        cdef cnp.ndarray ay = as_input(y, "y")
        check_same_length(ax.shape[0], ay.shape[0], "y")
        cdef const double[::1] vx = ax
        cdef const double[::1] vy = ay
        cdef Py_ssize_t i, n = vx.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _correl_run(&self._s, &vx[0], &vy[0], &o[0], n - 1)
            self._prev = self._s
            o[n - 1] = correl_step(&self._s, vx[n - 1], vy[n - 1])
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        correl_reset(&self._s)
        self._prev = self._s
