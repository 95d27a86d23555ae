# Contract of the bar guard (validation, gap counting) and of the timeframe aggregator.
#
# A bar is (ts, open, high, low, close, volume) with ts the bar's OPEN time in epoch ms
# UTC, on the minute grid. Both structs own no buffer, so (as for every l2fast kernel)
# the state before a step is restored by a plain struct copy and nothing needs freeing.
#
# Per 1-minute bar the caller does, in this order:
#     bar_check(&guard, ts, o, h, l, c, v)      # raises InvalidBarError, changes nothing
#     bar_commit(&guard, ts)                    # counts the gap before ts, if any
#     k = tf_step(&agg, ts, o, h, l, c, v)      # per timeframe; agg.closed[0 .. k-1]
# The aggregator kernels trust their input: feed them only bars that passed bar_check.

cdef enum:
    MINUTE_MS = 60000

# The rule a bar breaks (BAR_OK when it breaks none).
cdef enum BarFault:
    BAR_OK = 0
    BAR_TS_NEGATIVE
    BAR_TS_OFF_GRID             # ts % 60000 != 0
    BAR_TS_DUPLICATE            # ts == previous ts
    BAR_TS_OUT_OF_ORDER         # ts < previous ts
    BAR_OPEN_NONFINITE
    BAR_HIGH_NONFINITE
    BAR_LOW_NONFINITE
    BAR_CLOSE_NONFINITE
    BAR_OPEN_NONPOSITIVE
    BAR_HIGH_NONPOSITIVE
    BAR_LOW_NONPOSITIVE
    BAR_CLOSE_NONPOSITIVE
    BAR_VOLUME_NONFINITE
    BAR_VOLUME_NEGATIVE
    BAR_HIGH_BELOW_BODY         # high < max(open, close)
    BAR_LOW_ABOVE_BODY          # low > min(open, close)

cdef struct BarGuard:
    bint has_last               # a bar has been committed
    long long last_ts           # open time of the last committed bar (valid if has_last)
    long long gaps              # number of gaps (missing runs) seen between bars
    long long missing           # total missing 1-minute bars inside those gaps

cdef void bar_guard_init(BarGuard* g) noexcept nogil
# The first rule the bar breaks against the guard's state, or BAR_OK. Pure.
cdef BarFault bar_fault(const BarGuard* g, long long ts, double o, double h, double l,
                        double c, double v) noexcept nogil
# Raises InvalidBarError (naming field, value and rule) if the bar is invalid, else
# returns 0. Never changes the guard.
cdef int bar_check(const BarGuard* g, long long ts, double o, double h, double l,
                   double c, double v) except -1
# Accepts a bar that passed bar_check; returns the number of minutes missing before it.
cdef long long bar_commit(BarGuard* g, long long ts) noexcept nogil

cdef struct OHLCV:
    long long ts                # bucket start (bar open time), epoch ms UTC
    double open
    double high
    double low
    double close
    double volume               # sequential sum of the 1-minute volumes, in bar order

cdef struct TFAgg:
    long long tf_ms             # timeframe in ms; a multiple of 60000 dividing one day
    bint has_forming            # ``forming`` holds an incomplete bucket
    OHLCV forming               # the bucket being built (valid if has_forming)
    OHLCV closed[2]             # bars closed by the last tf_step, oldest first

cdef void tf_init(TFAgg* a, long long tf_ms) noexcept nogil
# Adds one validated 1-minute bar; buckets start at ts - ts % tf_ms (UTC-aligned).
# Returns how many bars it closed, readable in a.closed[0 .. k-1] until the next step:
#   * a forming bucket older than ts's bucket (its last minute was missing) closes first;
#   * ts's bucket closes on the same step when ts is its last minute.
# Empty buckets (inside a gap) produce no bar.
cdef int tf_step(TFAgg* a, long long ts, double o, double h, double l, double c,
                 double v) noexcept nogil
