"""FinRL's turbulence index, incrementally: one date's closes in, that date's value out.

The definition, the pseudo-inverse and the embedding contract are in ``_turbulence.pxd``.
Values equal FinRL 0.3.7's ``FeatureEngineer.calculate_turbulence`` (pandas' ``cov`` and
numpy's ``pinv``) to rounding when fed the same closes from the same first date.
"""

from libc.math cimport fabs, sqrt
from libc.stdlib cimport free, malloc

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidInputError

from l2fast._checks cimport check_period

cnp.import_array()

cdef enum:
    # Jacobi sweeps before giving up (N <= 8 converges in well under 10; the cap only
    # bounds the loop should a NaN ever reach it).
    MAX_SWEEPS = 64

# A row leaving the window whose squared deviation exceeds this multiple of what the rest
# of its column's squares sum to triggers an exact rebuild: while it was in, every addition
# to that column rounded at its scale, and the residue would now dominate.
cdef double OUTLIER_RATIO = 1.0

# numpy 2.x's default ``pinv`` cutoff: singular values <= RCOND * the largest are zeroed.
cdef double RCOND = 1e-15


# ------------------------------------------------------------------------ kernel

cdef int turb_init(TurbState* s, int n_assets, int window) except -1:
    s.ring = <double*>malloc(<size_t>window * <size_t>n_assets * sizeof(double))
    if s.ring == NULL:
        raise MemoryError()
    s.n_assets = n_assets
    s.window = window
    turb_reset(s)
    return 0


cdef void turb_reset(TurbState* s) noexcept nogil:
    cdef int j
    s.head = 0
    s.count = 0
    s.pushes_to_rebuild = s.window
    s.steps = 0
    s.positives = 0
    s.last = 0.0
    for j in range(TURB_MAX_ASSETS):
        s.prev[j] = 0.0
        s.shift[j] = 0.0
        s.sum1[j] = 0.0
    for j in range(TURB_MAX_PAIRS):
        s.sum2[j] = 0.0


cdef void turb_free(TurbState* s) noexcept nogil:
    free(s.ring)
    s.ring = NULL


cdef double turb_pinv_quadratic(double* a, const double* d, int n) noexcept nogil:
    # Cyclic Jacobi (Rutishauser's rotation formulas): A = V diag(lambda) V'. The rotations
    # are applied to y = V'd as they are found, so V itself is never stored.
    cdef double y[TURB_MAX_ASSETS]
    cdef double apq, app, aqq, arp, arq, theta, t, c, sn, tau, yp, yq, big, total
    cdef int p, q, r, sweep
    cdef bint rotated
    for p in range(n):
        y[p] = d[p]
    for sweep in range(MAX_SWEEPS):
        rotated = False
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = a[p * n + q]
                if apq == 0.0:
                    continue
                app = a[p * n + p]
                aqq = a[q * n + q]
                # Negligible against both diagonal entries: its rotation would change no
                # eigenvalue in the last place.
                if fabs(app) + 100.0 * fabs(apq) == fabs(app) and fabs(aqq) + 100.0 * fabs(apq) == fabs(aqq):
                    a[p * n + q] = 0.0
                    a[q * n + p] = 0.0
                    continue
                rotated = True
                theta = (aqq - app) / (2.0 * apq)
                t = 1.0 / (fabs(theta) + sqrt(theta * theta + 1.0))
                if theta < 0.0:
                    t = -t
                c = 1.0 / sqrt(t * t + 1.0)
                sn = t * c
                tau = sn / (1.0 + c)
                a[p * n + p] = app - t * apq
                a[q * n + q] = aqq + t * apq
                a[p * n + q] = 0.0
                a[q * n + p] = 0.0
                for r in range(n):
                    if r == p or r == q:
                        continue
                    arp = a[r * n + p]
                    arq = a[r * n + q]
                    a[r * n + p] = arp - sn * (arq + tau * arp)
                    a[p * n + r] = a[r * n + p]
                    a[r * n + q] = arq + sn * (arp - tau * arq)
                    a[q * n + r] = a[r * n + q]
                yp = y[p]
                yq = y[q]
                y[p] = yp - sn * (yq + tau * yp)
                y[q] = yq + sn * (yp - tau * yq)
        if not rotated:
            break
    big = 0.0
    for p in range(n):
        if fabs(a[p * n + p]) > big:
            big = fabs(a[p * n + p])
    total = 0.0
    for p in range(n):
        # ``>`` as numpy's ``s > cutoff``: a zero matrix keeps nothing (t = 0).
        if fabs(a[p * n + p]) > RCOND * big:
            total += y[p] * y[p] / a[p * n + p]
    return total


