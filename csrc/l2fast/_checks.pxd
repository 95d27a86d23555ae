# Boundary validation shared by every kernel module's Python classes.
# Kernels themselves never validate: these run once, in the ``def``/``cpdef`` wrappers.
cimport numpy as cnp

cdef int check_period(Py_ssize_t period, Py_ssize_t minimum, str name=*) except -1
cdef int check_finite(double x, str name) except -1
# C-contiguous float64 1-D copy-or-view of ``values``; raises InvalidInputError naming
# ``name`` and the first non-finite element.
cdef cnp.ndarray as_input(object values, str name)
cdef int check_same_length(Py_ssize_t a, Py_ssize_t b, str name) except -1


# fused_madd_on(hw, a, b, c) = a * b + c rounded once, as TA-Lib's FMA-compiled kernels (EMA,
# MACD, ATR) compute it on CPUs with FMA. The build may not assume FMA hardware (no
# -march), and libm's out-of-line fma() costs more than the kernels that call it, so on
# x86-64 CPUs that have the instruction it is issued inline; elsewhere libm's exactly
# rounded fma() gives the same bits. Batch loops test ``fma_available()`` once and pass
# a literal ``hw``: inlined, the test then vanishes from the loop (a per-step test of the
# global costs MACD's batch loop about 50%).
cdef extern from *:
    """
    #include <math.h>
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    #define L2F_X86_FMA 1
    static int l2f_has_fma = 0;
    /* Set once when the extension loads, before any kernel runs. */
    __attribute__((constructor)) static void l2f_detect_fma(void) {
        __builtin_cpu_init();
        l2f_has_fma = __builtin_cpu_supports("fma");
    }
    #else
    static const int l2f_has_fma = 0;
    #endif
    static inline int l2f_fma_available(void) { return l2f_has_fma; }
    static inline double l2f_fused_madd_on(int hw, double a, double b, double c) {
    #ifdef L2F_X86_FMA
        if (hw) {
            __asm__("vfmadd231sd %2, %1, %0" : "+x"(c) : "x"(a), "x"(b));
            return c;
        }
    #endif
        return fma(a, b, c);
    }
    """
    bint fma_available "l2f_fma_available"() noexcept nogil
    double fused_madd_on "l2f_fused_madd_on"(bint hw, double a, double b, double c) noexcept nogil

# The Python names of a named ``cpdef enum`` (its Python class, ``enum_cls``) whose constants
# are numbered 0 .. n - 1 in declaration order: name i is constant i's name without
# ``prefix``, lower-cased if ``lower``. The constants are the one declaration; a gap, an
# out-of-order value or a constant without the prefix is a RuntimeError when the module
# loads. (An enum whose constants index C arrays stays anonymous, since Cython refuses a
# named enum as an index, and anonymous constants reach the module only after its code ran.)
cdef tuple enum_names(object enum_cls, str prefix, bint lower)
