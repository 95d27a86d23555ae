# Contract of the support/resistance kernel (swing pivots, level table, breakouts,
# double tops/bottoms, ranges).
#
# Same conventions as _averages.pxd: plain C structs, ``x_init``/``x_free``/``x_step``,
# no allocation per step, and the state before a step is restored by a struct copy.
# Everything a step rewrites lives either in fixed-size arrays inside the struct (the
# level table, the pivot histories) or in a heap slot the pre-step state never reads
# (ring spare slots, the idle half of the double-buffered block extremes).

from l2fast.technical._averages cimport ExtremeState, Window

cdef enum:
    LEVELS_CAP = 32       # largest accepted max_levels (the table is copied on every undo save)
    PIVOT_HIST = 16       # pivots of each kind kept for double top/bottom matching

# ------------------------------------------------------------- support/resistance

cdef struct Level:
    double price          # touch-weighted mean of the pivots merged into it
    double strength       # +1 per touch, times ``decay`` per bar
    long long touches
    long long id          # creation order: the tie-breaker, so table order never matters

cdef struct PivotRec:
    long long bar         # bar index of the pivot (0 = first bar since init/reset)
    double price
    # Highs: lowest pivot low after it; lows: highest pivot high after it (NaN if none yet).
    double between

cdef struct LevelsState:
    # parameters
    Py_ssize_t pivot_bars
    Py_ssize_t max_levels
    Py_ssize_t volume_window
    Py_ssize_t min_separation
    Py_ssize_t range_window
    double merge_tol
    double decay          # per-bar strength factor, 0.5 ** (1 / half_life)
    double min_strength
    double volume_mult
    double min_depth
    double range_pct
    # windows
    ExtremeState piv_hi   # max high of the last pivot_bars bars
    ExtremeState piv_lo   # min low of the last pivot_bars bars
    Window piv_hi_hist    # past piv_hi outputs (pivot_bars + 2), for the left side
    Window piv_lo_hist
    ExtremeState range_hi
    ExtremeState range_lo
    Window vol            # previous volume_window volumes
    double vol_sum
    double prev_close
    long long n           # bars consumed
    long long next_id
    # level table: entries [0, n_levels) are live, in no particular order
    Level levels[LEVELS_CAP]
    int n_levels
    # pivot histories: rings of the last PIVOT_HIST pivots of each kind
    PivotRec highs[PIVOT_HIST]
    PivotRec lows[PIVOT_HIST]
    int highs_head        # slot of the next write
    int n_highs
    int lows_head
    int n_lows

# Everything one bar produces. Prices are NaN when absent; flags are 0/1.
cdef struct LevelsOut:
    double support              # nearest live level <= close
    double support_strength
    double support_touches
    double support_dist         # (close - support) / close
    double resistance           # nearest live level > close
    double resistance_strength
    double resistance_touches
    double resistance_dist      # (resistance - close) / close
    int breakout                # +1 close crossed up through a level, -1 down, 0 none
    double breakout_level
    double pivot_high           # price of the pivot high confirmed on this bar (bar t - pivot_bars)
    double pivot_low
    int double_top
    double top_neckline         # lowest pivot low between the two tops
    int double_bottom
    double bottom_neckline      # highest pivot high between the two bottoms
    int in_range
    double range_high           # highest high / lowest low of the last range_window bars
    double range_low
    int n_levels

# Parameters are validated by the caller (see SupportResistance); half_life is in bars.
cdef int levels_init(LevelsState* s, Py_ssize_t pivot_bars, double merge_tol, double half_life,
                     double min_strength, Py_ssize_t max_levels, double volume_mult,
                     Py_ssize_t volume_window, Py_ssize_t min_separation, double min_depth,
                     Py_ssize_t range_window, double range_pct) except -1
cdef void levels_reset(LevelsState* s) noexcept nogil
cdef void levels_free(LevelsState* s) noexcept nogil
# One closed bar (finite, 0 < low <= close <= high, volume >= 0), O(1) amortised.
cdef void levels_step(LevelsState* s, double h, double l, double c, double v,
                      LevelsOut* out) noexcept nogil
