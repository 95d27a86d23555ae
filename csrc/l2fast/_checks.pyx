"""Boundary validation helpers shared by the compiled kernel modules."""

from libc.math cimport isfinite

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidInputError

cnp.import_array()


cdef int check_period(Py_ssize_t period, Py_ssize_t minimum, str name="period") except -1:
    if period < minimum:
        raise InvalidInputError(f"{name}={period!r}: must be an integer >= {minimum}")
    return 0


cdef int check_finite(double x, str name) except -1:
    if not isfinite(x):
        raise InvalidInputError(f"{name}={x!r}: must be finite")
    return 0


cdef cnp.ndarray as_input(object values, str name):
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(f"{name}[{bad}]={float(arr[bad])!r}: must be finite")
    return arr


cdef int check_same_length(Py_ssize_t a, Py_ssize_t b, str name) except -1:
    if a != b:
        raise InvalidInputError(f"{name}: length {b} differs from the first input's {a}")
    return 0


cdef tuple enum_names(object enum_cls, str prefix, bint lower):
    names = []
    for constant, value in enum_cls.__members__.items():
        if value != len(names) or not constant.startswith(prefix):
            raise RuntimeError(f"{enum_cls.__name__}.{constant} = {int(value)}: the constants must be "
                               f"{prefix}* numbered 0, 1, ... in declaration order")
        name = constant[len(prefix):]
        names.append(name.lower() if lower else name)
    if not names:
        raise RuntimeError(f"{enum_cls.__name__} has no constant")
    return tuple(names)
