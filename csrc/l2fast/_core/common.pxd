# Boundary validation shared by every kernel module's Python classes.
# Kernels themselves never validate: these run once, in the ``def``/``cpdef`` wrappers.
cimport numpy as cnp

cdef int check_period(Py_ssize_t period, Py_ssize_t minimum, str name=*) except -1
cdef int check_finite(double x, str name) except -1
# C-contiguous float64 1-D copy-or-view of ``values``; raises InvalidInputError naming
# ``name`` and the first non-finite element.
cdef cnp.ndarray as_input(object values, str name)
cdef int check_same_length(Py_ssize_t a, Py_ssize_t b, str name) except -1
