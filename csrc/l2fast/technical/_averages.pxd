# Contract of the moving-average kernels and of the rolling window they share.
#
# Kernel convention (every compiled kernel module follows it):
#   * the state of a kernel is a plain C struct (``XState``);
#   * ``x_init(&s, ...)`` sets a fresh state (and ``x_free`` releases any buffer);
#   * ``x_step(&s, ...)`` consumes one value in O(1), allocates nothing, returns NaN
#     during warm-up, and never fails (inputs were validated at the boundary);
#   * buffers hold one slot more than the window needs, so the state before a step is
#     restored by a plain struct copy: that is how ``update_last`` (revise the forming
#     bar) works without saving anything per step.

from libc.math cimport NAN

from l2fast._checks cimport fma_available, fused_madd_on


cdef struct Window:
    # Ring of the last ``size`` values, capacity ``size + 1`` (see the note above).
    double* buf
    Py_ssize_t size       # window length
    Py_ssize_t head       # slot of the next write
    long long n           # values pushed since init

cdef int window_init(Window* w, Py_ssize_t size) except -1
cdef void window_free(Window* w) noexcept nogil
# The window's small steps are inline here: a cdef function cimported from another
# module is called through a pointer and never inlined, which would cost more than the
# arithmetic of the kernels that use them.

cdef inline void window_push(Window* w, double x) noexcept nogil:
    w.buf[w.head] = x
    w.head += 1
    if w.head > w.size:
        w.head = 0
    w.n += 1


# Value pushed ``lag`` steps ago (lag 0 = newest); lag must be < size and < n.
cdef inline double window_get(const Window* w, Py_ssize_t lag) noexcept nogil:
    cdef Py_ssize_t i = w.head - 1 - lag
    if i < 0:
        i += w.size + 1
    return w.buf[i]


# ---------------------------------------------------------------- rolling extreme
# Max (or min) of the last ``size`` values in amortised O(1): values are cut into blocks of
# ``size``; the window is a prefix of the current block plus a suffix of the previous one,
# whose suffix extremes are computed once, when the block completes (van Herk/Gil-Werman).
cdef struct ExtremeState:
    Window raw            # last size + 1 values (lag ``size`` stays readable)
    double* suffix        # 2 * size: suffix extremes of the previous block, double-buffered
    Py_ssize_t size
    Py_ssize_t offset     # position of the newest value within its block
    Py_ssize_t half       # 0 or size: which half of ``suffix`` is current
    double prefix         # extreme of the current block so far
    double sign           # +1 for a maximum, -1 for a minimum (compare sign * value)

cdef int extreme_init(ExtremeState* e, Py_ssize_t size, bint is_max) except -1
cdef void extreme_reset(ExtremeState* e) noexcept nogil
cdef void extreme_free(ExtremeState* e) noexcept nogil


# Extreme of the last min(size, pushed) values, x included. Inline, and branch-free on
# the kind of extreme, because Donchian channels and pivots call it on every bar.
cdef inline double extreme_step(ExtremeState* e, double x) noexcept nogil:
    cdef Py_ssize_t w = e.size, j
    cdef double sg = e.sign, best, v
    window_push(&e.raw, x)
    e.offset += 1
    if e.offset == w:
        e.offset = 0
        e.prefix = x
        if e.raw.n > w:
            # The block just completed sits at lags w..1. Write its suffix extremes into
            # the other half, so the pre-step state (kept for update_last) stays valid.
            e.half = w - e.half
            best = window_get(&e.raw, 1)
            e.suffix[e.half + w - 1] = best
            for j in range(w - 2, 0, -1):
                v = window_get(&e.raw, w - j)
                if sg * v > sg * best:
                    best = v
                e.suffix[e.half + j] = best
    elif sg * x > sg * e.prefix:
        e.prefix = x
    if e.raw.n <= w or e.offset == w - 1:
        return e.prefix
    v = e.suffix[e.half + e.offset + 1]
    return v if sg * v > sg * e.prefix else e.prefix

cdef struct SMAState:
    Window win
    double total          # TA-Lib's running total of the last (period - 1) values

cdef int sma_init(SMAState* s, Py_ssize_t period) except -1
cdef void sma_free(SMAState* s) noexcept nogil
# TA-Lib's SMA: add the new value, output, then drop the oldest (NaN in warm-up).
cdef inline double sma_step(SMAState* s, double x) noexcept nogil:
    cdef Py_ssize_t period = s.win.size
    cdef double out
    window_push(&s.win, x)
    s.total += x
    if s.win.n < period:
        return NAN
    out = s.total / period
    s.total -= window_get(&s.win, period - 1)
    return out

cdef struct EMAState:
    Py_ssize_t period
    double k              # smoothing factor 2 / (period + 1), as TA-Lib
    double seed_total     # sum of the first ``period`` inputs (SMA seed)
    double value          # current EMA, valid once n >= period
    long long n

cdef void ema_init(EMAState* s, Py_ssize_t period) noexcept nogil
cdef void ema_init_k(EMAState* s, Py_ssize_t period, double k) noexcept nogil
# TA-Lib's EMA: SMA seed over the first ``period`` inputs, then one fused step
# (``hw``: issue the FMA instruction; see _checks.pxd).
cdef inline double ema_step_on(EMAState* s, double x, bint hw) noexcept nogil:
    s.n += 1
    if s.n < s.period:
        s.seed_total += x
        return NAN
    if s.n == s.period:
        s.seed_total += x
        s.value = s.seed_total / s.period
    else:
        s.value = fused_madd_on(hw, s.k, x - s.value, s.value)
    return s.value


cdef inline double ema_step(EMAState* s, double x) noexcept nogil:
    return ema_step_on(s, x, fma_available())
