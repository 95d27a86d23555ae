# Contract of the per-bar technical state: every kernel of every timeframe, fed by one
# validated 1-minute bar per step and written into one float64 feature vector.
from l2fast.technical._aggregate cimport BarGuard, TFAgg
from l2fast.technical._averages cimport Window
from l2fast.technical._candles cimport CandleState, N_CANDLE_PATTERNS
from l2fast.technical._levels cimport LevelsState
from l2fast.technical._oscillators cimport ADXState, MACDState, RSIState, StochState
from l2fast.technical._stockstats cimport (
    SSATRState, SSBollState, SSCCIState, SSDXState, SSEWMState, SSMACDState, SSRSIState, SSSMAState,
)
from l2fast.technical._volatility cimport ATRState, BBandsState, DonchianState, RVolState
from l2fast.technical._volume cimport OBVState, VolumeZState

cdef enum:
    MAX_RSI = 4           # RSI periods per timeframe
    MAX_TIMEFRAMES = 8

# Offsets inside one timeframe's block of features. _features.pyx names each in its _SLOTS
# table (checked against these at import and by tests/test_codes.py) and keys its warm-up
# by the constant. cpdef: the constants are visible to Python for that test. RSI slots
# follow S_RSI, then the candlestick patterns.
cpdef enum:  # slots
    S_CLOSE = 0
    S_RET_1
    S_RET_5
    S_MACD
    S_MACD_SIGNAL
    S_MACD_HIST
    S_MACD_HIST_PCT
    S_BB_UPPER
    S_BB_MIDDLE
    S_BB_LOWER
    S_BB_PCTB
    S_BB_WIDTH
    S_ATR
    S_ATR_PCT
    S_STOCH_K
    S_STOCH_D
    S_ADX
    S_PLUS_DI
    S_MINUS_DI
    S_OBV
    S_VOL_Z
    S_RVOL
    S_DONCHIAN_UPPER
    S_DONCHIAN_LOWER
    S_DONCHIAN_POS
    S_SR_SUPPORT
    S_SR_RESISTANCE
    S_SR_DIST_SUPPORT
    S_SR_DIST_RESISTANCE
    S_SR_SUPPORT_STRENGTH
    S_SR_RESISTANCE_STRENGTH
    S_SR_BREAKOUT
    S_SR_DOUBLE_TOP
    S_SR_DOUBLE_BOTTOM
    S_SR_IN_RANGE
    S_RSI                 # first of n_rsi RSI slots

# Extra features (features on demand): stockstats-compatible kernels a caller names beyond
# the fixed block, stepped on the same closed bars, written after the fixed vector.
# _features.pyx names each code in its _EXTRA_KINDS / _EXTRA_OUTPUTS / _EXTRA_SOURCES
# tables (checked against these at import).
cdef enum:  # kinds: which member of SSUnion a state is
    X_SMA = 0
    X_EMA
    X_BOLL
    X_MACD
    X_RSI
    X_ATR
    X_DX
    X_CCI
    N_EXTRA_KINDS

cdef enum:  # inputs of sma and ema: the bar's field
    XS_OPEN = 0
    XS_HIGH
    XS_LOW
    XS_CLOSE
    XS_VOLUME
    N_EXTRA_SOURCES

cdef union SSUnion:
    SSSMAState sma
    SSEWMState ema
    SSBollState boll
    SSMACDState macd
    SSRSIState rsi
    SSATRState atr
    SSDXState dx
    SSCCIState cci

cdef struct ExtraState:
    # One kernel shared by every output of the same (kind, periods, source) on a timeframe.
    int kind              # X_*
    int source            # XS_* (sma, ema; XS_CLOSE for the others)
    SSUnion u

cdef struct ExtraOut:
    # One extra feature: output ``output`` (0: value / mid / macd / dx; 1: ub / macds / pdi;
    # 2: lb / macdh / ndi) of state ``state`` of its block, written at out[slot].
    int state
    int output
    Py_ssize_t slot

cdef struct TFBlock:
    # Every kernel of one timeframe, stepped on each closed bar of that timeframe.
    Window closes         # last 5 closes, for the 1- and 5-bar log returns
    RSIState rsi[MAX_RSI]
    int n_rsi
    MACDState macd
    BBandsState bb
    ATRState atr
    StochState stoch
    ADXState adx
    OBVState obv
    VolumeZState vol_z
    RVolState rvol
    DonchianState donchian
    CandleState candles
    LevelsState levels
    Py_ssize_t offset     # index of this block's first feature in the vector
    long long bars        # closed bars consumed
    # Extra features of this timeframe (NULL / 0 without any): the states, then the
    # outputs ordered by state, so a step runs each state once and writes its outputs.
    ExtraState* extras
    ExtraOut* extra_outs
    int n_extras
    int n_extra_outs

# Consume one closed bar of the block's timeframe and write its features at out + offset.
cdef void block_step(TFBlock* b, double o, double h, double l, double c, double v,
                     double* out) noexcept nogil


cdef class TechnicalState:
    # The engine (_engine.pyx) drives it directly: bar_check on ``_guard`` at its boundary,
    # then ``_step``, then reads the vector through ``_out``.
    cdef BarGuard _guard
    cdef TFAgg _aggs[MAX_TIMEFRAMES]
    cdef TFBlock* _blocks
    cdef int _n_tf
    cdef double* _out
    cdef object _buffer
    cdef readonly object values
    cdef readonly tuple names
    cdef readonly dict index
    cdef readonly tuple timeframes
    cdef readonly object config
    cdef readonly tuple extras    # the extra features' specs, normalised (see _extra_specs)

    # One validated bar (bar_check passed on ``_guard``); returns the updated-timeframe mask.
    cdef int _step(self, long long ts, double o, double h, double l, double c,
                   double v) noexcept nogil
    cpdef int update(self, long long ts, double open, double high, double low, double close,
                     double volume) except -1
