# Contract of the rolling-statistics kernels (conventions: see _averages.pxd).
#
# Both kernels follow TA-Lib 0.8's cancellation-free form: the running sums hold
# deviations from a ``shift`` near the window instead of raw levels, and are rebuilt
# with a two-pass over the window (O(period), rare: amortised O(1)) when they go stale.

from libc.math cimport NAN

from l2fast.technical._averages cimport Window, window_get, window_push


cdef struct VarState:
    # Population variance of the last ``period`` values, equal to ``talib.VAR``.
    Window win
    double inv_period     # 1 / period, as TA-Lib (one reciprocal, no per-bar division)
    double shift          # anchor the deviations are measured from
    double total1         # sum of (x - shift) over the last period - 1 values
    double total2         # sum of (x - shift)^2 over the last period - 1 values
    double mean           # mean of the window of the last step (valid when ready)
    int bars_to_reseed    # countdown to the periodic rebuild (every 32 windows)

cdef int var_init(VarState* s, Py_ssize_t period) except -1
cdef void var_reset(VarState* s) noexcept nogil
cdef void var_free(VarState* s) noexcept nogil
# The cold half of var_step: a two-pass rebuild of the sums around the window mean, on
# a full window whose newest value has been added. Returns the window's variance and
# leaves the sums describing the window less its oldest value, as var_step does.
cdef double var_rebuild(VarState* s) noexcept nogil


# Returns the variance (ddof=0, >= 0) and sets ``s.mean``; NaN during warm-up. Inline
# (it is the hot loop of every variance-based kernel); the rebuild is not.
cdef inline double var_step(VarState* s, double x) noexcept nogil:
    cdef Py_ssize_t period = s.win.size
    cdef double d, mean1, variance, shift, total1, total2
    cdef VarState copy
    window_push(&s.win, x)
    if s.win.n == 1:
        # TA-Lib anchors the first window on its first value.
        s.shift = x
    shift = s.shift
    d = x - shift
    total1 = s.total1 + d
    d *= d
    total2 = s.total2 + d
    if s.win.n < period:
        s.total1 = total1
        s.total2 = total2
        return NAN
    mean1 = total1 * s.inv_period
    variance = total2 * s.inv_period - mean1 * mean1
    s.mean = shift + mean1

    # Drop the oldest value now so the sums describe the next window's first period-1.
    d = window_get(&s.win, period - 1) - shift
    total1 -= d
    d *= d
    total2 -= d
    s.total1 = total1
    s.total2 = total2

    s.bars_to_reseed -= 1
    # Rebuild when the subtraction has cancelled most digits, when an outlier has just
    # left (its residue would dominate the sums) or periodically.
    if (variance < 0.000001 * (total2 * s.inv_period)
            or d > 1000000.0 * total2
            or s.bars_to_reseed <= 0):
        # Rebuild a copy: were ``s`` itself passed out, a caller looping over a local
        # state could no longer keep its fields in registers.
        copy = s[0]
        variance = var_rebuild(&copy)
        s[0] = copy
    return variance


cdef struct CorrelSums:
    # Running sums of the shifted values over the last period - 1 pairs.
    double shift_x        # anchors the deviations are measured from
    double shift_y
    double sum_x
    double sum_y
    double sum_x2
    double sum_y2
    double sum_xy

cdef struct CorrelState:
    # Pearson correlation of the last ``period`` (x, y) pairs, equal to ``talib.CORREL``.
    Window wx             # both rings are pushed together
    Window wy
    CorrelSums sums
    double inv_period
    double leaving_x      # squared shifted x that left on the previous step
    double leaving_y
    int bars_to_reseed

cdef int correl_init(CorrelState* s, Py_ssize_t period) except -1
cdef void correl_reset(CorrelState* s) noexcept nogil
cdef void correl_free(CorrelState* s) noexcept nogil
# Returns r in [-1, 1]; 0.0 when either side of the window is flat; NaN in warm-up.
cdef double correl_step(CorrelState* s, double x, double y) noexcept nogil
