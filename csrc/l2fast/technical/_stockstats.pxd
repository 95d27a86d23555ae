# Contract of the stockstats-compatible kernels (FinRL's indicators, stockstats 0.6.10).
#
# Same convention as _averages.pxd: plain C state structs without Python objects,
# ``ss_x_init`` / ``ss_x_step`` (and ``ss_x_reset`` / ``ss_x_free`` for the states that
# own heap buffers); a step consumes one closed bar, allocates nothing, never fails
# (inputs were validated at the boundary) and writes its outputs through pointers.
# Unlike the TA-Lib kernels, these give a value from a series' FIRST bar, with
# stockstats' own conventions for the partial windows (see _stockstats.pyx); the only
# NaN they write are stockstats' own (Bollinger bands on the first bar, +DI/-DI/DX while
# the ATR is exactly 0).
#
# Cost: every step is O(1), except ss_cci_step, whose mean absolute deviation is a
# fresh O(period) pass over its ring on each bar (as stockstats recomputes it; a running
# MAD has no O(1) update), and ss_boll_step, O(1) amortised: once per ``period`` bars it
# rebuilds its running variance over the ring (O(period)) so rounding cannot drift.
#
# Heap buffers (what a snapshot codec walks; each is ``size + 1`` doubles, see Window):
#   SSSMAState.win.buf, SSBollState.ma.win.buf, SSCCIState.tp.win.buf.
# Every other state is flat. As everywhere, each ring keeps one spare slot, so a struct
# copy taken before a step undoes that step (``update_last``).
#
# Warm-up: the Python classes' ``warmup`` gives the closed bars after which every window
# is whole (SMA, std, MAD) or each exponential average has seen a period; the values
# before it are stockstats' too, only they rest on partial windows.

from l2fast.technical._averages cimport Window


cdef struct SSSMAState:
    # Mean of the last min(n, period) values (pandas ``rolling(period, min_periods=1)
    # .mean()``): a Kahan-compensated running sum; a run of equal values covering the
    # window gives that value exactly (as pandas does).
    Window win            # last ``period`` values (capacity period + 1)
    double total          # running sum of the window
    double comp           # Kahan compensation of the values added
    double comp_out       # Kahan compensation of the values removed (kept apart, as
                          # pandas does, so the rounding follows pandas' own)
    double last           # previous input
    long long same        # length of the run of inputs equal to ``last``

cdef int ss_sma_init(SSSMAState* s, Py_ssize_t period) except -1
cdef void ss_sma_reset(SSSMAState* s) noexcept nogil
cdef void ss_sma_free(SSSMAState* s) noexcept nogil
cdef double ss_sma_step(SSSMAState* s, double x) noexcept nogil

cdef struct SSEWMState:
    # pandas ``ewm(adjust=True).mean()`` from the first value: the weighted mean of all
    # inputs with weights (1 - alpha)^age, stepped as value += (x - value) / weight,
    # weight = 1 + (1 - alpha) * previous weight (-> 1 / alpha).
    double decay          # 1 - alpha
    double weight         # sum of the weights of the inputs so far
    double value          # current mean (0 before the first input)
    long long n

# stockstats' ``ema``: span ``period``, alpha = 2 / (period + 1).
cdef void ss_ema_init(SSEWMState* s, Py_ssize_t period) noexcept nogil
# stockstats' ``smma`` (Wilder's): alpha = 1 / period.
cdef void ss_smma_init(SSEWMState* s, Py_ssize_t period) noexcept nogil
cdef double ss_ewm_step(SSEWMState* s, double x) noexcept nogil

cdef struct SSBollState:
    # ``boll`` = SMA(close, period), ``boll_ub`` / ``boll_lb`` = boll +/- 2 * sample std
    # (ddof 1) of the same partial window: NaN on the first bar (one value has no sample
    # std), exactly 0 on a window of equal values.
    SSSMAState ma         # the middle band; owns the ring both statistics read
    double mean           # Welford running mean of the window (for the variance)
    double m2             # Welford sum of squared deviations of the window (both
                          # rebuilt exactly from the ring every ``period`` bars)

cdef int ss_boll_init(SSBollState* s, Py_ssize_t period) except -1
cdef void ss_boll_reset(SSBollState* s) noexcept nogil
cdef void ss_boll_free(SSBollState* s) noexcept nogil
cdef void ss_boll_step(SSBollState* s, double close, double* mid, double* upper,
                       double* lower) noexcept nogil

cdef struct SSMACDState:
    # macd = EMA(fast) - EMA(slow) of the close, macds = EMA(signal) of macd,
    # macdh = macd - macds (all span-EMAs from the first bar: 0, 0, 0 there).
    SSEWMState fast
    SSEWMState slow
    SSEWMState signal

cdef void ss_macd_init(SSMACDState* s, Py_ssize_t fast, Py_ssize_t slow,
                       Py_ssize_t signal) noexcept nogil
cdef void ss_macd_step(SSMACDState* s, double close, double* macd, double* macds,
                       double* macdh) noexcept nogil

cdef struct SSRSIState:
    # 100 * up / (up + down) with up, down the SMMAs of the close's rises and falls,
    # the first bar counting a change of 0; 50 on the first bar and while up + down is 0.
    SSEWMState up
    SSEWMState down
    double prev           # previous close

cdef void ss_rsi_init(SSRSIState* s, Py_ssize_t period) noexcept nogil
cdef double ss_rsi_step(SSRSIState* s, double close) noexcept nogil

cdef struct SSATRState:
    # SMMA of the true range max(h - l, |h - pc|, |l - pc|); the first bar's previous
    # close pc is its own close (stockstats 0.6.10 back-fills the shifted close).
    SSEWMState tr
    double prev_close
    long long n

cdef void ss_atr_init(SSATRState* s, Py_ssize_t period) noexcept nogil
cdef double ss_atr_step(SSATRState* s, double high, double low, double close) noexcept nogil

cdef struct SSDXState:
    # pdi = 100 * SMMA(+DM) / ATR, ndi = 100 * SMMA(-DM) / ATR (NaN while ATR is 0),
    # dx = 100 * |pdi - ndi| / (pdi + ndi) (0 when that sum is 0, NaN with pdi);
    # +DM / -DM are 0 on the first bar. ``atr`` is stockstats' atr_<period>.
    SSATRState atr
    SSEWMState pdm
    SSEWMState ndm
    double prev_high
    double prev_low

cdef void ss_dx_init(SSDXState* s, Py_ssize_t period) noexcept nogil
cdef void ss_dx_step(SSDXState* s, double high, double low, double close, double* dx,
                     double* pdi, double* ndi) noexcept nogil

cdef struct SSCCIState:
    # (tp - SMA(tp)) / (0.015 * MAD(tp)) with tp = (close + high + low) / 3, the SMA over
    # partial windows, the MAD 0 until the window is whole (stockstats zero-fills it),
    # and 0 whenever 0.015 * MAD is 0.
    SSSMAState tp         # SMA of the typical price; owns the ring the MAD reads

cdef int ss_cci_init(SSCCIState* s, Py_ssize_t period) except -1
cdef void ss_cci_reset(SSCCIState* s) noexcept nogil
cdef void ss_cci_free(SSCCIState* s) noexcept nogil
# O(period): the MAD is recomputed over the ring (see the note above).
cdef double ss_cci_step(SSCCIState* s, double high, double low, double close) noexcept nogil
