"""Moving averages (SMA, EMA) and the rolling window shared by windowed kernels.

Arithmetic follows TA-Lib's C code operation for operation so that results are
bit-identical to ``talib.SMA`` / ``talib.EMA`` (default compatibility mode; the EMA
steps with a fused multiply-add like TA-Lib on FMA hardware, see _checks.pxd).
"""

from libc.math cimport NAN
from libc.stdlib cimport calloc, free

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidInputError

from l2fast._checks cimport as_input, check_finite, check_period, fma_available

cnp.import_array()


# ---------------------------------------------------------------- rolling window

cdef int window_init(Window* w, Py_ssize_t size) except -1:
    w.buf = <double*>calloc(size + 1, sizeof(double))
    if w.buf == NULL:
        raise MemoryError()
    w.size = size
    w.head = 0
    w.n = 0
    return 0


cdef void window_free(Window* w) noexcept nogil:
    free(w.buf)
    w.buf = NULL


# ---------------------------------------------------------------- rolling extreme

cdef int extreme_init(ExtremeState* e, Py_ssize_t size, bint is_max) except -1:
    e.suffix = <double*>calloc(2 * size, sizeof(double))
    if e.suffix == NULL:
        raise MemoryError()
    e.raw.buf = NULL
    try:
        window_init(&e.raw, size + 1)
    except MemoryError:
        free(e.suffix)
        e.suffix = NULL
        raise
    e.size = size
    e.sign = 1.0 if is_max else -1.0
    extreme_reset(e)
    return 0


cdef void extreme_reset(ExtremeState* e) noexcept nogil:
    e.raw.head = 0
    e.raw.n = 0
    e.offset = e.size - 1
    e.half = 0
    e.prefix = NAN


cdef void extreme_free(ExtremeState* e) noexcept nogil:
    window_free(&e.raw)
    free(e.suffix)
    e.suffix = NULL


# ------------------------------------------------------------------------- SMA

cdef int sma_init(SMAState* s, Py_ssize_t period) except -1:
    s.total = 0.0
    return window_init(&s.win, period)


cdef void sma_free(SMAState* s) noexcept nogil:
    window_free(&s.win)


# ------------------------------------------------------------------------- EMA

cdef void ema_init(EMAState* s, Py_ssize_t period) noexcept nogil:
    ema_init_k(s, period, 2.0 / <double>(period + 1))


cdef void ema_init_k(EMAState* s, Py_ssize_t period, double k) noexcept nogil:
    s.period = period
    s.k = k
    s.seed_total = 0.0
    s.value = NAN
    s.n = 0


# ------------------------------------------------------------- Python classes

cdef inline void _ema_run(EMAState* s, const double* x, double* o, Py_ssize_t n,
                          bint hw) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = ema_step_on(s, x[i], hw)


cdef class SMA:
    """Simple moving average, equal to ``talib.SMA``.

    Args:
        period: Window length (>= 2).
    """

    cdef SMAState _s
    cdef SMAState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 2)
        self.period = period
        sma_init(&self._s, period)
        self._prev = self._s

    def __dealloc__(self):
        sma_free(&self._s)

    @property
    def ready(self) -> bool:
        """True once the output is defined (after ``period`` updates)."""
        return self._s.win.n >= self.period

    cpdef double update(self, double value) except? -1:
        """Add a closed bar's value and return the SMA (NaN during warm-up)."""
        check_finite(value, "value")
        self._prev = self._s
        return sma_step(&self._s, value)

    cpdef double update_last(self, double value) except? -1:
        """Replace the most recent value (an intra-bar revision) and return the SMA."""
        check_finite(value, "value")
        if self._s.win.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        return sma_step(&self._s, value)

    def update_many(self, values) -> np.ndarray:
        """Feed an array of values; returns the SMA after each one (NaN in warm-up)."""
        cdef cnp.ndarray arr = as_input(values, "values")
        cdef const double[::1] x = arr
        cdef Py_ssize_t i, n = x.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        # Stepping a local copy lets the compiler keep the state in registers.
        cdef SMAState st = self._s
        with nogil:
            for i in range(n - 1):
                o[i] = sma_step(&st, x[i])
            self._prev = st
            o[n - 1] = sma_step(&st, x[n - 1])
        self._s = st
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        self._s.total = 0.0
        self._s.win.head = 0
        self._s.win.n = 0
        self._prev = self._s


cdef class EMA:
    """Exponential moving average seeded by an SMA, equal to ``talib.EMA``.

    Args:
        period: Smoothing period (>= 2); the factor is ``2 / (period + 1)``.
    """

    cdef EMAState _s
    cdef EMAState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 2)
        self.period = period
        ema_init(&self._s, period)
        self._prev = self._s

    @property
    def ready(self) -> bool:
        """True once the output is defined (after ``period`` updates)."""
        return self._s.n >= self.period

    cpdef double update(self, double value) except? -1:
        """Add a closed bar's value and return the EMA (NaN during warm-up)."""
        check_finite(value, "value")
        self._prev = self._s
        return ema_step(&self._s, value)

    cpdef double update_last(self, double value) except? -1:
        """Replace the most recent value (an intra-bar revision) and return the EMA."""
        check_finite(value, "value")
        if self._s.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        return ema_step(&self._s, value)

    def update_many(self, values) -> np.ndarray:
        """Feed an array of values; returns the EMA after each one (NaN in warm-up)."""
        cdef cnp.ndarray arr = as_input(values, "values")
        cdef const double[::1] x = arr
        cdef Py_ssize_t i, n = x.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        # Stepping a local copy lets the compiler keep the state in registers.
        cdef EMAState st = self._s
        with nogil:
            if fma_available():
                _ema_run(&st, &x[0], &o[0], n - 1, True)
            else:
                _ema_run(&st, &x[0], &o[0], n - 1, False)
            self._prev = st
            o[n - 1] = ema_step(&st, x[n - 1])
        self._s = st
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        ema_init(&self._s, self.period)
        self._prev = self._s
