# Contract of the turbulence kernel: FinRL 0.3.7's turbulence index
# (``FeatureEngineer.calculate_turbulence``), computed incrementally, one date at a time.
#
# Definition reproduced (per date i, counted from 0 = the first closes given):
#   r_i = close_i / close_{i-1} - 1 per asset (pandas' pct_change; r_0 is NaN);
#   for i < window: 0;
#   for i >= window: the history is the return rows of dates [i - window, i) less the NaN
#   row 0 (so window - 1 rows at i = window, then window rows); with its column means m and
#   sample covariance C (ddof 1), t = (r_i - m) pinv(C) (r_i - m)'; the output is t when
#   t > 0 and at least two earlier dates had t > 0 (FinRL's "avoid large outlier" counter,
#   counted from the first closes given), else 0.
#
# pinv is numpy 2.x's default: singular values <= 1e-15 * the largest are zeroed. C is
# symmetric positive semi-definite, so its singular values are the magnitudes of its
# eigenvalues, found by a cyclic Jacobi eigen-decomposition (no LAPACK); then
# t = sum_k (v_k . d)^2 / lambda_k over the kept eigenpairs (d' pinv(C) d, without forming
# pinv(C)).
#
# Cost per step: O(N^2) for the running sums, plus the N x N eigen-decomposition
# (O(N^3) per Jacobi sweep; N <= TURB_MAX_ASSETS) once the window is full. Every
# ``window`` pushes, and when a row leaves whose squared deviation outweighed the rest of
# its column (an outlier: the residue of the rounding at its scale would dominate what
# remains), the sums are rebuilt exactly (two passes over the ring) around the window's
# mean, so rounding cannot drift however long the stream runs.
#
# Embedding (the engine, a snapshot codec): turb_init allocates the one heap buffer,
# ``ring`` (window * n_assets doubles, row-major, row ``(head + k) % window`` is the k-th
# oldest held return vector when count == window); every other field is plain data in the
# struct. A snapshot is the struct's bytes plus the ring's window * n_assets doubles; a
# restore copies both into a state made by turb_init with the same n_assets and window.
# The caller validates inputs: turb_step expects n_assets finite closes > 0.

cdef enum:
    TURB_MAX_ASSETS = 8
    TURB_MAX_PAIRS = 64       # TURB_MAX_ASSETS ** 2 (Cython wants a literal array size)


cdef struct TurbState:
    int n_assets              # N, 1 .. TURB_MAX_ASSETS
    int window                # FinRL's 252 rows (a row count, not a duration)
    double* ring              # heap, window * N: the last ``count`` valid return vectors
    int head                  # row written next (the oldest row once count == window)
    int count                 # valid return rows held, <= window
    int pushes_to_rebuild     # countdown to the exact rebuild of the sums
    long long steps           # closes consumed: the date index of the next step
    long long positives       # dates with t > 0 so far (FinRL's ``count``)
    double prev[TURB_MAX_ASSETS]       # the previous date's closes (valid when steps > 0)
    double shift[TURB_MAX_ASSETS]      # anchor of the sums: the window mean at the last rebuild
    double sum1[TURB_MAX_ASSETS]       # sum over the ring of (x - shift)
    double sum2[TURB_MAX_PAIRS]        # sum over the ring of (x - shift)(x - shift)', N x N row-major
    double last                        # the last output (0 before the first step)


# Allocates the ring and resets; raises MemoryError (the state then owns nothing).
# n_assets in 1 .. TURB_MAX_ASSETS and window >= 3 are the caller's to check.
cdef int turb_init(TurbState* s, int n_assets, int window) except -1
# Back to the fresh state (keeps the ring's allocation).
cdef void turb_reset(TurbState* s) noexcept nogil
# Releases the ring (safe on a zeroed or already freed state).
cdef void turb_free(TurbState* s) noexcept nogil
# Consumes one date's N closes (finite, > 0) and returns that date's turbulence.
cdef double turb_step(TurbState* s, const double* closes) noexcept nogil
# d' pinv(C) d for a symmetric PSD N x N matrix ``cov`` (row-major; overwritten) and a
# vector ``d``: numpy's default cutoff, by a Jacobi eigen-decomposition. Exposed for tests.
cdef double turb_pinv_quadratic(double* cov, const double* d, int n) noexcept nogil
