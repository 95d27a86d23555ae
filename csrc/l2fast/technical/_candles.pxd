# Contract of the candlestick-pattern kernel (TA-Lib's CDL* functions, default settings).
#
# One ``candles_step`` consumes a closed bar and writes N_CANDLE_PATTERNS ints, in the
# order of ``l2fast.technical.indicators.CANDLESTICK_PATTERNS`` (the CDL_* indices below), each
# equal to TA-Lib's batch output for that bar: 0 (no pattern, or still inside that
# pattern's lookback), +-100, +-80 (engulfing/harami with one matching body end).
#
# Everything lives inline in the struct (ring of the last CANDLE_RING bars plus every
# pattern's own running totals), so there is nothing to free and the state before a
# step is restored by a plain struct copy (``update_last``).

cdef enum:
    # Bars kept: the oldest bar any pattern reads is 12 back (3BLACKCROWS' trailing
    # total), and a power of two makes the slot a mask.
    CANDLE_RING = 16
    # Running totals over all patterns: each pattern owns its own, initialised and
    # rolled exactly where TA-Lib does, so borderline comparisons round the same way.
    N_CANDLE_TOTALS = 45

# Output indices (``out[CDL_HAMMER]`` ...), also the order of CANDLESTICK_PATTERNS, which
# names each (CDL_HAMMER: "CDLHAMMER", TA-Lib's name; tests/test_codes.py checks them).
# Anonymous (Cython refuses a named enum as an index); cpdef, so that the test sees them.
cpdef enum:
    CDL_DOJI = 0
    CDL_DOJISTAR = 1
    CDL_DRAGONFLYDOJI = 2
    CDL_GRAVESTONEDOJI = 3
    CDL_LONGLEGGEDDOJI = 4
    CDL_HAMMER = 5
    CDL_HANGINGMAN = 6
    CDL_INVERTEDHAMMER = 7
    CDL_SHOOTINGSTAR = 8
    CDL_ENGULFING = 9
    CDL_HARAMI = 10
    CDL_HARAMICROSS = 11
    CDL_PIERCING = 12
    CDL_DARKCLOUDCOVER = 13
    CDL_MORNINGSTAR = 14
    CDL_EVENINGSTAR = 15
    CDL_3WHITESOLDIERS = 16
    CDL_3BLACKCROWS = 17
    CDL_MARUBOZU = 18
    CDL_SPINNINGTOP = 19

cdef enum:
    N_CANDLE_PATTERNS = CDL_SPINNINGTOP + 1

cdef struct CandleState:
    # Ring of recent bars; bar number t sits in slot t & (CANDLE_RING - 1).
    double o[CANDLE_RING]
    double h[CANDLE_RING]
    double l[CANDLE_RING]
    double c[CANDLE_RING]
    double rb[CANDLE_RING]   # TA_REALBODY of each bar
    double hl[CANDLE_RING]   # TA_HIGHLOWRANGE of each bar
    double tot[N_CANDLE_TOTALS]
    long long n           # bars pushed since init

cdef void candles_init(CandleState* s) noexcept nogil
# Consume one bar and write N_CANDLE_PATTERNS outputs to ``out``.
cdef void candles_step(CandleState* s, double o, double h, double l, double c, int* out) noexcept nogil
# Bars needed before every pattern has left its lookback (the largest TA-Lib lookback + 1).
cdef long long candles_warmup() noexcept nogil