cdef void _rebuild(TurbState* s) noexcept nogil:
    # Exact two-pass sums around the window's mean (the ring in any order: sums commute).
    cdef int n = s.n_assets, m = s.count, i, j, k
    cdef double* row
    cdef double dev[TURB_MAX_ASSETS]
    for j in range(n):
        s.shift[j] = 0.0
    for i in range(m):
        row = s.ring + i * n
        for j in range(n):
            s.shift[j] += row[j]
    for j in range(n):
        s.shift[j] /= m
        s.sum1[j] = 0.0
    for j in range(n * n):
        s.sum2[j] = 0.0
    for i in range(m):
        row = s.ring + i * n
        for j in range(n):
            dev[j] = row[j] - s.shift[j]
            s.sum1[j] += dev[j]
        for j in range(n):
            for k in range(j, n):
                s.sum2[j * n + k] += dev[j] * dev[k]
    s.pushes_to_rebuild = s.window


cdef inline void _push(TurbState* s, const double* x) noexcept nogil:
    cdef int n = s.n_assets, j, k
    cdef double* row = s.ring + s.head * n
    cdef double dev[TURB_MAX_ASSETS]
    cdef bint outlier_left = False
    if s.count == s.window:
        for j in range(n):
            dev[j] = row[j] - s.shift[j]
            s.sum1[j] -= dev[j]
        for j in range(n):
            for k in range(j, n):
                s.sum2[j * n + k] -= dev[j] * dev[k]
            if dev[j] * dev[j] > OUTLIER_RATIO * s.sum2[j * n + j]:
                outlier_left = True
    else:
        if s.count == 0:
            # Anchor near the data until the first rebuild (raw sums would cancel digits).
            for j in range(n):
                s.shift[j] = x[j]
        s.count += 1
    for j in range(n):
        row[j] = x[j]
        dev[j] = x[j] - s.shift[j]
        s.sum1[j] += dev[j]
    for j in range(n):
        for k in range(j, n):
            s.sum2[j * n + k] += dev[j] * dev[k]
    s.head += 1
    if s.head == s.window:
        s.head = 0
    s.pushes_to_rebuild -= 1
    if s.pushes_to_rebuild <= 0 or outlier_left:
        _rebuild(s)


cdef double turb_step(TurbState* s, const double* closes) noexcept nogil:
    cdef int n = s.n_assets, j, k
    cdef double r[TURB_MAX_ASSETS]
    cdef double d[TURB_MAX_ASSETS]
    cdef double cov[TURB_MAX_PAIRS]
    cdef double m, inv_m, inv_m1, v, t = 0.0
    if s.steps == 0:
        # The first date's return is NaN: no row for the window, output 0.
        for j in range(n):
            s.prev[j] = closes[j]
        s.steps = 1
        s.last = 0.0
        return 0.0
    for j in range(n):
        # pandas' pct_change: close / previous - 1, in that order.
        r[j] = closes[j] / s.prev[j] - 1.0
        s.prev[j] = closes[j]
    if s.steps >= s.window:
        m = s.count
        inv_m = 1.0 / m
        inv_m1 = 1.0 / (m - 1.0)
        for j in range(n):
            d[j] = (r[j] - s.shift[j]) - s.sum1[j] * inv_m
            for k in range(j, n):
                v = (s.sum2[j * n + k] - s.sum1[j] * s.sum1[k] * inv_m) * inv_m1
                cov[j * n + k] = v
                cov[k * n + j] = v
        t = turb_pinv_quadratic(cov, d, n)
        if t > 0.0:
            s.positives += 1
            if s.positives <= 2:
                t = 0.0
        else:
            # Also NaN, as FinRL's ``temp > 0`` test.
            t = 0.0
    _push(s, r)
    s.steps += 1
    s.last = t
    return t


# ------------------------------------------------------------------- Python class

