"""Compiled kernels (Cython). Private: use the public modules of :mod:`l2fast`."""
