"""Volume kernels: on-balance volume and the rolling volume z-score.

OBV adds and subtracts in TA-Lib's order, so it is bit-identical to ``talib.OBV``.
"""

from libc.math cimport NAN, sqrt

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidInputError

from l2fast._checks cimport as_input, check_finite, check_period, check_same_length
from l2fast.technical._statistics cimport var_free, var_init, var_reset, var_step

cnp.import_array()


# ------------------------------------------------------------------------- OBV

cdef void obv_init(OBVState* s) noexcept nogil:
    s.obv = 0.0
    s.prev_close = 0.0
    s.n = 0


cdef inline double _obv_advance(OBVState* s, double close, double volume) noexcept nogil:
    s.n += 1
    if s.n == 1:
        s.obv = volume
    elif close > s.prev_close:
        s.obv += volume
    elif close < s.prev_close:
        s.obv -= volume
    s.prev_close = close
    return s.obv


cdef void _obv_run(OBVState* s, const double* close, const double* volume, double* out,
                   Py_ssize_t n) noexcept nogil:
    # Steps a local copy so the compiler can keep the running total in a register.
    cdef OBVState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = _obv_advance(&st, close[i], volume[i])
    s[0] = st


cdef double obv_step(OBVState* s, double close, double volume) noexcept nogil:
    cdef double out
    _obv_run(s, &close, &volume, &out, 1)
    return out


# -------------------------------------------------------------- volume z-score

cdef int volz_init(VolumeZState* s, Py_ssize_t period) except -1:
    return var_init(&s.var, period)


cdef void volz_reset(VolumeZState* s) noexcept nogil:
    var_reset(&s.var)


cdef void volz_free(VolumeZState* s) noexcept nogil:
    var_free(&s.var)


cdef inline double _volz_advance(VolumeZState* s, double volume) noexcept nogil:
    # The variance kernel is cancellation-free and returns exactly 0 on a flat window
    # (a run of zero-volume bars, say), where the z-score is defined as 0.
    cdef double variance = var_step(&s.var, volume)
    if s.var.win.n < s.var.win.size:
        return NAN
    if variance == 0.0:
        return 0.0
    return (volume - s.var.mean) / sqrt(variance)


cdef void _volz_run(VolumeZState* s, const double* volume, double* out, Py_ssize_t n) noexcept nogil:
    # Steps a local copy so the compiler can keep the running sums in registers.
    cdef VolumeZState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = _volz_advance(&st, volume[i])
    s[0] = st


cdef double volz_step(VolumeZState* s, double volume) noexcept nogil:
    cdef double out
    _volz_run(s, &volume, &out, 1)
    return out


# ------------------------------------------------------------- Python classes

cdef class OBV:
    """On-balance volume, equal to ``talib.OBV``.

    Defined from the first bar on (its value is that bar's volume), so there is no
    warm-up.
    """

    cdef OBVState _s
    cdef OBVState _prev

    def __cinit__(self):
        obv_init(&self._s)
        self._prev = self._s

    @property
    def ready(self) -> bool:
        """True once a bar has been seen."""
        return self._s.n > 0

    cpdef double update(self, double close, double volume) except? -1:
        """Add a closed bar; returns the OBV."""
        check_finite(close, "close")
        check_finite(volume, "volume")
        self._prev = self._s
        return obv_step(&self._s, close, volume)

    cpdef double update_last(self, double close, double volume) except? -1:
        """Replace the most recent bar (an intra-bar revision); returns the OBV."""
        check_finite(close, "close")
        check_finite(volume, "volume")
        if self._s.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        return obv_step(&self._s, close, volume)

    def update_many(self, close, volume) -> np.ndarray:
        """Feed equal-length arrays of closes and volumes; returns the OBV per bar."""
        cdef cnp.ndarray ac = as_input(close, "close")
        cdef cnp.ndarray av = as_input(volume, "volume")
        check_same_length(ac.shape[0], av.shape[0], "volume")
        cdef const double[::1] c = ac
        cdef const double[::1] v = av
        cdef Py_ssize_t n = c.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _obv_run(&self._s, &c[0], &v[0], &o[0], n - 1)
            self._prev = self._s
            o[n - 1] = obv_step(&self._s, c[n - 1], v[n - 1])
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        obv_init(&self._s)
        self._prev = self._s


cdef class VolumeZScore:
    """z-score of the volume within its rolling window.

    ``(v - mean) / std`` over the last ``period`` volumes including the current one,
    with the population standard deviation (ddof=0). A flat window (all volumes equal,
    e.g. zero-volume bars) gives 0.0.

    Args:
        period: Window length (>= 2).
    """

    cdef VolumeZState _s
    cdef VolumeZState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 2)
        self.period = period
        volz_init(&self._s, period)
        self._prev = self._s

    def __dealloc__(self):
        volz_free(&self._s)

    @property
    def ready(self) -> bool:
        """True once the output is defined (after ``period`` updates)."""
        return self._s.var.win.n >= self.period

    cpdef double update(self, double volume) except? -1:
        """Add a closed bar's volume; returns its z-score (NaN during warm-up)."""
        check_finite(volume, "volume")
        self._prev = self._s
        return volz_step(&self._s, volume)

    cpdef double update_last(self, double volume) except? -1:
        """Replace the most recent volume (an intra-bar revision); returns its z-score."""
        check_finite(volume, "volume")
        if self._s.var.win.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        return volz_step(&self._s, volume)

    def update_many(self, volume) -> np.ndarray:
        """Feed an array of volumes; returns the z-score after each one."""
        cdef cnp.ndarray arr = as_input(volume, "volume")
        cdef const double[::1] v = arr
        cdef Py_ssize_t n = v.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _volz_run(&self._s, &v[0], &o[0], n - 1)
            self._prev = self._s
            o[n - 1] = volz_step(&self._s, v[n - 1])
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        volz_reset(&self._s)
        self._prev = self._s
