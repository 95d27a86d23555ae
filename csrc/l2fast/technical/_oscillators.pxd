# Contract of the oscillator kernels (RSI, MACD, Stochastic, ADX with +DI/-DI).
#
# Same convention as _averages.pxd: plain C state structs, ``x_init`` / ``x_free`` /
# ``x_step``; steps are O(1) (the stochastic's extreme tracking is O(1) amortised),
# allocate nothing, never fail, and write NaN during warm-up. Multi-output kernels
# write through pointers. Every buffer keeps one spare slot, so a struct copy taken
# before a step undoes that step (``update_last``).

from l2fast.technical._averages cimport EMAState, SMAState, Window

cdef struct RSIState:
    Py_ssize_t period
    double inv_period     # 1 / period (TA-Lib multiplies by it instead of dividing)
    double period_m1      # period - 1 as double (Wilder's weight of the old average)
    double prev           # previous input
    double gain           # Wilder average gain (a plain sum while seeding)
    double loss           # Wilder average loss (a plain sum while seeding)
    long long n           # inputs since init

cdef void rsi_init(RSIState* s, Py_ssize_t period) noexcept nogil
# RSI in [0, 100]; 0.0 when average gain + loss is exactly 0 (TA-Lib); NaN for the
# first ``period`` inputs.
cdef double rsi_step(RSIState* s, double x) noexcept nogil

cdef struct MACDState:
    # EMAs step as fma(k, x - prev, prev), like TA-Lib's MACD (not averages.ema_step).
    EMAState fast         # fed from input number ``slow - fast + 1`` on (TA-Lib's seed)
    EMAState slow
    EMAState signal       # EMA of the MACD line, fed from input number ``slow`` on
    Py_ssize_t fast_skip  # slow - fast: leading inputs the fast EMA never sees
    long long n

cdef void macd_init(MACDState* s, Py_ssize_t fast, Py_ssize_t slow,
                    Py_ssize_t signal) noexcept nogil
# macd = fast EMA - slow EMA, signal = EMA(signal) of macd, hist = macd - signal;
# all three NaN for the first ``slow + signal - 2`` inputs.
cdef void macd_step(MACDState* s, double x, double* macd, double* signal,
                    double* hist) noexcept nogil

cdef struct StochState:
    Window highs          # last ``fastk_period`` highs
    Window lows           # last ``fastk_period`` lows
    double highest        # highest high of the window
    double lowest         # lowest low of the window
    long long highest_at  # input index (0-based) of ``highest``; -1 = rescan
    long long lowest_at   # input index (0-based) of ``lowest``; -1 = rescan
    SMAState slowk        # SMA of fast %K
    SMAState slowd        # SMA of slow %K

cdef int stoch_init(StochState* s, Py_ssize_t fastk_period, Py_ssize_t slowk_period,
                    Py_ssize_t slowd_period) except -1
cdef void stoch_free(StochState* s) noexcept nogil
# Back to the freshly initialised state, keeping the buffers.
cdef void stoch_reset(StochState* s) noexcept nogil
# k = slow %K (SMA of fast %K; fast %K is 0 when the high-low range is 0),
# d = slow %D (SMA of slow %K); both NaN for the first
# ``fastk + slowk + slowd - 3`` inputs (TA-Lib withholds %K until %D exists).
cdef void stoch_step(StochState* s, double high, double low, double close,
                     double* k, double* d) noexcept nogil

cdef struct ADXState:
    Py_ssize_t period
    double period_d
    double period_m1
    double prev_high
    double prev_low
    double prev_close
    double plus_dm        # Wilder-smoothed +DM (a plain sum while seeding)
    double minus_dm       # Wilder-smoothed -DM (a plain sum while seeding)
    double tr             # Wilder-smoothed true range (a plain sum while seeding)
    double sum_dx         # sum of the first ``period`` DX values (ADX seed)
    double adx
    long long n

cdef void adx_init(ADXState* s, Py_ssize_t period) noexcept nogil
# pdi / mdi = +DI / -DI (0 when the smoothed range is 0), NaN for the first
# ``period`` inputs; adx = Wilder average of DX, NaN for the first ``2 * period - 1``.
cdef void adx_step(ADXState* s, double high, double low, double close,
                   double* adx, double* pdi, double* mdi) noexcept nogil
