"""Pure-Python reference implementations of every compiled kernel.

They are slow and exist for tests: each kernel is streamed side by side with its twin
here, which is written for clarity from the published definitions of the algorithms.
"""