cdef cnp.ndarray _as_closes(object values, int ndim, int n_assets):
    # C-contiguous float64 copy-or-view of ``values`` with the given rank and N columns,
    # every element finite and > 0; raises InvalidInputError naming the first bad one.
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[arr.ndim - 1] != n_assets:
        want = f"({n_assets},)" if ndim == 1 else f"(T, {n_assets})"
        raise InvalidInputError(f"closes: expected shape {want}, got {arr.shape}")
    with np.errstate(invalid="ignore"):
        good = np.isfinite(arr) & (arr > 0.0)
    if not good.all():
        bad = np.argwhere(~good)[0]
        where = ", ".join(str(int(i)) for i in bad)
        raise InvalidInputError(f"closes[{where}]={float(arr[tuple(bad)])!r}: must be finite and > 0")
    return arr


cdef class Turbulence:
    """FinRL's turbulence index over N assets, one date's closes at a time.

    Equals FinRL 0.3.7's ``FeatureEngineer.calculate_turbulence`` on the same closes from
    the same first date: 0 for the first ``window`` dates, then the Mahalanobis distance
    ``d pinv(C) d'`` of the date's returns from the mean ``m`` and sample covariance ``C``
    of the previous ``window`` dates' returns (the first date's NaN return left out),
    where ``d = r - m``; values <= 0 and the first two positive values are 0.

    Args:
        n_assets: Number of assets N (1 .. 8), the closes' order fixed by the caller
            (FinRL sorts its tickers by name).
        window: Rows of the trailing window (FinRL's 252; a row count, not a duration).

    Raises:
        InvalidInputError: ``n_assets`` outside 1 .. 8 or ``window`` < 3.
    """

    cdef TurbState _s
    cdef readonly int n_assets
    cdef readonly int window

    def __cinit__(self, int n_assets, int window=252):
        if n_assets < 1 or n_assets > TURB_MAX_ASSETS:
            raise InvalidInputError(f"n_assets={n_assets!r}: must be in 1 .. {TURB_MAX_ASSETS}")
        check_period(window, 3, "window")
        self.n_assets = n_assets
        self.window = window
        turb_init(&self._s, n_assets, window)

    def __dealloc__(self):
        turb_free(&self._s)

    @property
    def ready(self) -> bool:
        """True once the window is whole and the value is FinRL's index (after window + 1 dates)."""
        return self._s.steps > self.window

    @property
    def steps(self) -> int:
        """Dates consumed since construction or ``reset()``."""
        return self._s.steps

    @property
    def value(self) -> float:
        """The last value returned (0.0 before the first update)."""
        return self._s.last

    def update(self, closes) -> float:
        """Consume one date's N closes (finite, > 0) and return that date's turbulence.

        Raises:
            InvalidInputError: a wrong shape, a non-finite or non-positive close; the
                state is then unchanged.
        """
        cdef cnp.ndarray arr = _as_closes(closes, 1, self.n_assets)
        cdef const double[::1] v = arr
        return turb_step(&self._s, &v[0])

    def update_many(self, closes) -> np.ndarray:
        """Consume dates in order (``closes`` of shape [T, N]); returns the T values.

        Raises:
            InvalidInputError: as :meth:`update`, checked for every row before any is
                consumed (the state is then unchanged).
        """
        cdef cnp.ndarray arr = _as_closes(closes, 2, self.n_assets)
        cdef const double[:, ::1] v = arr
        cdef Py_ssize_t i, rows = v.shape[0]
        out = np.empty(rows, dtype=np.float64)
        cdef double[::1] o = out
        with nogil:
            for i in range(rows):
                o[i] = turb_step(&self._s, &v[i, 0])
        return out

    def reset(self) -> None:
        """Return to the freshly constructed state."""
        turb_reset(&self._s)


#: Most assets one turbulence index spans (the kernel's fixed capacity).
MAX_ASSETS = TURB_MAX_ASSETS


def pinv_quadratic(cov, d) -> float:
    """``d pinv(cov) d'`` for a symmetric PSD matrix (N <= 8), as the kernel computes it.

    A test hook for the Jacobi pseudo-inverse against ``numpy.linalg.pinv``.
    """
    a = np.array(cov, dtype=np.float64, order="C")
    x = np.ascontiguousarray(d, dtype=np.float64)
    cdef int n = x.shape[0]
    if n < 1 or n > TURB_MAX_ASSETS or a.shape != (n, n):
        raise InvalidInputError(f"pinv_quadratic: cov {a.shape} and d {x.shape} must be (N, N) and (N,), N <= 8")
    cdef double[:, ::1] va = a
    cdef const double[::1] vx = x
    return turb_pinv_quadratic(&va[0, 0], &vx[0], n)
