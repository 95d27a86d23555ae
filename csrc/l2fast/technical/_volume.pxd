# Contract of the volume kernels (conventions: see _averages.pxd).

from l2fast.technical._statistics cimport VarState

cdef struct OBVState:
    # On-balance volume, equal to talib.OBV: starts at the first bar's volume, then
    # adds (subtracts) each volume whose close is above (below) the previous close.
    double obv
    double prev_close
    long long n           # bars seen

cdef void obv_init(OBVState* s) noexcept nogil
cdef double obv_step(OBVState* s, double close, double volume) noexcept nogil

cdef struct VolumeZState:
    # z-score of the latest volume against the last ``period`` volumes (itself
    # included), with the population standard deviation; 0.0 on a flat window.
    VarState var

cdef int volz_init(VolumeZState* s, Py_ssize_t period) except -1
cdef void volz_reset(VolumeZState* s) noexcept nogil
cdef void volz_free(VolumeZState* s) noexcept nogil
cdef double volz_step(VolumeZState* s, double volume) noexcept nogil
