# Contract of the volatility kernels (conventions: see _averages.pxd).
#
# Multi-output kernels write through pointers; during warm-up every output is NaN.

from l2fast.technical._averages cimport Window
from l2fast.technical._statistics cimport VarState

cdef struct BBandsState:
    # Bollinger Bands over an SMA middle, equal to talib.BBANDS(matype=0).
    VarState var          # population variance of the window (owns the window)
    double ma_total       # TA-Lib's SMA running total of the last period - 1 values
    double nbdev          # band width in standard deviations (up and down alike)

cdef int bbands_init(BBandsState* s, Py_ssize_t period, double nbdev) except -1
cdef void bbands_reset(BBandsState* s) noexcept nogil
cdef void bbands_free(BBandsState* s) noexcept nogil
# Writes the upper, middle (SMA) and lower band.
cdef void bbands_step(BBandsState* s, double x,
                      double* upper, double* middle, double* lower) noexcept nogil

# True range of a bar: max(high - low, |prev_close - high|, |prev_close - low|).
cdef double true_range(double high, double low, double prev_close) noexcept nogil

cdef struct ATRState:
    # Average true range, equal to talib.ATR: the first ``period`` true ranges (bars
    # 2..period+1) are averaged, then Wilder-smoothed.
    Py_ssize_t period
    double w_beta         # (period - 1) / period
    double w_alpha        # 1 - w_beta (derived this way so that the pair sums to 1)
    double prev_close
    double seed_total     # sum of the true ranges seen before the first output
    double value          # current ATR, valid once ready
    long long n           # bars seen

cdef void atr_init(ATRState* s, Py_ssize_t period) noexcept nogil
cdef double atr_step(ATRState* s, double high, double low, double close) noexcept nogil

cdef struct DonchianState:
    # Its own fused two-sided loop rather than two averages.ExtremeState: sharing one ring
    # and one block clock between highs and lows runs 3-4x faster in batch.
    # Highest high / lowest low of the last ``period`` bars in O(1) amortised (van Herk /
    # Gil-Werman blocks): the extreme of the window is that of the current block's
    # prefix and of the previous block's suffix. Suffixes are rebuilt once per block,
    # only on a step that starts a block, so a struct copy still undoes a step.
    Window high           # ring of the last ``period`` highs
    double* low           # ring of the lows: same capacity, indexed by high's head
    double* suffix_high   # suffix_high[k]: max of the previous block's bars k..period-1
    double* suffix_low
    double block_high     # max of the bars of the current block so far
    double block_low
    Py_ssize_t block_len  # bars in the current block (1..period once started)

cdef int donchian_init(DonchianState* s, Py_ssize_t period) except -1
cdef void donchian_reset(DonchianState* s) noexcept nogil
cdef void donchian_free(DonchianState* s) noexcept nogil
# Writes upper = MAX(high), lower = MIN(low) over the window, middle = their mean.
cdef void donchian_step(DonchianState* s, double high, double low,
                        double* upper, double* middle, double* lower) noexcept nogil

cdef struct RVolState:
    # Annualised realized volatility: sample std (ddof=1) of the last ``period`` log
    # returns times sqrt(minutes per 365-day year / bar_minutes).
    VarState var          # population variance of the log returns
    double prev_log       # log of the previous close
    double ddof_scale     # period / (period - 1): population -> sample variance
    double annualise      # sqrt(525600 / bar_minutes)
    long long n           # closes seen

cdef int rvol_init(RVolState* s, Py_ssize_t period, double bar_minutes) except -1
cdef void rvol_reset(RVolState* s) noexcept nogil
cdef void rvol_free(RVolState* s) noexcept nogil
# ``close`` must be > 0 (validated by the caller).
cdef double rvol_step(RVolState* s, double close) noexcept nogil
