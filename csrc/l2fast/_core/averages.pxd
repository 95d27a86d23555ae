# Contract of the moving-average kernels and of the rolling window they share.
#
# Kernel convention (every l2fast._core module follows it):
#   * the state of a kernel is a plain C struct (``XState``);
#   * ``x_init(&s, ...)`` sets a fresh state (and ``x_free`` releases any buffer);
#   * ``x_step(&s, ...)`` consumes one value in O(1), allocates nothing, returns NaN
#     during warm-up, and never fails (inputs were validated at the boundary);
#   * buffers hold one slot more than the window needs, so the state before a step is
#     restored by a plain struct copy: that is how ``update_last`` (revise the forming
#     bar) works without saving anything per step.

cdef struct Window:
    # Ring of the last ``size`` values, capacity ``size + 1`` (see the note above).
    double* buf
    Py_ssize_t size       # window length
    Py_ssize_t head       # slot of the next write
    long long n           # values pushed since init

cdef int window_init(Window* w, Py_ssize_t size) except -1
cdef void window_free(Window* w) noexcept nogil
cdef void window_push(Window* w, double x) noexcept nogil
# Value pushed ``lag`` steps ago (lag 0 = newest); lag must be < size and < n.
cdef double window_get(const Window* w, Py_ssize_t lag) noexcept nogil

cdef struct SMAState:
    Window win
    double total          # TA-Lib's running total of the last (period - 1) values

cdef int sma_init(SMAState* s, Py_ssize_t period) except -1
cdef void sma_free(SMAState* s) noexcept nogil
cdef double sma_step(SMAState* s, double x) noexcept nogil

cdef struct EMAState:
    Py_ssize_t period
    double k              # smoothing factor 2 / (period + 1), as TA-Lib
    double seed_total     # sum of the first ``period`` inputs (SMA seed)
    double value          # current EMA, valid once n >= period
    long long n

cdef void ema_init(EMAState* s, Py_ssize_t period) noexcept nogil
cdef void ema_init_k(EMAState* s, Py_ssize_t period, double k) noexcept nogil
cdef double ema_step(EMAState* s, double x) noexcept nogil
